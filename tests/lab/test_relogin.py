"""A waiting `peer chat` behind a real NAT stays reachable when the rendezvous restarts: it
says offline, then online, and a peer connects to it afterwards -- over UDP, and over TCP
from behind a NAT that blocks UDP (the connection reopened, the relay allocated again)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pytest

from natlab import Lab, NatKind, NatSpec
from natlab.services import chat_process, rendezvous_process
from tests.lab.test_chat import ALT, SERVER, chat_args, say, texts

pytestmark = pytest.mark.lab

RENDEZVOUS = ["--listen", f"{SERVER}:3478", "--alt-ip", ALT, "--turn-secret", "lab secret"]
FAST = ["--keepalive", "1"]  # refresh every second: a restart is noticed within one


@pytest.mark.parametrize(
    ("bob_nat", "path"),
    [(NatKind.PORT_RESTRICTED_CONE, "direct"), (NatKind.UDP_BLOCKED, "relay")],
    ids=["udp", "tcp"],
)
def test_waiting_chat_is_back_after_the_rendezvous_restarts(
    lab_factory: Callable[..., Lab], tmp_path: Path, bob_nat: NatKind, path: str
) -> None:
    lab = lab_factory(Lab.two_nats, a=NatSpec(kind=NatKind.FULL_CONE), b=NatSpec(kind=bob_nat))
    server = lab.server.exec_prefix
    # Bob probes his NAT so that, behind the UDP-blocking one, he logs in over TCP.
    bob_args = chat_args(tmp_path, "bob", *FAST)
    with ExitStack() as stack:
        with ExitStack() as first_server:
            first_server.enter_context(rendezvous_process(RENDEZVOUS, server))
            bob, bob_out = stack.enter_context(chat_process(lab.hosts["b"].exec_prefix, bob_args))
            first = bob_out.next("online", timeout=60)
            assert first["transport"] == ("tcp" if bob_nat is NatKind.UDP_BLOCKED else "udp")
        # The first server is gone; a new one knowing nobody starts on the same address.
        stack.enter_context(rendezvous_process(RENDEZVOUS, server))
        offline = bob_out.next("offline", timeout=30)
        assert isinstance(offline["retry_in"], float), offline
        again = bob_out.next("online", timeout=30)
        assert again["transport"] == first["transport"]
        alice, alice_out = stack.enter_context(
            chat_process(
                lab.hosts["a"].exec_prefix,
                chat_args(tmp_path, "alice", "--no-probe", "--to", "bob"),
            )
        )
        assert alice_out.next("connected", timeout=30)["path"] == path
        assert bob_out.next("connected", timeout=30)["peer"] == "alice"
        say(alice, "still there?")
        assert texts(bob_out, 1) == ["still there?"]
        say(bob, "yes")
        assert texts(alice_out, 1) == ["yes"]
        assert [item["event"] for item in bob_out.seen].count("offline") == 1
