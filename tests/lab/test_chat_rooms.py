"""`peer chat` with more than two peers, across real NATs: a chat without --to serves
everyone who connects; a chat with --to refuses another caller, who is told why."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from natlab import Lab, NatKind, NatSpec
from natlab.services import chat_args as shared_chat_args
from natlab.services import chat_process, rendezvous_process

pytestmark = pytest.mark.lab

SERVER, ALT = "203.0.113.10", "203.0.113.11"
RENDEZVOUS = ["--listen", f"{SERVER}:3478", "--alt-ip", ALT]


def chat_args(tmp: Path, name: str, *extra: str) -> list[str]:
    return shared_chat_args(SERVER, tmp, name, "--no-probe", *extra)


def say(process: subprocess.Popen[bytes], text: str) -> None:
    assert process.stdin is not None
    process.stdin.write(text.encode() + b"\n")
    process.stdin.flush()


def lab_with_two_cones(lab_factory: Callable[..., Lab]) -> Lab:
    return lab_factory(
        Lab.two_nats,
        a=NatSpec(kind=NatKind.FULL_CONE),
        b=NatSpec(kind=NatKind.PORT_RESTRICTED_CONE),
    )


def test_two_callers_behind_different_nats_chat_with_one_peer(
    lab_factory: Callable[..., Lab], tmp_path: Path
) -> None:
    # bob behind a port-restricted cone serves; alice (behind a full cone) and carol (on the
    # open internet) both call him.
    lab = lab_with_two_cones(lab_factory)
    with (
        rendezvous_process(RENDEZVOUS, lab.server.exec_prefix),
        chat_process(lab.hosts["b"].exec_prefix, chat_args(tmp_path, "bob")) as (bob, bob_out),
    ):
        bob_out.next("online")
        with (
            chat_process(
                lab.hosts["a"].exec_prefix, chat_args(tmp_path, "alice", "--to", "bob")
            ) as (alice, alice_out),
            chat_process(lab.outside.exec_prefix, chat_args(tmp_path, "carol", "--to", "bob")) as (
                carol,
                carol_out,
            ),
        ):
            for caller in (alice_out, carol_out):
                assert caller.next("connected")["path"] == "direct"
            accepted = {str(item["peer"]) for item in bob_out.collect("connected", 2)}
            assert accepted == {"alice", "carol"}
            say(alice, "from alice")
            say(carol, "from carol")
            got = {(item["peer"], item["text"]) for item in bob_out.collect("message", 2)}
            assert got == {("alice", "from alice"), ("carol", "from carol")}
            say(bob, "to you both")
            for caller in (alice_out, carol_out):
                message = caller.next("message")
                assert (message["peer"], message["text"]) == ("bob", "to you both")

            assert carol.stdin is not None
            carol.stdin.close()  # carol leaves; bob goes on with alice
            assert carol.wait(timeout=15) == 0
            left = bob_out.next("closed")
            assert left == {"event": "closed", "peer": "carol", "reason": "closed by carol"}
            say(bob, "just us now")
            assert alice_out.next("message")["text"] == "just us now"
            assert bob.poll() is None


def test_a_chat_with_to_refuses_a_caller_across_nats(
    lab_factory: Callable[..., Lab], tmp_path: Path
) -> None:
    lab = lab_with_two_cones(lab_factory)
    with (
        rendezvous_process(RENDEZVOUS, lab.server.exec_prefix),
        chat_process(lab.hosts["b"].exec_prefix, chat_args(tmp_path, "bob")) as (_, bob_out),
    ):
        bob_out.next("online")
        with chat_process(
            lab.hosts["a"].exec_prefix, chat_args(tmp_path, "carol", "--to", "bob")
        ) as (carol, carol_out):
            carol_out.next("connected")
            # dave, on the open internet, calls carol, who is busy with bob.
            with chat_process(
                lab.outside.exec_prefix, chat_args(tmp_path, "dave", "--to", "carol")
            ) as (dave, dave_out):
                error = dave_out.next("error")
                assert error["reason"] == "carol refused the connection: busy in another chat"
                assert dave.wait(timeout=15) == 1
                assert not [item for item in dave_out.seen if item.get("event") == "connected"]
            refused = carol_out.next("refused")
            assert refused == {"event": "refused", "peer": "dave", "reason": "busy in another chat"}
            say(carol, "still here")
            assert bob_out.next("message")["text"] == "still here"
