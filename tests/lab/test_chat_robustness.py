"""The chat behind real NATs under stress: idle NAT timeouts, loss, impostors, attackers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from natlab import Lab, NatKind, NatSpec
from natlab.services import JsonLines, chat_process, rendezvous_process
from tests.lab.test_chat import ALT, SERVER, chat_args, say, texts

pytestmark = pytest.mark.lab

K = NatKind
RENDEZVOUS = ["--listen", f"{SERVER}:3478", "--alt-ip", ALT]


def quiet_for(lines: JsonLines, seconds: float) -> None:
    """Assert that nothing at all is printed for ``seconds`` (the idle period itself)."""
    with pytest.raises(TimeoutError):
        unexpected = lines.next(timeout=seconds)
        pytest.fail(f"expected silence, got {unexpected}")


@pytest.mark.parametrize("keepalive", [True, False], ids=["keepalive", "no-keepalive"])
def test_idle_chat_survives_ten_binding_timeouts(
    lab_factory: Callable[..., Lab], tmp_path: Path, keepalive: bool
) -> None:
    timeout = 2  # seconds: the NATs forget an idle mapping after this long
    spec = NatSpec(kind=K.PORT_RESTRICTED_CONE, binding_timeout=timeout)
    lab = lab_factory(Lab.two_nats, a=spec, b=spec)
    # With keepalives, the interval comes from the binding lifetime each peer measures;
    # the negative control turns them off (and must then lose the idle path).
    extra = ["--probe-lifetime", "4"] if keepalive else ["--no-probe", "--keepalive", "0"]
    with (
        rendezvous_process(RENDEZVOUS, lab.server.exec_prefix),
        chat_process(lab.hosts["b"].exec_prefix, chat_args(tmp_path, "bob", *extra)) as (
            bob,
            bob_out,
        ),
    ):
        bob_out.next("online", timeout=60)
        with chat_process(
            lab.hosts["a"].exec_prefix, chat_args(tmp_path, "alice", *extra, "--to", "bob")
        ) as (alice, alice_out):
            assert alice_out.next("connected", timeout=60)["path"] == "direct"
            bob_out.next("connected")
            say(alice, "before")
            assert texts(bob_out, 1) == ["before"]
            quiet_for(bob_out, 10 * timeout)  # idle: ten binding timeouts
            # Only Alice speaks: if Bob sent at the same time, the two would punch a fresh
            # hole, which is what punching is, and the negative control could not fail.
            say(alice, "after")
            if keepalive:
                assert texts(bob_out, 1, timeout=10) == ["after"]
                say(bob, "reply")
                assert texts(alice_out, 1, timeout=10) == ["reply"]
            else:
                # Bob's NAT forgot the mapping: Alice's retransmissions never get in.
                with pytest.raises(TimeoutError):
                    bob_out.next("message", timeout=3 * timeout)


def test_hundred_messages_each_way_at_ten_percent_loss(
    lab_factory: Callable[..., Lab], tmp_path: Path
) -> None:
    lab = lab_factory(
        Lab.two_nats,
        a=NatSpec(kind=K.PORT_RESTRICTED_CONE, loss=10),
        b=NatSpec(kind=K.RESTRICTED_CONE, loss=10),
    )
    with (
        rendezvous_process(RENDEZVOUS, lab.server.exec_prefix),
        chat_process(lab.hosts["b"].exec_prefix, chat_args(tmp_path, "bob", "--no-probe")) as (
            bob,
            bob_out,
        ),
    ):
        bob_out.next("online")
        with chat_process(
            lab.hosts["a"].exec_prefix, chat_args(tmp_path, "alice", "--no-probe", "--to", "bob")
        ) as (alice, alice_out):
            alice_out.next("connected")
            bob_out.next("connected")
            for i in range(100):
                say(alice, f"a{i}")
                say(bob, f"b{i}")
            assert texts(bob_out, 100, timeout=60) == [f"a{i}" for i in range(100)]
            assert texts(alice_out, 100, timeout=60) == [f"b{i}" for i in range(100)]
            # And nothing twice: no further message shows up.
            with pytest.raises(TimeoutError):
                bob_out.next("message", timeout=2)


def test_second_key_under_a_taken_name_is_refused(
    lab_factory: Callable[..., Lab], tmp_path: Path
) -> None:
    lab = lab_factory(
        Lab.two_nats, a=NatSpec(kind=K.FULL_CONE), b=NatSpec(kind=K.PORT_RESTRICTED_CONE)
    )
    with (
        rendezvous_process(RENDEZVOUS, lab.server.exec_prefix),
        chat_process(lab.hosts["b"].exec_prefix, chat_args(tmp_path, "bob", "--no-probe")) as (
            _,
            bob_out,
        ),
    ):
        bob_out.next("online")
        impostor_args = chat_args(tmp_path / "impostor", "bob", "--no-probe")
        (tmp_path / "impostor").mkdir()
        with chat_process(lab.hosts["a"].exec_prefix, impostor_args) as (impostor, out):
            error = out.next("error")
            assert "another key" in str(error["reason"]), error
            assert impostor.wait(timeout=15) == 1


def test_injected_and_replayed_datagrams_are_refused(
    lab_factory: Callable[..., Lab], tmp_path: Path
) -> None:
    # Bob's NAT is a full cone, so an attacker anywhere can reach his mapped port.
    lab = lab_factory(
        Lab.two_nats, a=NatSpec(kind=K.PORT_RESTRICTED_CONE), b=NatSpec(kind=K.FULL_CONE)
    )
    with (
        rendezvous_process(RENDEZVOUS, lab.server.exec_prefix),
        chat_process(lab.hosts["b"].exec_prefix, chat_args(tmp_path, "bob", "--no-probe")) as (
            bob,
            bob_out,
        ),
    ):
        bob_out.next("online")
        with chat_process(
            lab.hosts["a"].exec_prefix, chat_args(tmp_path, "alice", "--no-probe", "--to", "bob")
        ) as (alice, alice_out):
            host, port = str(alice_out.next("connected")["remote"]).split(":")
            bob_out.next("connected")
            # An on-path observer at Bob's NAT records Alice's next datagrams ...
            sniffer = subprocess.Popen(
                [
                    *lab.routers["nat_b"].exec_prefix,
                    sys.executable,
                    "-m",
                    "natlab.sniff",
                    "capture",
                    "--iface",
                    lab.routers["nat_b"].wan_if,
                    "--port",
                    port,
                    "--count",
                    "2",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            try:
                assert sniffer.stdout is not None
                ready = sniffer.stdout.readline()
                assert json.loads(ready) == {"ready": True}
                say(alice, "one")
                say(alice, "two")
                captured_line, _ = sniffer.communicate(timeout=15)
            finally:
                sniffer.kill()
            captured = [bytes.fromhex(p) for p in json.loads(captured_line)["payloads"]]
            assert texts(bob_out, 2) == ["one", "two"]
            assert captured and all(packet[0] == 0xA3 for packet in captured)
            # ... and an attacker on the internet replays them, tampers with them, forges
            # transport packets and a handshake with its own key, and sends probes.
            forged = [
                *captured,
                *(bytes([p[0]]) + p[1:-1] + bytes([p[-1] ^ 1]) for p in captured),
                *(b"\xa3" + os.urandom(60) for _ in range(10)),
                b"\xa1" + os.urandom(96),
                b"\xa4",
            ]
            lab.outside.run(
                [
                    sys.executable,
                    "-m",
                    "natlab.sniff",
                    "send",
                    host,
                    port,
                    *(packet.hex() for packet in forged),
                ]
            )
            say(alice, "three")
            # Bob sees exactly the next real message: no duplicate, no garbage, and the
            # path did not move to the attacker.
            assert bob_out.next("message")["text"] == "three"
            assert not [item for item in bob_out.seen if item.get("event") == "path"]
            say(bob, "still here")
            assert texts(alice_out, 1) == ["still here"]
