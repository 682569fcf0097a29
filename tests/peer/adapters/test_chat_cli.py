"""`peer chat` as a person uses it (plain text, no --json), two processes on loopback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from natlab.services import chat_args, rendezvous_process, wait_for_line
from tests.support.loopback import free_port_pair


def chat(tmp: Path, port: int, name: str, *extra: str) -> subprocess.Popen[bytes]:
    args = chat_args(f"127.0.0.1:{port}", tmp, name, "--no-probe", *extra)
    return subprocess.Popen(
        [sys.executable, "-m", "peer", "chat", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_plain_text_chat(tmp_path: Path) -> None:
    port = free_port_pair()
    with rendezvous_process(["--listen", f"127.0.0.1:{port}"]):
        bob = chat(tmp_path, port, "bob")
        alice = None
        try:
            wait_for_line(bob, lambda line: line.startswith("online as bob"), 20)
            alice = chat(tmp_path, port, "alice", "--to", "bob")
            # Status lines go to stderr, messages to stdout as "NAME: text".
            status = wait_for_line(alice, lambda line: line.startswith("connected to bob"), 20)
            assert "path" in status and " ms" in status
            assert alice.stdin is not None and bob.stdin is not None
            alice.stdin.write(b"hello bob\n")
            alice.stdin.flush()
            line = wait_for_line(bob, lambda line: "hello" in line, 20, stream="stdout")
            assert line == "alice: hello bob"
            alice.stdin.close()  # end of input: deliver, then exit 0
            assert alice.wait(timeout=20) == 0
            # bob serves whoever connects: alice leaving is a line, and bob goes on.
            assert wait_for_line(bob, lambda line: "left" in line, 20) == "alice left"
            assert bob.poll() is None
        finally:
            for process in (bob, alice):
                if process is not None:
                    process.kill()
                    process.wait(timeout=10)
                    for pipe in (process.stdin, process.stdout, process.stderr):
                        if pipe is not None:
                            pipe.close()


def test_unknown_peer_is_a_clear_error(tmp_path: Path) -> None:
    port = free_port_pair()
    with rendezvous_process(["--listen", f"127.0.0.1:{port}"]):
        alice = chat(tmp_path, port, "alice", "--to", "nobody")
        try:
            line = wait_for_line(alice, lambda line: line.startswith("peer: "), 20)
            assert "nobody" in line and "unknown or offline" in line
            assert alice.wait(timeout=20) == 1
        finally:
            alice.kill()
            alice.wait(timeout=10)
            for pipe in (alice.stdin, alice.stdout, alice.stderr):
                if pipe is not None:
                    pipe.close()


def test_unreachable_server_over_tcp_is_one_line(tmp_path: Path) -> None:
    # Nobody listens on this port: the TCP connect is refused at once.
    port = free_port_pair()
    args = chat_args(f"127.0.0.1:{port}", tmp_path, "alice", "--no-probe", "--transport", "tcp")
    done = subprocess.run(
        [sys.executable, "-m", "peer", "chat", *args],
        input=b"",
        capture_output=True,
        timeout=60,
    )
    errors = done.stderr.decode()
    assert done.returncode == 1
    assert "Traceback" not in errors
    refused = f"127.0.0.1:{port} (TCP: connection refused)"
    assert f"peer: no rendezvous server answers at {refused}\n" in errors
