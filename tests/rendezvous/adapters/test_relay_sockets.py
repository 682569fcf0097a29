"""The standalone TURN relay's asyncio adapter on loopback: relay sockets opened and closed
on the server's demand, ChannelData both ways through real sockets."""

from __future__ import annotations

import asyncio
import errno
import socket
import struct
import time
from pathlib import Path

import pytest

from iokit.udp_sockets import UdpSockets
from rendezvous.adapters.relay_sockets import TurnRelay
from rendezvous.adapters.server import RendezvousServer
from rendezvous.binding import StunServiceConfig
from rendezvous.turn_auth import rest_credentials
from rendezvous.turn_config import TurnConfig
from stunproto import AttrType, MessageClass, Method, StunMessage, long_term_key
from stunproto.message import new_transaction_id
from tests.rendezvous.test_turn_server import REALM, SECRET, Address, _code, _relayed


def _ephemeral_ports() -> range:
    """The kernel's ephemeral port range (Linux's default where it cannot be read)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    except (OSError, ValueError):
        return range(32768, 61000)
    return range(int(low), int(high) + 1)


async def test_turn_relay_on_loopback_relays_through_a_real_socket() -> None:
    config = TurnConfig(
        realm=REALM,
        shared_secret=SECRET,
        relay_ip="127.0.0.1",
        # The peer socket below is on this host: the server relays to its own IP only at
        # relay ports (no loops through its other services), so the range must hold every
        # ephemeral port the peer may get (a port past the range once made this test fail
        # now and then).
        relay_ports=_ephemeral_ports(),
        denied_peers=(),  # the peer socket is on loopback
    )
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    loop = asyncio.get_running_loop()
    async with TurnRelay(config, listen=("127.0.0.1", 0)) as relay:
        assert relay.local_address is not None
        transport, inbox = await _client_socket(relay.local_address)
        try:
            username, password = rest_credentials(SECRET, "alice", int(time.time()) + 600)
            key = long_term_key(username, REALM, password)

            async def call(method: int, *attrs: tuple[int, object]) -> StunMessage:
                nonce = "none"
                for _ in range(2):
                    creds = ((AttrType.USERNAME, username), (AttrType.REALM, REALM))
                    message = StunMessage(
                        method,
                        MessageClass.REQUEST,
                        new_transaction_id(),
                        (*attrs, *creds, (AttrType.NONCE, nonce)),
                    )
                    transport.sendto(message.encode(integrity_key=key))
                    answer = StunMessage.parse(await asyncio.wait_for(inbox.get(), 5))
                    if _code(answer) != 438:
                        return answer
                    nonce = answer.get(AttrType.NONCE)
                return answer

            relayed = _relayed(await call(Method.ALLOCATE, (AttrType.REQUESTED_TRANSPORT, 17)))
            peer_address = peer.getsockname()
            await call(
                Method.CHANNEL_BIND,
                (AttrType.CHANNEL_NUMBER, 0x4000),
                (AttrType.XOR_PEER_ADDRESS, peer_address),
            )
            transport.sendto(struct.pack("!HH", 0x4000, 4) + b"ping")
            data, source = await asyncio.wait_for(loop.sock_recvfrom(peer, 100), 5)
            assert (data, source) == (b"ping", relayed)
            await loop.sock_sendto(peer, b"pong", relayed)
            echoed = await asyncio.wait_for(inbox.get(), 5)
            assert echoed == struct.pack("!HH", 0x4000, 4) + b"pong"
            deleted = await call(Method.REFRESH, (AttrType.LIFETIME, 0))
            assert deleted.get(AttrType.LIFETIME) == 0
            assert relay.server.allocation_count == 0
            # The relay socket is closed: the port can be bound again.
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            probe.bind(relayed)
            probe.close()
        finally:
            transport.close()
    peer.close()


def _no_more_descriptors(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on every socket open fails as under a low open-file limit."""

    def open_fails(*_: object, **__: object) -> Address:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(UdpSockets, "open", open_fails)


async def _allocate(server: Address) -> StunMessage:
    """An Allocate by a client on loopback, after the 401 that brings the nonce."""
    transport, inbox = await _client_socket(server)
    try:
        username, password = rest_credentials(SECRET, "alice", int(time.time()) + 600)
        key = long_term_key(username, REALM, password)
        nonce = "none"
        for _ in range(2):
            attrs = (
                (AttrType.REQUESTED_TRANSPORT, 17),
                (AttrType.USERNAME, username),
                (AttrType.REALM, REALM),
                (AttrType.NONCE, nonce),
            )
            message = StunMessage(
                Method.ALLOCATE, MessageClass.REQUEST, new_transaction_id(), attrs
            )
            transport.sendto(message.encode(integrity_key=key))
            answer = StunMessage.parse(await asyncio.wait_for(inbox.get(), 5))
            if _code(answer) not in (401, 438):
                assert answer.check_integrity(key)
                return answer
            nonce = answer.get(AttrType.NONCE)
        return answer
    finally:
        transport.close()


def _loopback_turn() -> TurnConfig:
    return TurnConfig(realm=REALM, shared_secret=SECRET, relay_ip="127.0.0.1", denied_peers=())


async def test_a_relay_socket_that_cannot_be_bound_gets_the_client_508_not_allocated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with TurnRelay(_loopback_turn(), listen=("127.0.0.1", 0)) as relay:
        assert relay.local_address is not None
        _no_more_descriptors(monkeypatch)
        answer = await _allocate(relay.local_address)
        assert answer.message_class is MessageClass.ERROR and _code(answer) == 508
        assert answer.get(AttrType.XOR_RELAYED_ADDRESS) is None
        assert relay.server.allocation_count == 0
        monkeypatch.undo()  # descriptors again: the next Allocate is served
        assert (await _allocate(relay.local_address)).message_class is MessageClass.SUCCESS


async def test_the_rendezvous_embedded_relay_answers_508_when_out_of_descriptors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = RendezvousServer(StunServiceConfig(primary=("127.0.0.1", 0)), turn=_loopback_turn())
    async with server:
        assert server.udp is not None
        address = next(iter(server.udp.bound.values()))
        _no_more_descriptors(monkeypatch)
        answer = await _allocate(address)
        assert answer.message_class is MessageClass.ERROR and _code(answer) == 508
        assert server.core.turn is not None and server.core.turn.allocation_count == 0
        monkeypatch.undo()
        answer = await _allocate(address)
        assert answer.message_class is MessageClass.SUCCESS
        assert _relayed(answer)[0] == "127.0.0.1"


class _Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.queue.put_nowait(data)


async def _client_socket(
    remote: Address,
) -> tuple[asyncio.DatagramTransport, asyncio.Queue[bytes]]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(_Inbox, remote_addr=remote)
    return transport, protocol.queue
