"""The rendezvous's key from the peer's side, on loopback: pinned at the first login, a
changed key refused in one line, ``--server-key`` checked before anything is sent."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest

from peer.adapters.peer import Peer, PeerConfig
from peer.cli import main
from peer.errors import PeerError
from peer.identity import Identity
from peer.known_peers import KnownPeers
from rendezvous.adapters.server import RendezvousServer
from rendezvous.binding import StunServiceConfig
from rendezvous.introductions import RendezvousConfig
from tests.support.loopback import free_port_pair

QUIET = PeerConfig(probe_nat=False, keepalive=0)
TIMEOUT = 10.0


def _server(address: tuple[str, int], key: bytes) -> RendezvousServer:
    return RendezvousServer(
        RendezvousConfig(stun=StunServiceConfig(primary=address), server_key=key)
    )


async def test_the_first_login_pins_the_server_and_a_new_key_is_refused(tmp_path: Path) -> None:
    address = ("127.0.0.1", free_port_pair())
    pins = tmp_path / "known_peers"
    identity = Identity.generate()
    async with _server(address, bytes(range(32))) as server:
        async with asyncio.timeout(TIMEOUT):
            async with Peer(
                address, identity=identity, name="alice", known_peers=pins, config=QUIET
            ):
                pass
        first = server.core.introductions.server_key
    assert KnownPeers(pins).server_key(f"127.0.0.1:{address[1]}") == first
    # The same address, another key (a server reinstalled, or someone in its place).
    async with _server(address, bytes(range(1, 33))):
        with pytest.raises(PeerError, match="presents key"):
            async with asyncio.timeout(TIMEOUT):
                async with Peer(
                    address, identity=identity, name="alice", known_peers=pins, config=QUIET
                ):
                    pass
    # Given on the command line, the right key needs no pin at all.
    async with _server(address, bytes(range(32))):
        async with asyncio.timeout(TIMEOUT):
            config = PeerConfig(probe_nat=False, keepalive=0, server_key=first)
            async with Peer(address, identity=identity, name="alice", config=config):
                pass


def test_a_bad_server_key_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    short = base64.b64encode(bytes(16)).decode()
    for bad, why in (("not base64!", "not base64"), (short, "32 bytes, not 16")):
        with pytest.raises(SystemExit) as exit_info:
            main(["chat", "--server", "127.0.0.1", "--name", "a", "--server-key", bad])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("peer: ") and why in err and err.count("\n") == 1
