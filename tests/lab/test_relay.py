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


def chat_over_relay(lab: Lab, tmp_path: Path, *, probe: bool = False) -> None:
    extra = [] if probe else ["--no-probe"]
    with chat_process(lab.hosts["b"].exec_prefix, chat_args(tmp_path, "bob", *extra)) as (
        bob,
        bob_out,
    ):
        bob_out.next("online", timeout=30)
        with chat_process(
            lab.hosts["a"].exec_prefix, chat_args(tmp_path, "alice", *extra, "--to", "bob")
        ) as (alice, alice_out):
            connected = alice_out.next("connected", timeout=30)
            assert connected["path"] == "relay", connected
            assert bob_out.next("connected", timeout=20)["path"] == "relay"
            assert isinstance(connected["ms"], float)
            if probe:
                # Both know their NATs are symmetric: straight to the relay, and said so.
                assert "symmetric" in str(connected.get("note")), connected
                assert connected["ms"] < 500, connected
            else:
                # Within about a second of giving up on a direct path.
                assert connected["ms"] < 2500, connected
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
        chat_over_relay(lab, tmp_path, probe=True)


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


def _block(lab: Lab, router: str, address: str) -> None:
    """Cut the router off from one internet address (both ways), nothing else: the direct
    path between the peers dies, the relay (on the server's address) keeps working."""
    node = lab.routers[router]
    script = (
        "add chain ip natlab outage { type filter hook forward priority -10 ; }\n"
        f"add rule ip natlab outage ip saddr {address} drop\n"
        f"add rule ip natlab outage ip daddr {address} drop\n"
    )
    node.run(["sh", "-c", f"printf '%s' '{script}' | nft -f -"])


def _unblock(lab: Lab, router: str) -> None:
    lab.routers[router].run(["nft", "flush", "chain", "ip", "natlab", "outage"])


def test_direct_path_dies_relay_takes_over_then_direct_again(
    lab_factory: Callable[..., Lab], tmp_path: Path
) -> None:
    spec = NatSpec(kind=NatKind.PORT_RESTRICTED_CONE)
    lab = lab_factory(Lab.two_nats, a=spec, b=spec)
    args = ["--listen", f"{SERVER}:3478", "--alt-ip", ALT, "--turn-secret", SECRET]
    with (
        rendezvous_process(args, lab.server.exec_prefix),
        chat_process(lab.hosts["b"].exec_prefix, chat_args(tmp_path, "bob", "--no-probe")) as (
            bob,
            bob_out,
        ),
    ):
        bob_out.next("online")
        with chat_process(
            lab.hosts["a"].exec_prefix, chat_args(tmp_path, "alice", "--no-probe", "--to", "bob")
        ) as (alice, alice_out):
            assert alice_out.next("connected")["path"] == "direct"
            assert bob_out.next("connected")["path"] == "direct"
            for i in range(5):
                say(alice, f"a{i}")
            assert texts(bob_out, 5) == [f"a{i}" for i in range(5)]
            # The direct path dies: a NAT reboot (its conntrack table flushed) that also
            # lost its route to the other NAT for a while.
            _block(lab, "nat_a", lab.routers["nat_b"].public_ip)
            lab.flush_conntrack("nat_a")
            for i in range(5, 10):
                say(alice, f"a{i}")
                say(bob, f"b{i}")
            assert alice_out.next("path", timeout=15)["path"] == "relay"
            assert bob_out.next("path", timeout=15)["path"] == "relay"
            assert texts(bob_out, 5, timeout=15) == [f"a{i}" for i in range(5, 10)]
            assert texts(alice_out, 5, timeout=15) == [f"b{i}" for i in range(5, 10)]
            # The direct path comes back: re-punching finds it and the chat moves back.
            _unblock(lab, "nat_a")
            for out in (alice_out, bob_out):
                event = out.next("path", timeout=40)
                while event["path"] == "relay":  # the remote on the relay may still move
                    event = out.next("path", timeout=40)
                assert event["path"] == "direct", event
            for i in range(10, 15):
                say(alice, f"a{i}")
            assert texts(bob_out, 5) == [f"a{i}" for i in range(10, 15)]
            # Exactly once, in order, across both switches: nothing else arrived.
            with pytest.raises(TimeoutError):
                bob_out.next("message", timeout=2)
            everything = [item["text"] for item in bob_out.seen if item["event"] == "message"]
            assert everything == [f"a{i}" for i in range(15)]


def test_a_peer_without_udp_chats_over_tcp_and_the_relay(
    lab_factory: Callable[..., Lab], tmp_path: Path
) -> None:
    lab = lab_factory(
        Lab.two_nats,
        a=NatSpec(kind=NatKind.UDP_BLOCKED),
        b=NatSpec(kind=NatKind.PORT_RESTRICTED_CONE),
    )
    args = ["--listen", f"{SERVER}:3478", "--alt-ip", ALT, "--turn-secret", SECRET]
    with (
        rendezvous_process(args, lab.server.exec_prefix),
        chat_process(lab.hosts["b"].exec_prefix, chat_args(tmp_path, "bob", "--no-probe")) as (
            bob,
            bob_out,
        ),
    ):
        assert bob_out.next("online")["transport"] == "udp"
        # Alice's probe finds UDP blocked, so she logs in over TCP and relays everything.
        with chat_process(
            lab.hosts["a"].exec_prefix, chat_args(tmp_path, "alice", "--to", "bob")
        ) as (alice, alice_out):
            online = alice_out.next("online", timeout=30)
            assert online["transport"] == "tcp" and online["nat_type"] == "udp-blocked", online
            assert alice_out.next("connected", timeout=20)["path"] == "relay"
            assert bob_out.next("connected", timeout=20)["path"] == "relay"
            say(alice, "from behind a firewall")
            say(bob, "hello there")
            assert texts(bob_out, 1) == ["from behind a firewall"]
            assert texts(alice_out, 1) == ["hello there"]
