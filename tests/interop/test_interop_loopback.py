"""Independent implementations against ours on loopback (no NAT: every verdict is "open").

pystun3 and Debian's ``stun`` speak RFC 3489 (16-byte ids, MAPPED/CHANGED-ADDRESS),
turnutils_natdiscovery speaks RFC 5780; natprobe in turn runs against coturn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from natprobe import NatType, ProbeConfig, probe
from natprobe.report import Behaviour
from tests.interop.refclients import (
    ENDPOINT_INDEPENDENT,
    Coturn,
    run_natdiscovery,
    run_pystun3,
    run_stun_client,
)
from tests.support.loopback import free_port_pair
from tests.support.processes import rendezvous_process

PRIMARY, ALT = "127.0.0.1", "127.0.0.2"


@pytest.fixture(scope="module")
def our_server() -> Iterator[int]:
    port = free_port_pair()
    with rendezvous_process(["--listen", f"{PRIMARY}:{port}", "--alt-ip", ALT]):
        yield port


def test_reference_clients_against_our_server(our_server: int) -> None:
    port = our_server
    with ThreadPoolExecutor(3) as pool:
        pystun3 = pool.submit(run_pystun3, [], PRIMARY, port, source_ip=PRIMARY, timeout=60)
        stun = pool.submit(run_stun_client, [], PRIMARY, port, timeout=60)
        natdiscovery = pool.submit(run_natdiscovery, [], PRIMARY, port, local_ip=PRIMARY)
        verdicts = [pystun3.result(90), stun.result(90), natdiscovery.result(150)]
    for verdict in verdicts:
        assert verdict.nat_type == "open-internet", verdict.raw
        assert verdict.public_address is not None, verdict.raw
        assert verdict.public_address.startswith(f"{PRIMARY}:"), verdict.raw
    natdiscovery_verdict = verdicts[2]
    assert natdiscovery_verdict.mapping == ENDPOINT_INDEPENDENT, natdiscovery_verdict.raw
    assert natdiscovery_verdict.filtering == ENDPOINT_INDEPENDENT, natdiscovery_verdict.raw


def test_natprobe_against_coturn() -> None:
    port = free_port_pair()
    with Coturn(PRIMARY, ALT, port=port):
        config = ProbeConfig(local_ip=PRIMARY, initial_rto=0.05)
        report = asyncio.run(asyncio.wait_for(probe((PRIMARY, port), config=config), 30))
    assert report.nat_type is NatType.OPEN_INTERNET
    assert report.mapping is Behaviour.ENDPOINT_INDEPENDENT
    assert report.filtering is Behaviour.ENDPOINT_INDEPENDENT
    assert report.public_address == report.local_address
