"""The agent's routing decisions (peer.agent): which socket each datagram leaves from, and
which arrivals reach the rendezvous client."""

from __future__ import annotations

import random

import pytest

from natprobe.report import NatType
from peer.agent import AgentConfig, PeerAgent
from peer.errors import LocalProtocolError
from peer.identity import Identity
from peer.rendezvous_client import LoginState, RendezvousClientConfig
from peer.routes import DIRECT, TCP, ExtraSocket
from rvproto.messages import ErrorCodes, RvAttr, parse_rv
from stunproto import AttrType, ErrorCode, MessageClass

SERVER = ("203.0.113.10", 3478)


def agent(*, relay_only: bool = False, over_tcp: bool = False) -> PeerAgent:
    identity = Identity.generate()
    config = AgentConfig(
        rendezvous=RendezvousClientConfig(
            server=SERVER,
            name="alice",
            public_key=identity.public_key,
            nat_type=NatType.PORT_RESTRICTED_CONE,
        ),
        relay_only=relay_only,
        over_tcp=over_tcp,
    )
    return PeerAgent(config, static=identity.x25519_private, rng=random.Random(1))


def challenge(request: bytes) -> bytes:
    """The server's first answer to a login: 401 with a challenge."""
    reply = parse_rv(request).reply(
        MessageClass.ERROR,
        (AttrType.ERROR_CODE, ErrorCode(ErrorCodes.UNAUTHORIZED, "challenge")),
        (RvAttr.CHALLENGE, bytes(24)),
        (RvAttr.SERVER_KEY, Identity.generate().x25519_public),
    )
    return reply.encode(fingerprint=True)


def test_the_rendezvous_is_reached_over_udp_by_default() -> None:
    peer = agent()
    peer.login(0.0)
    ((_, destination, via),) = peer.datagrams_to_send(0.0)
    assert destination == SERVER and via == DIRECT


def test_over_tcp_everything_for_the_rendezvous_takes_the_connection() -> None:
    peer = agent(relay_only=True, over_tcp=True)
    peer.login(0.0)
    ((request, destination, via),) = peer.datagrams_to_send(0.0)
    assert destination == SERVER and via == TCP
    assert peer.receive_datagram(challenge(request), SERVER, 0.01, TCP)
    assert peer.rendezvous.state is LoginState.HANDSHAKING
    assert [via for _, _, via in peer.datagrams_to_send(0.01)] == [TCP]


def test_the_rendezvous_is_not_heard_on_an_extra_socket() -> None:
    peer = agent()
    peer.login(0.0)
    ((request, _, _),) = peer.datagrams_to_send(0.0)
    assert not peer.receive_datagram(challenge(request), SERVER, 0.01, ExtraSocket(0))
    assert peer.rendezvous.state is LoginState.CHALLENGED
    assert peer.receive_datagram(challenge(request), SERVER, 0.01, DIRECT)
    assert peer.rendezvous.state is LoginState.HANDSHAKING


def test_tcp_without_the_relay_is_refused() -> None:
    with pytest.raises(LocalProtocolError):
        agent(over_tcp=True)  # over TCP, other peers are reachable only through the relay


def test_connecting_before_the_login_is_the_callers_mistake() -> None:
    with pytest.raises(LocalProtocolError):
        agent().connect("bob", 0.0)
