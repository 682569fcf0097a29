"""When no direct path exists (symmetric NATs on both sides), the chat comes up over the
relay: the rendezvous's embedded TURN server, or coturn with the same shared secret."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from natlab import Lab, NatKind, NatSpec
from natlab.services import chat_process, rendezvous_process
from tests.interop.refclients import Coturn
from tests.lab.test_chat import ALT, SERVER, chat_args, say, texts

pytestmark = pytest.mark.lab

SECRET = "lab relay secret"
SYMMETRIC = NatSpec(kind=NatKind.SYMMETRIC)


def chat_over_relay(lab: Lab, tmp_path: Path) -> None:
    with chat_process(lab.hosts["b"].exec_prefix, chat_args(tmp_path, "bob", "--no-probe")) as (
        bob,
        bob_out,
    ):
        bob_out.next("online")
        with chat_process(
            lab.hosts["a"].exec_prefix, chat_args(tmp_path, "alice", "--no-probe", "--to", "bob")
        ) as (alice, alice_out):
            connected = alice_out.next("connected", timeout=20)
            assert connected["path"] == "relay", connected
            assert bob_out.next("connected", timeout=20)["path"] == "relay"
            # Within about a second of giving up on a direct path.
            assert isinstance(connected["ms"], float) and connected["ms"] < 2500, connected
            say(alice, "through the relay")
            say(bob, "and back")
            assert texts(bob_out, 1) == ["through the relay"]
            assert texts(alice_out, 1) == ["and back"]


def test_symmetric_pair_chats_over_the_embedded_relay(
    lab_factory: Callable[..., Lab], tmp_path: Path
) -> None:
    lab = lab_factory(Lab.two_nats, a=SYMMETRIC, b=SYMMETRIC)
    args = ["--listen", f"{SERVER}:3478", "--alt-ip", ALT, "--turn-secret", SECRET]
    with rendezvous_process(args, lab.server.exec_prefix):
        chat_over_relay(lab, tmp_path)


def test_symmetric_pair_chats_over_coturn(lab_factory: Callable[..., Lab], tmp_path: Path) -> None:
    # coturn relays on the server host's second address; the rendezvous only issues
    # credentials for it (same secret) and points the peers there.
    lab = lab_factory(Lab.two_nats, a=SYMMETRIC, b=SYMMETRIC)
    prefix = lab.server.exec_prefix
    args = [
        "--listen",
        f"{SERVER}:3478",
        "--turn-secret",
        SECRET,
        "--turn-server",
        f"{ALT}:3479",
    ]
    with (
        Coturn(ALT, SERVER, port=3479, alt_port=3490, prefix=prefix, relay_secret=SECRET),
        rendezvous_process(args, prefix),
    ):
        chat_over_relay(lab, tmp_path)
