"""Bulk transfers between two NATed peers through the library on real NATs: 256 MB on a
stream over the direct path and over the relay arrives whole (the receiver's SHA-256
matches the sender's); 20,000 messages and a 50 MB message arrive exactly once and in
order, lossless and at 10% loss."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from natlab import Lab, NatKind, NatSpec
from natlab.bulk_driver import peer_pair, server_args
from natlab.services import rendezvous_process

pytestmark = pytest.mark.lab

MEGABYTES = int(os.environ.get("LAB_BULK_MB", "256"))
SERVER_ARGS = server_args("lab bulk secret")


@pytest.mark.parametrize(
    ("kind", "path"),
    [(NatKind.PORT_RESTRICTED_CONE, "direct"), (NatKind.SYMMETRIC, "relay")],
    ids=["direct", "relay"],
)
def test_256_megabytes_arrive_whole(
    lab_factory: Callable[..., Lab], tmp_path: Path, kind: NatKind, path: str
) -> None:
    lab = lab_factory(Lab.two_nats, a=NatSpec(kind=kind), b=NatSpec(kind=kind))
    with rendezvous_process(SERVER_ARGS, lab.server.exec_prefix):
        sent, got = peer_pair(lab, tmp_path, [f"--mb={MEGABYTES}"], timeout=240)
    assert sent["intact"] is True, sent
    assert got["bytes"] == sent["bytes"] == MEGABYTES * 1024 * 1024
    assert sent["path"] == got["path"] == path


@pytest.mark.parametrize("loss", [0, 10], ids=["lossless", "10%-loss"])
def test_messages_arrive_once_and_in_order(
    lab_factory: Callable[..., Lab], tmp_path: Path, loss: int
) -> None:
    # 10% on each router, each way: about 19% of the packets lost between the peers.
    spec = NatSpec(kind=NatKind.PORT_RESTRICTED_CONE, loss=loss)
    lab = lab_factory(Lab.two_nats, a=spec, b=spec)
    with rendezvous_process(SERVER_ARGS, lab.server.exec_prefix):
        sent, got = peer_pair(lab, tmp_path, ["--messages=20000", "--mb=50"], timeout=240)
    assert got["messages"] == 20_000 and got["in_order"] is True, got
    assert got["bytes"] == sent["bytes"] == 50 * 1024 * 1024
    assert sent["intact"] is True, sent
    assert sent["path"] == got["path"] == "direct"
