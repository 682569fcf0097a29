"""Bulk transfers between two NATed peers through the library on real NATs: 256 MB on a
stream over the direct path and over the relay arrives whole (the receiver's SHA-256
matches the sender's); 20,000 messages and a 50 MB message arrive exactly once and in
order, lossless and with the routers dropping 10% of UDP."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from natlab import Lab, NatKind, NatSpec
from natlab.services import JsonLines, rendezvous_process

pytestmark = pytest.mark.lab

SERVER, ALT, SECRET = "203.0.113.10", "203.0.113.11", "lab bulk secret"
MEGABYTES = int(os.environ.get("LAB_BULK_MB", "256"))
SERVER_ARGS = ["--listen", f"{SERVER}:3478", "--alt-ip", ALT, "--turn-secret", SECRET]


@contextmanager
def side(prefix: Sequence[str], *args: str) -> Iterator[JsonLines]:
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


@pytest.mark.parametrize(
    ("kind", "path"),
    [(NatKind.PORT_RESTRICTED_CONE, "direct"), (NatKind.SYMMETRIC, "relay")],
    ids=["direct", "relay"],
)
def test_256_megabytes_arrive_whole(
    lab_factory: Callable[..., Lab], tmp_path: Path, kind: NatKind, path: str
) -> None:
    lab = lab_factory(Lab.two_nats, a=NatSpec(kind=kind), b=NatSpec(kind=kind))
    # The relay's per-allocation quota (1 MB/s by default, a public server's policy) is
    # lifted: this measures what the relay path carries.
    args = [*SERVER_ARGS, "--turn-bandwidth", "1e9"]
    common = ["--server", SERVER, "--timeout", "60"]
    with (
        rendezvous_process(args, lab.server.exec_prefix),
        side(
            lab.hosts["b"].exec_prefix,
            *common,
            "--role=receiver",
            "--name=bob",
            f"--identity={tmp_path / 'bob.pem'}",
        ) as receiver,
    ):
        receiver.next("ready", timeout=30)
        with side(
            lab.hosts["a"].exec_prefix,
            *common,
            "--role=sender",
            "--name=alice",
            "--peer=bob",
            f"--mb={MEGABYTES}",
            f"--identity={tmp_path / 'alice.pem'}",
        ) as sender:
            sender.next("ready", timeout=30)
            sent = sender.next("result", timeout=240)
            got = receiver.next("result", timeout=30)
    assert sent["intact"] is True, sent
    assert got["bytes"] == sent["bytes"] == MEGABYTES * 1024 * 1024
    assert sent["path"] == got["path"] == path


@pytest.mark.parametrize("loss", [0, 10], ids=["lossless", "10%-loss"])
def test_messages_arrive_once_and_in_order(
    lab_factory: Callable[..., Lab], tmp_path: Path, loss: int
) -> None:
    spec = NatSpec(kind=NatKind.PORT_RESTRICTED_CONE, loss=loss)
    lab = lab_factory(Lab.two_nats, a=spec, b=spec)
    common = ["--server", SERVER, "--timeout", "60", "--messages=20000", "--mb=50"]
    with (
        rendezvous_process(SERVER_ARGS, lab.server.exec_prefix),
        side(
            lab.hosts["b"].exec_prefix,
            *common,
            "--role=receiver",
            "--name=bob",
            f"--identity={tmp_path / 'bob.pem'}",
        ) as receiver,
    ):
        receiver.next("ready", timeout=30)
        with side(
            lab.hosts["a"].exec_prefix,
            *common,
            "--role=sender",
            "--name=alice",
            "--peer=bob",
            f"--identity={tmp_path / 'alice.pem'}",
        ) as sender:
            sender.next("ready", timeout=30)
            got = receiver.next("result", timeout=240)
            sent = sender.next("result", timeout=30)
    assert got["messages"] == 20_000 and got["in_order"] is True, got
    assert got["bytes"] == sent["bytes"] == 50 * 1024 * 1024
    assert sent["intact"] is True, sent
    assert sent["path"] == got["path"] == "direct"
