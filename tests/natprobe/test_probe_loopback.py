"""natprobe against our server on loopback (no NAT in between: the verdicts are known)."""

from __future__ import annotations

import asyncio

import pytest

from iokit.stun_endpoint import StunEndpoint
from natprobe import NatType, ProbeConfig, probe
from natprobe.report import Behaviour
from rendezvous.adapters.server import RendezvousServer
from rendezvous.binding import StunServiceConfig
from stunproto import AttrType, MessageClass, StunMessage
from tests.support.loopback import free_port_pair

FAST = ProbeConfig(initial_rto=0.05, local_ip="127.0.0.1")


@pytest.fixture
async def server() -> tuple[str, int]:  # type: ignore[misc]
    port = free_port_pair()
    config = StunServiceConfig(primary=("127.0.0.1", port), alternate_ip="127.0.0.2")
    async with RendezvousServer(config):
        yield ("127.0.0.1", port)


async def test_open_internet_on_loopback(server: tuple[str, int]) -> None:
    report = await asyncio.wait_for(probe(server, config=FAST), 10)
    assert report.nat_type is NatType.OPEN_INTERNET
    assert report.mapping is Behaviour.ENDPOINT_INDEPENDENT
    assert report.filtering is Behaviour.ENDPOINT_INDEPENDENT
    assert report.public_address == report.local_address
    assert report.hairpin is None and "hairpin" in report.skipped
    assert report.binding_lifetime is None


async def test_binding_lifetime_without_nat_reaches_the_maximum(server: tuple[str, int]) -> None:
    config = ProbeConfig(initial_rto=0.05, local_ip="127.0.0.1", lifetime_max=0.3)
    report = await asyncio.wait_for(probe(server, config=config), 10)
    assert report.binding_lifetime == 0.3
    assert report.binding_lifetime_is_lower_bound


async def test_server_without_alternate_says_what_could_not_run() -> None:
    port = free_port_pair()
    async with RendezvousServer(StunServiceConfig(primary=("127.0.0.1", port))):
        report = await asyncio.wait_for(probe(("127.0.0.1", port), config=FAST), 10)
    assert report.public_address == report.local_address
    assert report.filtering is None
    assert "OTHER-ADDRESS" in report.skipped["filtering"]
    assert report.nat_type is NatType.UNKNOWN  # (open internet or a firewall: filtering tells)
    # No NAT, so nothing is mapped: endpoint-independent, and both fields say so.
    assert report.mapping is Behaviour.ENDPOINT_INDEPENDENT
    assert report.mapping_endpoint_independent is True
    assert "mapping" not in report.skipped
    data = report.to_json()
    assert (data["mapping"], data["mapping_endpoint_independent"]) == ("endpoint-independent", True)


async def test_two_plain_servers_still_give_the_mapping() -> None:
    first, second = free_port_pair(), free_port_pair()
    async with (
        RendezvousServer(StunServiceConfig(primary=("127.0.0.1", first))),
        RendezvousServer(StunServiceConfig(primary=("127.0.0.2", second))),
    ):
        config = ProbeConfig(
            initial_rto=0.05, local_ip="127.0.0.1", second_server=("127.0.0.2", second)
        )
        report = await asyncio.wait_for(probe(("127.0.0.1", first), config=config), 10)
    assert report.mapping_endpoint_independent is True
    assert "mapping" not in report.skipped
    assert "filtering" in report.skipped


async def test_no_udp_answer_from_a_server_that_takes_tcp_means_udp_blocked() -> None:
    # A TCP listener and nothing on UDP: the server is there, UDP to it is not getting through.
    tcp = await asyncio.start_server(lambda reader, writer: writer.close(), "127.0.0.1", 0)
    async with tcp:
        port = tcp.sockets[0].getsockname()[1]
        config = ProbeConfig(initial_rto=0.01, answered_sends=3, local_ip="127.0.0.1")
        report = await asyncio.wait_for(probe(("127.0.0.1", port), config=config), 10)
    assert report.nat_type is NatType.UDP_BLOCKED
    assert report.server_unreachable is None
    assert report.public_address is None
    assert "TCP: it connects" in report.skipped["all"]


async def test_no_answer_over_udp_or_tcp_is_no_server_not_udp_blocked() -> None:
    port = free_port_pair()  # nothing listens there
    config = ProbeConfig(initial_rto=0.01, answered_sends=3, local_ip="127.0.0.1")
    report = await asyncio.wait_for(probe(("127.0.0.1", port), config=config), 10)
    assert report.nat_type is NatType.UNKNOWN
    assert report.server_unreachable is not None
    assert report.server_unreachable.startswith("UDP: nothing within ")
    assert report.server_unreachable.endswith("; TCP: connection refused")
    assert report.to_json()["server_unreachable"] == report.server_unreachable


class _AppProtocol(asyncio.DatagramProtocol):
    """A peer's own socket: STUN goes to the endpoint, everything else to the app."""

    def __init__(self) -> None:
        self.endpoint: StunEndpoint | None = None
        self.app_data: list[bytes] = []

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        assert self.endpoint is not None
        if not self.endpoint.datagram_received(data, (str(addr[0]), int(addr[1]))):
            self.app_data.append(data)


async def test_probe_runs_on_the_callers_socket(server: tuple[str, int]) -> None:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        _AppProtocol, local_addr=("127.0.0.1", 0)
    )
    try:
        endpoint = StunEndpoint(transport)
        protocol.endpoint = endpoint
        port = transport.get_extra_info("sockname")[1]
        # Application traffic arriving mid-probe must reach the application.
        sender, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, remote_addr=("127.0.0.1", port)
        )
        sender.sendto(b"hello peer")
        report = await asyncio.wait_for(probe(server, config=FAST, endpoint=endpoint), 10)
        sender.close()
        assert report.local_address == ("127.0.0.1", port)
        assert report.public_address == ("127.0.0.1", port)
        assert protocol.app_data == [b"hello peer"]
        assert not transport.is_closing()  # the probe does not close a socket it was lent
    finally:
        transport.close()


class _IgnoresChangeRequest(asyncio.DatagramProtocol):
    """A broken server: claims an alternate address but answers everything itself."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        request = StunMessage.parse(data)
        reply = request.reply(
            MessageClass.SUCCESS,
            (AttrType.XOR_MAPPED_ADDRESS, (str(addr[0]), int(addr[1]))),
            (AttrType.OTHER_ADDRESS, ("127.0.0.2", 9)),
        )
        self.transport.sendto(reply.encode(), addr)  # type: ignore[attr-defined]


async def test_a_server_that_ignores_change_request_is_not_taken_for_open_filtering() -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        _IgnoresChangeRequest, local_addr=("127.0.0.1", 0)
    )
    try:
        port = transport.get_extra_info("sockname")[1]
        config = ProbeConfig(initial_rto=0.02, local_ip="127.0.0.1", answered_sends=2)
        report = await asyncio.wait_for(probe(("127.0.0.1", port), config=config), 10)
    finally:
        transport.close()
    assert report.filtering is None
    assert "not from the alternate address" in report.skipped["filtering"]
    assert report.nat_type is NatType.UNKNOWN
