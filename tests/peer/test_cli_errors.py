"""Every bad input and failure of ``peer`` is one line on stderr (``peer: ...``) and a
non-zero exit, never a traceback; the library raises PeerError (with a reason) rather than
a raw OSError or an empty TimeoutError; Ctrl-C and SIGTERM close the peer in order."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from natlab.services import chat_args
from peer.adapters.peer import Peer, PeerConfig, Transport
from peer.cli import main
from peer.errors import LocalProtocolError, PeerError, PeerTimeout, ServerUnreachable
from peer.identity import Identity, IdentityError, load_or_create
from peer.known_peers import NAME_RULE, KnownPeers, KnownPeersError
from rendezvous.adapters.server import RendezvousServer
from rendezvous.binding import StunServiceConfig
from rendezvous.login import LoginChecker
from rendezvous.tickets import Tickets
from rvproto.messages import RvAttr, RvMethod, rv_message
from stunproto import MessageClass
from stunproto.attributes import Address
from stunproto.message import new_transaction_id
from tests.support.loopback import free_port_pair

TIMEOUT = 20.0
QUIET = PeerConfig(probe_nat=False, keepalive=0)  # no keepalives: no dead-path verdicts


@asynccontextmanager
async def rendezvous() -> AsyncIterator[Address]:
    address = ("127.0.0.1", free_port_pair())
    async with RendezvousServer(StunServiceConfig(primary=address)):
        yield address


async def peer_cli(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "peer",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def next_event(process: asyncio.subprocess.Process, event: str) -> dict[str, object]:
    """The next ``--json`` line on stdout whose event is ``event``."""
    assert process.stdout is not None
    while line := await asyncio.wait_for(process.stdout.readline(), TIMEOUT):
        item: dict[str, object] = json.loads(line)
        if item.get("event") == event:
            return item
    raise AssertionError(f"stdout ended before a {event!r} event")


async def ended(process: asyncio.subprocess.Process) -> tuple[int, str]:
    """Exit status and stderr of a process that is ending (stdin closed first)."""
    assert process.stdin is not None and process.stderr is not None
    process.stdin.close()
    errors = await asyncio.wait_for(process.stderr.read(), TIMEOUT)
    return await asyncio.wait_for(process.wait(), TIMEOUT), errors.decode()


def quiet_exit(errors: str) -> bool:
    """Nothing but log lines: no traceback, no ``peer:`` line."""
    return "Traceback" not in errors and not any(
        line.startswith("peer:") for line in errors.splitlines()
    )


# ------------------------------------------------------------------ 1: Ctrl-C and SIGTERM


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
async def test_a_signal_ends_a_chat_quietly_and_the_other_side_is_told_at_once(
    tmp_path: Path, signum: signal.Signals, status: int
) -> None:
    async with (
        rendezvous() as server,
        Peer(server, identity=Identity.generate(), name="bob", config=QUIET) as bob,
    ):
        args = chat_args(f"{server[0]}:{server[1]}", tmp_path, "alice", "--no-probe")
        alice = await peer_cli("chat", "--json", *args, "--to", "bob")
        try:
            conn = await asyncio.wait_for(bob.accept(), TIMEOUT)
            await next_event(alice, "connected")
            alice.send_signal(signum)

            async def until_closed() -> None:
                async for _ in conn:
                    pass

            # bob has no keepalives, so only alice's own close can end this, and soon.
            await asyncio.wait_for(until_closed(), 5)
            assert conn.closed is not None and conn.closed.startswith("closed by alice")
            code, errors = await ended(alice)
        finally:
            if alice.returncode is None:
                alice.kill()
                await alice.wait()
    assert code == status
    assert quiet_exit(errors), errors


@pytest.mark.parametrize(
    ("command", "signum", "status"),
    [("send", signal.SIGINT, 130), ("send", signal.SIGTERM, 143), ("receive", signal.SIGINT, 0)],
)
async def test_a_signal_while_logging_in_ends_at_once_without_a_traceback(
    tmp_path: Path, command: str, signum: signal.Signals, status: int
) -> None:
    # A server that never answers: the command is inside its login when the request comes.
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    silent.setblocking(False)
    loop = asyncio.get_running_loop()
    host, port = silent.getsockname()
    (tmp_path / "a.txt").write_text("hello")
    what = (
        [str(tmp_path / "a.txt"), "--to", "bob"] if command == "send" else ["--dir", str(tmp_path)]
    )
    with silent:
        args = chat_args(f"{host}:{port}", tmp_path, "alice", "--no-probe")
        process = await peer_cli(command, *what, *args)
        try:
            await asyncio.wait_for(loop.sock_recv(silent, 2048), TIMEOUT)  # the login
            process.send_signal(signum)
            code, errors = await asyncio.wait_for(ended(process), 5)  # not the login's 10 s
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert code == status
    assert quiet_exit(errors), errors


# ------------------------------------------------------------------ 2: no server at all


async def test_no_server_over_udp_or_tcp_is_one_peer_error_naming_both() -> None:
    port = free_port_pair()  # nothing listens there, over UDP or TCP
    config = PeerConfig(probe_nat=False, login_timeout=1.0)  # (UDP gives up after 1 s)
    with pytest.raises(PeerError) as caught:
        async with Peer(
            ("127.0.0.1", port), identity=Identity.generate(), name="alice", config=config
        ):
            pass
    assert isinstance(caught.value, ServerUnreachable)
    assert str(caught.value) == (
        f"no rendezvous server answers at 127.0.0.1:{port} "
        "(UDP: nothing within 1 s; TCP: connection refused)"
    )


async def test_the_nat_probe_tells_no_server_apart_too() -> None:
    port = free_port_pair()
    config = PeerConfig(probe_nat=True, login_timeout=1.0)
    with pytest.raises(ServerUnreachable) as caught:
        async with asyncio.timeout(TIMEOUT):
            async with Peer(
                ("127.0.0.1", port), identity=Identity.generate(), name="a", config=config
            ):
                pass
    text = str(caught.value)
    assert text.startswith(f"no rendezvous server answers at 127.0.0.1:{port} (UDP: nothing")
    assert text.endswith("; TCP: connection refused)")


# ------------------------------------------------------------------ 3: ports in range


def one_line_usage_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    errors = capsys.readouterr().err
    assert errors.count("\n") == 1 and errors.startswith("peer: "), errors
    return errors


LOGIN = ["--server", "127.0.0.1:3478", "--name", "alice"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["chat", *LOGIN, "--port", "99999"],
            "argument --port: port out of range (0-65535): 99999",
        ),
        (["chat", *LOGIN, "--port", "-1"], "argument --port: port out of range (0-65535): -1"),
        (["send", "f", "--to", "b", *LOGIN, "--port", "65536"], "argument --port: port out of"),
        (["receive", *LOGIN, "--port", "x"], "argument --port: not a port number: 'x'"),
        (["nat", "127.0.0.1", "--port", "70000"], "argument --port: port out of range"),
        (["nat", "127.0.0.1:99999"], "argument server: port out of range (1-65535)"),
        (["chat", "--server", "h:0", "--name", "a"], "argument --server: port out of range"),
        (["chat", *LOGIN, "--keepalive", "-1"], "argument --keepalive: must be >= 0 seconds"),
        (["chat", *LOGIN, "--timeout", "0"], "argument --timeout: must be > 0 seconds"),
    ],
)
def test_ports_and_durations_are_checked_by_the_parser(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert one_line_usage_error(capsys, argv).startswith(f"peer: {message}")


# ------------------------------------------------------------------ 4: a port in use


async def test_a_port_in_use_is_a_peer_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("0.0.0.0", 0))
        port = taken.getsockname()[1]
        config = PeerConfig(probe_nat=False, local_port=port)
        with pytest.raises(PeerError) as caught:
            async with Peer(
                ("127.0.0.1", 9), identity=Identity.generate(), name="a", config=config
            ):
                pass
    assert str(caught.value) == f"cannot bind UDP port {port}: address already in use"


def test_a_port_in_use_is_one_line_from_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("0.0.0.0", 0))
        port = taken.getsockname()[1]
        args = chat_args("127.0.0.1:9", tmp_path, "alice", "--no-probe", "--port", str(port))
        assert main(["chat", *args]) == 1
    assert capsys.readouterr().err.endswith(
        f"peer: cannot bind UDP port {port}: address already in use\n"
    )


# ------------------------------------------------------------------ 5: timeouts say what


async def test_a_connect_timeout_says_what_timed_out_and_after_how_long() -> None:
    async with (
        rendezvous() as server,
        Peer(server, identity=Identity.generate(), name="alice", config=QUIET) as alice,
    ):
        async with Peer(server, identity=Identity.generate(), name="bob", config=QUIET):
            pass  # bob is gone, but the server still has him online for a while
        with pytest.raises(TimeoutError) as caught:
            await asyncio.wait_for(alice.connect("bob", timeout=0.5), TIMEOUT)
    assert isinstance(caught.value, PeerTimeout)  # a PeerError, and a TimeoutError
    assert str(caught.value) == "cannot connect to bob (timed out after 0.5 s)"


# ------------------------------------------------------------------ 6: directories


def test_a_directory_as_known_peers_or_identity_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["chat", "--server", "127.0.0.1:9", "--name", "alice", "--no-probe"]
    identity, known = tmp_path / "id.pem", tmp_path / "known"
    assert main([*base, "--identity", str(identity), "--known-peers", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"peer: --known-peers {tmp_path} is a directory, not a known-peers file\n"
    )
    assert main([*base, "--identity", str(tmp_path), "--known-peers", str(known)]) == 2
    assert capsys.readouterr().err == (
        f"peer: --identity {tmp_path} is a directory, not an identity key file\n"
    )
    # The library's own error types, with the same reasons.
    with pytest.raises(KnownPeersError, match="is a directory"):
        KnownPeers(tmp_path)
    with pytest.raises(IdentityError, match="is a directory"):
        load_or_create(tmp_path)


# ------------------------------------------------------------------ 7: peer names


def test_a_long_name_is_refused_with_the_rule(capsys: pytest.CaptureFixture[str]) -> None:
    errors = one_line_usage_error(capsys, ["chat", "--server", "127.0.0.1", "--name", "a" * 100])
    assert "is 100 bytes long" in errors and NAME_RULE in errors
    assert "64 bytes" in NAME_RULE and "one script" in NAME_RULE
    errors = one_line_usage_error(capsys, ["chat", *LOGIN, "--to", "bob smith"])
    assert "argument --to: peer name 'bob smith' has whitespace" in errors


async def test_the_library_refuses_a_bad_name_before_the_server_does() -> None:
    with pytest.raises(LocalProtocolError, match="is 100 bytes long"):
        async with Peer(
            ("127.0.0.1", 9), identity=Identity.generate(), name="a" * 100, config=QUIET
        ):
            pass


def test_the_server_says_its_rule_too() -> None:
    login = rv_message(
        RvMethod.LOGIN,
        MessageClass.REQUEST,
        new_transaction_id(),
        ((RvAttr.PEER_NAME, "a" * 100), (RvAttr.PUBLIC_KEY, bytes(32))),
    )
    static = bytes(32)
    tickets = Tickets(static, epoch=0, lifetime=60.0, wall_offset=0.0, random_bytes=os.urandom)
    checker = LoginChecker(b"secret", 30.0, X25519PrivateKey.from_private_bytes(static), tickets)
    refusal = checker.check(login, ("127.0.0.1", 5000), 0.0)
    assert (
        getattr(refusal, "reason", None)
        == f"peer name 'aaaaaaaaaaaaaaaaaaaa...' is 100 bytes long; {NAME_RULE}"
    )


# ------------------------------------------------------------------ 8: a server's name


async def test_a_server_host_name_is_resolved_once_up_front() -> None:
    async with rendezvous() as (_, port):
        me = Peer(("localhost", port), identity=Identity.generate(), name="alice", config=QUIET)
        # Over UDP at once: its answers come from 127.0.0.1, which is what it sent to.
        async with asyncio.timeout(5):  # (unresolved: ignored for 10 s, then TCP)
            async with me:
                assert me.transport is Transport.UDP
                assert me.server == ("127.0.0.1", port)


async def test_an_unresolvable_server_is_a_peer_error() -> None:
    me = Peer(("no-such-host.invalid", 3478), identity=Identity.generate(), name="a", config=QUIET)
    with pytest.raises(PeerError, match=r"^cannot resolve no-such-host\.invalid: "):
        async with asyncio.timeout(TIMEOUT):
            async with me:
                pass
