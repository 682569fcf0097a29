"""natprobe behind every kind of real NAT, beside three independent implementations.

For each NAT kind the lab builds, natprobe must give the right verdict, and it must agree
with pystun3's classic type, Debian's ``stun`` and coturn's turnutils_natdiscovery
(mapping and filtering) run from the same host against the same server. natprobe must
also get the same verdict against coturn as against our own server.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from natlab import Lab, NatKind, NatSpec
from tests.interop.refclients import (
    Coturn,
    RefVerdict,
    run_natdiscovery,
    run_pystun3,
    run_stun_client,
)
from tests.support.processes import rendezvous_process

pytestmark = pytest.mark.lab

SERVER, ALT = "203.0.113.10", "203.0.113.11"
OURS, COTURN = 3478, 3490

EI, AD, APD = "endpoint-independent", "address-dependent", "address-and-port-dependent"

# kind -> (nat_type, mapping, filtering) that every tool must report
EXPECTED: dict[NatKind, tuple[str, str | None, str | None]] = {
    NatKind.OPEN: ("open-internet", EI, EI),
    NatKind.FULL_CONE: ("full-cone", EI, EI),
    NatKind.RESTRICTED_CONE: ("restricted-cone", EI, AD),
    NatKind.PORT_RESTRICTED_CONE: ("port-restricted-cone", EI, APD),
    NatKind.SYMMETRIC: ("symmetric", APD, APD),
    NatKind.UDP_BLOCKED: ("udp-blocked", None, None),
}
# Hairpinning on for some kinds, off for others, so both answers are exercised.
HAIRPIN = {NatKind.FULL_CONE: True, NatKind.PORT_RESTRICTED_CONE: True, NatKind.SYMMETRIC: True}


def natprobe(lab: Lab, host: str, port: int, *extra: str, timeout: float = 90) -> dict[str, Any]:
    result = lab.hosts[host].run(
        [sys.executable, "-m", "natprobe", f"{SERVER}:{port}", "--json", *extra],
        timeout=timeout,
    )
    report: dict[str, Any] = json.loads(result.stdout)
    return report


@pytest.mark.parametrize("kind", list(EXPECTED), ids=str)
def test_verdicts_agree_behind_each_nat(lab_factory: Callable[..., Lab], kind: NatKind) -> None:
    hairpin = HAIRPIN.get(kind, False)
    lab = lab_factory(
        Lab.two_nats,
        a=NatSpec(kind=kind, hairpin=hairpin),
        b=NatSpec(kind=NatKind.OPEN),
    )
    host = lab.hosts["a"]
    prefix = host.exec_prefix
    server_prefix = lab.server.exec_prefix
    with (
        rendezvous_process(["--listen", f"{SERVER}:{OURS}", "--alt-ip", ALT], server_prefix),
        Coturn(SERVER, ALT, port=COTURN, prefix=server_prefix),
        ThreadPoolExecutor(5) as pool,
    ):
        ours = pool.submit(natprobe, lab, "a", OURS)
        against_coturn = pool.submit(natprobe, lab, "a", COTURN)
        pystun3 = pool.submit(run_pystun3, prefix, SERVER, OURS, source_ip=host.ip, timeout=60)
        stun = pool.submit(run_stun_client, prefix, SERVER, OURS, timeout=60)
        natdiscovery = pool.submit(run_natdiscovery, prefix, SERVER, OURS, local_ip=host.ip)
        report, coturn_report = ours.result(120), against_coturn.result(120)
        references: list[RefVerdict] = [
            pystun3.result(120),
            stun.result(120),
            natdiscovery.result(150),
        ]

    nat_type, mapping, filtering = EXPECTED[kind]
    assert report["nat_type"] == nat_type, report
    assert report["mapping"] == mapping, report
    assert report["filtering"] == filtering, report
    for key in ("nat_type", "mapping", "filtering", "hairpin"):
        assert coturn_report[key] == report[key], (key, coturn_report, report)
    if kind in (NatKind.OPEN, NatKind.UDP_BLOCKED):
        assert report["hairpin"] is None
    else:
        assert report["hairpin"] is hairpin, report
        public_ip = lab.routers["nat_a"].public_ip
        assert report["public_address"].startswith(f"{public_ip}:"), report
    if kind is NatKind.OPEN:
        assert report["public_address"] == report["local_address"]

    # The classic type: every reference tool agrees with natprobe.
    for verdict in references:
        assert verdict.nat_type == nat_type, verdict.raw
    # Mapping and filtering: coturn's natdiscovery measures both like RFC 5780 says.
    coturn_verdict = references[2]
    if kind is not NatKind.UDP_BLOCKED:
        assert coturn_verdict.mapping == mapping, coturn_verdict.raw
        assert coturn_verdict.filtering == filtering, coturn_verdict.raw


def test_binding_lifetime_is_measured(lab_factory: Callable[..., Lab]) -> None:
    spec = NatSpec(kind=NatKind.PORT_RESTRICTED_CONE, binding_timeout=2)
    lab = lab_factory(Lab.two_nats, a=spec, b=NatSpec(kind=NatKind.OPEN))
    with rendezvous_process(
        ["--listen", f"{SERVER}:{OURS}", "--alt-ip", ALT], lab.server.exec_prefix
    ):
        report = natprobe(lab, "a", OURS, "--lifetime", "6", "--no-hairpin")
    assert report["nat_type"] == "port-restricted-cone"
    assert report["binding_lifetime_is_lower_bound"] is False, report
    assert 1.5 <= report["binding_lifetime"] <= 2.5, report


def test_right_verdict_despite_loss(lab_factory: Callable[..., Lab]) -> None:
    # Address-dependent filtering is the case loss can fake most easily: one change test
    # must be answered, the other must not. 20% loss each way on the NAT.
    spec = NatSpec(kind=NatKind.RESTRICTED_CONE, loss=20)
    lab = lab_factory(Lab.two_nats, a=spec, b=NatSpec(kind=NatKind.OPEN))
    with rendezvous_process(
        ["--listen", f"{SERVER}:{OURS}", "--alt-ip", ALT], lab.server.exec_prefix
    ):
        reports = [natprobe(lab, "a", OURS, "--no-hairpin") for _ in range(3)]
    for report in reports:
        assert report["nat_type"] == "restricted-cone", report
        assert report["filtering"] == AD, report


def test_second_server_gives_mapping_without_rfc5780(lab_factory: Callable[..., Lab]) -> None:
    lab = lab_factory(Lab.two_nats, a=NatSpec(kind=NatKind.SYMMETRIC), b=NatSpec(kind=NatKind.OPEN))
    prefix = lab.server.exec_prefix
    with (
        rendezvous_process(["--listen", f"{SERVER}:{OURS}"], prefix),
        rendezvous_process(["--listen", f"{ALT}:{OURS}"], prefix),
    ):
        plain = natprobe(lab, "a", OURS)
        paired = natprobe(lab, "a", OURS, "--second-server", f"{ALT}:{OURS}")
    assert plain["mapping_endpoint_independent"] is None
    assert "OTHER-ADDRESS" in plain["skipped"]["mapping"]
    assert paired["mapping_endpoint_independent"] is False
    assert paired["nat_type"] == "symmetric"
    assert "filtering" in paired["skipped"]
