"""The punching socket shares one UDP port between STUN and peer traffic."""

from __future__ import annotations

import asyncio

from natprobe import NatType, ProbeConfig, probe
from peer.adapters.punch_socket import PunchSocket
from peer.cli import main
from rendezvous.adapters.server import RendezvousServer
from rendezvous.binding import StunServiceConfig
from tests.support.loopback import free_port_pair


async def test_probe_on_punch_socket_keeps_peer_traffic_apart() -> None:
    port = free_port_pair()
    config = StunServiceConfig(primary=("127.0.0.1", port), alternate_ip="127.0.0.2")
    async with RendezvousServer(config):
        punch = await PunchSocket.open(("127.0.0.1", 0))
        received: list[bytes] = []
        punch.on_data = lambda data, source: received.append(data)
        other = await PunchSocket.open(("127.0.0.1", 0))
        try:
            other.sendto(b"punch!", punch.local_address)
            report = await asyncio.wait_for(
                probe(
                    ("127.0.0.1", port),
                    config=ProbeConfig(local_ip="127.0.0.1", initial_rto=0.05),
                    endpoint=punch.stun,
                ),
                10,
            )
        finally:
            other.close()
            punch.close()
    assert report.nat_type is NatType.OPEN_INTERNET
    assert report.local_address == punch.local_address
    assert received == [b"punch!"]


def test_cli_rejects_an_unresolvable_server(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["nat", "no-such-host.invalid"]) == 2
    assert "cannot resolve" in capsys.readouterr().err
