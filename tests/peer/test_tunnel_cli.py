"""``peer expose``, ``peer forward`` and ``peer publish`` as processes on loopback: the
status lines a user (or a script reading --json) sees, the exit statuses, and one-line
errors for bad arguments."""

from __future__ import annotations

import hashlib
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from natlab.services import JsonLines, chat_args, rendezvous_process
from tests.support.loopback import free_port_pair


@contextmanager
def peer_process(*args: str) -> Iterator[tuple[subprocess.Popen[bytes], JsonLines]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "peer", *args, "--json", "--no-probe"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        yield process, JsonLines(process)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        for pipe in (process.stdout, process.stderr):
            assert pipe is not None
            pipe.close()


@contextmanager
def digest_server() -> Iterator[int]:
    """A TCP server answering each connection with the SHA-256 of what it sent."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(30)

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                digest = hashlib.sha256()
                while data := conn.recv(65536):
                    digest.update(data)
                conn.sendall(digest.digest())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def _upload(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        answer = b""
        while data := conn.recv(65536):
            answer += data
        return answer


def _stop(process: subprocess.Popen[bytes], out: JsonLines) -> None:
    process.send_signal(signal.SIGTERM)
    assert out.next("stopped", timeout=20)["event"] == "stopped"
    assert process.wait(timeout=20) == 0


def test_expose_and_forward_carry_a_connection_and_say_so(tmp_path: Path) -> None:
    port = free_port_pair()
    server = f"127.0.0.1:{port}"
    with (
        rendezvous_process(["--listen", server]),
        digest_server() as target,
        peer_process(
            "expose", f"digest=127.0.0.1:{target}", "--allow", "alice",
            *chat_args(server, tmp_path, "bob"),
        ) as (bob, bob_out),
    ):  # fmt: skip
        bob_out.next("exposing", timeout=30)
        with peer_process("forward", "0", "bob:digest", *chat_args(server, tmp_path, "alice")) as (
            alice,
            alice_out,
        ):
            listening = alice_out.next("listening", timeout=30)
            assert listening["protocol"] == "tcp" and listening["target"] == "bob:digest"
            # One host: bob's private candidates (this host's interface addresses) reach him
            # as well as his public endpoint does, and either may answer first; not the relay.
            assert alice_out.next("connected", timeout=10)["path"] in {"direct", "lan"}
            local_port = int(str(listening["listen"]).rpartition(":")[2])
            payload = bytes(range(256)) * 8000
            assert _upload(local_port, payload) == hashlib.sha256(payload).digest()
            closed = alice_out.next("tunnel_closed", timeout=20)
            assert closed["bytes_sent"] == len(payload) and closed["bytes_received"] == 32
            assert bob_out.next("tunnel_closed", timeout=20)["bytes_received"] == len(payload)
            _stop(alice, alice_out)
        _stop(bob, bob_out)


def test_publish_opens_a_public_port_on_the_server(tmp_path: Path) -> None:
    port, public = free_port_pair(), free_port_pair()
    server = f"127.0.0.1:{port}"
    args = ["--listen", server, "--publish-ports", f"{public}-{public}"]
    with (
        rendezvous_process(args),
        digest_server() as target,
        peer_process(
            "publish", f"digest=127.0.0.1:{target}", "--public-port", str(public),
            *chat_args(server, tmp_path, "bob"),
        ) as (bob, bob_out),
    ):  # fmt: skip
        published = bob_out.next("published", timeout=30)
        assert published["public"] == f"127.0.0.1:{public}"
        payload = b"through the server" * 1000
        assert _upload(public, payload) == hashlib.sha256(payload).digest()
        _stop(bob, bob_out)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["forward", "99999", "bob:web"], "bad listen address '99999'"),
        (["forward", "8080", "bob"], "bad target 'bob': expected PEER:SERVICE"),
        (["expose", "web=nowhere", "--allow", "a"], "bad service 'web=nowhere'"),
        (["expose", "web=h:1/sctp", "--allow", "a"], "/tcp or /udp, not /sctp"),
        (["publish", "a=127.0.0.1:80", "b=127.0.0.1:81", "--public-port", "1"], "one --public"),
        (["socks", "1080", "--via", "bob", "--users-file", "/nonexistent"], "--users-file"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(
    args: list[str], message: str, tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "peer", *args, *chat_args("127.0.0.1:9", tmp_path, "x")],
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
