"""Two `peer chat` processes behind real NATs talk over the path they punched."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from natlab import Lab, NatKind, NatSpec
from natlab.services import JsonLines, chat_process, rendezvous_process
from natlab.services import chat_args as shared_chat_args

pytestmark = pytest.mark.lab

SERVER, ALT = "203.0.113.10", "203.0.113.11"
K = NatKind
CONES = (K.OPEN, K.FULL_CONE, K.RESTRICTED_CONE, K.PORT_RESTRICTED_CONE)
# Every pair where a direct path exists without port prediction.
DIRECT_PAIRS = (
    [(a, b) for i, a in enumerate(CONES) for b in CONES[i:]]
    + [(K.SYMMETRIC, other) for other in (K.OPEN, K.FULL_CONE, K.RESTRICTED_CONE)]
    + [(other, K.SYMMETRIC) for other in (K.OPEN, K.FULL_CONE, K.RESTRICTED_CONE)]
)


def chat_args(tmp: Path, name: str, *extra: str) -> list[str]:
    return shared_chat_args(SERVER, tmp, name, *extra)


def say(process: subprocess.Popen[bytes], text: str) -> None:
    assert process.stdin is not None
    process.stdin.write(text.encode() + b"\n")
    process.stdin.flush()


def texts(lines: JsonLines, count: int, timeout: float = 30.0) -> list[object]:
    return [item["text"] for item in lines.collect("message", count, timeout)]


@pytest.mark.parametrize(("kind_a", "kind_b"), DIRECT_PAIRS, ids=lambda k: str(k))
def test_chat_over_a_direct_path(
    lab_factory: Callable[..., Lab], tmp_path: Path, kind_a: NatKind, kind_b: NatKind
) -> None:
    lab = lab_factory(Lab.two_nats, a=NatSpec(kind=kind_a), b=NatSpec(kind=kind_b))
    a, b = lab.hosts["a"], lab.hosts["b"]
    with (
        rendezvous_process(["--listen", f"{SERVER}:3478", "--alt-ip", ALT], lab.server.exec_prefix),
        chat_process(b.exec_prefix, chat_args(tmp_path, "bob", "--no-probe")) as (bob, bob_out),
    ):
        bob_out.next("online")
        with chat_process(
            a.exec_prefix, chat_args(tmp_path, "alice", "--no-probe", "--to", "bob")
        ) as (alice, alice_out):
            connected = alice_out.next("connected")
            accepted = bob_out.next("connected")
            assert connected["path"] == "direct", connected
            assert accepted["path"] == "direct", accepted
            assert connected["peer"] == "bob" and accepted["peer"] == "alice"
            assert isinstance(connected["ms"], float) and connected["ms"] < 3000
            say(alice, "hello bob")
            say(bob, "hello alice")
            assert texts(bob_out, 1) == ["hello bob"]
            assert texts(alice_out, 1) == ["hello alice"]
            assert alice.stdin is not None
            alice.stdin.close()
            assert alice_out.next("closed")["reason"] == "end of input"
            assert alice.wait(timeout=15) == 0
            closed = bob_out.next("closed")
            assert "closed by alice" in str(closed["reason"])


def test_two_peers_behind_one_nat_use_the_lan(
    lab_factory: Callable[..., Lab], tmp_path: Path
) -> None:
    lab = lab_factory(Lab.same_lan, nat=NatSpec(kind=K.PORT_RESTRICTED_CONE))
    a, b = lab.hosts["a"], lab.hosts["b"]
    with (
        rendezvous_process(["--listen", f"{SERVER}:3478", "--alt-ip", ALT], lab.server.exec_prefix),
        chat_process(b.exec_prefix, chat_args(tmp_path, "bob", "--no-probe")) as (_, bob_out),
    ):
        bob_out.next("online")
        with chat_process(
            a.exec_prefix, chat_args(tmp_path, "alice", "--no-probe", "--to", "bob")
        ) as (alice, alice_out):
            connected = alice_out.next("connected")
            assert connected["path"] == "lan", connected
            assert str(connected["remote"]).startswith(f"{b.ip}:"), connected
            assert bob_out.next("connected")["path"] == "lan"
            say(alice, "on the lan")
            assert texts(bob_out, 1) == ["on the lan"]


@pytest.mark.parametrize(
    ("kind_a", "kind_b"),
    [(K.SYMMETRIC, K.PORT_RESTRICTED_CONE), (K.PORT_RESTRICTED_CONE, K.SYMMETRIC)],
    ids=lambda k: str(k),
)
def test_birthday_trick_symmetric_against_port_restricted(
    lab_factory: Callable[..., Lab], tmp_path: Path, kind_a: NatKind, kind_b: NatKind
) -> None:
    # The peers probe their NATs (the default) to learn that this is the pair for the
    # birthday trick: many sockets behind the symmetric NAT, a spray from the other side.
    lab = lab_factory(Lab.two_nats, a=NatSpec(kind=kind_a), b=NatSpec(kind=kind_b))
    with (
        rendezvous_process(["--listen", f"{SERVER}:3478", "--alt-ip", ALT], lab.server.exec_prefix),
        chat_process(lab.hosts["b"].exec_prefix, chat_args(tmp_path, "bob")) as (bob, bob_out),
    ):
        bob_out.next("online", timeout=30)
        with chat_process(
            lab.hosts["a"].exec_prefix, chat_args(tmp_path, "alice", "--to", "bob")
        ) as (alice, alice_out):
            connected = alice_out.next("connected", timeout=30)
            assert connected["path"] == "direct", connected
            assert bob_out.next("connected")["path"] == "direct"
            say(alice, "happy birthday")
            say(bob, "thanks")
            assert texts(bob_out, 1) == ["happy birthday"]
            assert texts(alice_out, 1) == ["thanks"]
