"""coturn's turnutils_uclient against our TURN relay on loopback.

uclient allocates on 127.0.0.1, asks for permissions/channels toward turnutils_peer (an echo
server on 127.0.0.2) and counts what comes back; it authenticates with the TURN REST API
secret (``-W``), deriving the same passwords our server expects. Findings (coturn 4.6.1):

* Its Allocate carries EVEN-PORT even with ``-c``; without ``-c`` it sets the R bit and
  allocates the RTCP relay with the RESERVATION-TOKEN it got.
* It picks channel numbers from RFC 5766's 0x4000-0x7FFF, not RFC 8656's 0x4000-0x4FFF.
* Its summary line reads ``start_mclient: tot_send_msgs=N, tot_recv_msgs=M`` then
  ``Total lost packets L (...)``; exit status 0 on success.
"""

from __future__ import annotations

import asyncio
import random
import re
import shutil
import socket
import time
from collections.abc import AsyncIterator

import pytest

from rendezvous.adapters.relay_sockets import TurnRelay
from rendezvous.turn_config import TurnConfig

SERVER_IP, PEER_IP = "127.0.0.1", "127.0.0.2"
SECRET = "uclient-secret"
pytestmark = pytest.mark.skipif(
    shutil.which("turnutils_uclient") is None or shutil.which("turnutils_peer") is None,
    reason="coturn's turnutils are not installed",
)


def _free_udp_port(ip: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((ip, 0))
        return int(sock.getsockname()[1])


def _echoes(address: tuple[str, int], timeout: float = 0.2) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(b"ready?", address)
            return sock.recvfrom(2048)[0] == b"ready?"
        except OSError:
            return False


@pytest.fixture
async def echo_peer() -> AsyncIterator[int]:
    port = _free_udp_port(PEER_IP)
    process = await asyncio.create_subprocess_exec(
        "turnutils_peer",
        "-L",
        PEER_IP,
        "-p",
        str(port),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not await asyncio.to_thread(_echoes, (PEER_IP, port)):
            assert process.returncode is None, "turnutils_peer exited"
            assert time.monotonic() < deadline, "turnutils_peer did not start echoing"
        yield port
    finally:
        if process.returncode is None:
            process.kill()
        await asyncio.wait_for(process.wait(), 10)


async def _uclient(args: list[str], timeout: float = 60) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        "turnutils_uclient",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout)
    finally:
        if process.returncode is None:
            process.kill()
            await asyncio.wait_for(process.wait(), 10)
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace")


def _summary(output: str) -> tuple[int, int, int]:
    """(messages sent, messages received, lost packets) from uclient's final report."""
    totals = re.findall(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\s*$", output, re.M)
    lost = re.findall(r"Total lost packets (\d+)", output)
    assert totals and lost, output
    sent, received = totals[-1]
    return int(sent), int(received), int(lost[-1])


@pytest.mark.parametrize(
    ("flags", "clients"),
    [
        pytest.param([], 1, id="channels-with-rtcp-reservation"),
        pytest.param(["-c", "-s"], 1, id="send-indications"),
        pytest.param(["-c"], 3, id="three-clients"),
    ],
)
async def test_uclient_relays_through_our_server(
    echo_peer: int, flags: list[str], clients: int
) -> None:
    first = random.randrange(20000, 60000, 2)
    config = TurnConfig(
        realm="holepunch.test",
        shared_secret=SECRET.encode(),
        relay_ip=SERVER_IP,
        relay_ports=range(first, first + 400),
        denied_peers=(),  # the echo peer is on loopback
    )
    messages = 25
    async with TurnRelay(config, listen=(SERVER_IP, 0)) as relay:
        assert relay.local_address is not None
        argv = [
            *flags,
            "-n",
            str(messages),
            "-m",
            str(clients),
            "-e",
            PEER_IP,
            "-r",
            str(echo_peer),
            "-p",
            str(relay.local_address[1]),
            "-u",
            "alice",
            "-W",
            SECRET,
            SERVER_IP,
        ]
        rc, output = await _uclient(argv)
    assert rc == 0, output
    sent, received, lost = _summary(output)
    # Without -c each client runs an RTP and an RTCP session, each sending ``messages``.
    expected = messages * clients * (1 if "-c" in flags else 2)
    assert (sent, received, lost) == (expected, expected, 0), output
    assert relay.server.dropped == 0


async def test_uclient_with_the_wrong_secret_is_refused(echo_peer: int) -> None:
    config = TurnConfig(
        realm="holepunch.test",
        shared_secret=SECRET.encode(),
        relay_ip=SERVER_IP,
        relay_ports=range(40000, 40010),
    )
    async with TurnRelay(config, listen=(SERVER_IP, 0)) as relay:
        assert relay.local_address is not None
        argv = ["-c", "-n", "5", "-e", PEER_IP, "-r", str(echo_peer)]
        argv += ["-p", str(relay.local_address[1]), "-u", "alice", "-W", "not-the-secret"]
        rc, output = await _uclient([*argv, SERVER_IP])
        assert relay.server.allocation_count == 0
    assert rc != 0, output
    assert "Cannot complete Allocation" in output, output
