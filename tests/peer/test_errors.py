"""One error hierarchy for the peer package (peer.errors): whose fault, and one class to
catch."""

from __future__ import annotations

import pytest

from peer.channel import ChannelError
from peer.errors import LocalProtocolError, PeerError, RemoteProtocolError
from peer.identity import IdentityError
from peer.known_peers import KeyChanged, KnownPeersError
from peer.transport.errors import TransportDecodeError
from peer.turn_client import TurnClient, TurnClientConfig


@pytest.mark.parametrize("error", [ChannelError, TransportDecodeError])
def test_what_the_other_side_breaks_is_remote(error: type[Exception]) -> None:
    assert issubclass(error, RemoteProtocolError) and issubclass(error, ValueError)


@pytest.mark.parametrize("error", [IdentityError, KnownPeersError, KeyChanged])
def test_local_files_and_pins_are_peer_errors(error: type[Exception]) -> None:
    assert issubclass(error, PeerError)
    assert not issubclass(error, LocalProtocolError | RemoteProtocolError)


def test_turn_misuse_is_local() -> None:
    client = TurnClient(TurnClientConfig(server=("192.0.2.1", 3478), username="u", password="p"))
    with pytest.raises(LocalProtocolError):
        client.create_permission("203.0.113.5", 0.0)  # allocate first
    client.allocate(0.0)
    with pytest.raises(LocalProtocolError):
        client.allocate(0.0)  # already allocating
    with pytest.raises(LocalProtocolError):
        TurnClientConfig(server=("192.0.2.1", 3478), username="u", password="p", lifetime=0)
