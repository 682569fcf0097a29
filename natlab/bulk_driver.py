"""Drive ``python -m natlab.bulk`` on two lab hosts: the lab's bulk tests and
bench/bulk.py's lab part both run a receiver and a sender this way."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from natlab.lab import Lab
from natlab.services import JsonLines

SERVER, ALT = "203.0.113.10", "203.0.113.11"


def server_args(secret: str) -> list[str]:
    """The rendezvous's arguments, its relay quota lifted (1 MB/s by default, a public
    server's policy): the bulk runs measure what the relay path carries."""
    return [
        *("--listen", f"{SERVER}:3478", "--alt-ip", ALT, "--turn-secret", secret),
        *("--turn-bandwidth", "1e9"),
    ]


@contextmanager
def bulk_side(prefix: Sequence[str], *args: str) -> Iterator[JsonLines]:
    """One ``natlab.bulk`` process (inside a namespace with ``prefix``), killed after."""
    process = subprocess.Popen(
        [*prefix, sys.executable, "-m", "natlab.bulk", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield JsonLines(process)
    finally:
        process.kill()
        process.wait(timeout=10)
        assert process.stdout is not None
        process.stdout.close()


def run_pair(
    lab: Lab,
    receiver: tuple[str, list[str]],
    sender: tuple[str, list[str]],
    timeout: float,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(host, arguments) of each side: the receiver starts first; returns the sender's
    and the receiver's results."""
    with bulk_side(lab.node(receiver[0]).exec_prefix, *receiver[1]) as receiving:
        receiving.next("ready", timeout=30)
        with bulk_side(lab.node(sender[0]).exec_prefix, *sender[1]) as sending:
            sending.next("ready", timeout=30)
            sent = sending.next("result", timeout=timeout)
            got = receiving.next("result", timeout=30)
    return sent, got


def peer_pair(
    lab: Lab, keys: Path, extra: Sequence[str], timeout: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """bob receives on host b, alice sends from host a, both with ``extra`` arguments,
    through the rendezvous on the lab's server host (started by the caller)."""
    common = ["--server", SERVER, "--timeout", f"{timeout:g}", *extra]
    receiver = [*common, "--role=receiver", "--name=bob", f"--identity={keys / 'bob.pem'}"]
    sender = [*common, "--role=sender", "--name=alice", "--peer=bob"]
    sender.append(f"--identity={keys / 'alice.pem'}")
    return run_pair(lab, ("b", receiver), ("a", sender), timeout)
