"""The lab part of bench/bulk.py: a file between two NATed peers over real Linux NATs
(network namespaces, nftables), over the direct path and over the relay, beside one plain
TCP connection between the same networks (the lab's ceiling), lossless and with the
routers dropping 1% and 5% of UDP.

Each row is one fresh lab: two port-restricted cone NATs (direct) or two symmetric NATs
(relay: punching cannot work, everything goes through the rendezvous's TURN relay, its
per-allocation quota lifted). Both sides are ``python -m natlab.bulk`` processes in the
hosts' namespaces; MB/s is the sender's wall time from the first byte to the receiver's
SHA-256, CPU-s/GB the sender's and the receiver's CPU time together per GB moved. The TCP
row sends from host a to a sink on the server host (through a's NAT: TCP cannot enter b's
without a port forward); loss applies to UDP only, so it is shown once.

Needs root (the lab). Runs in a few minutes with the default 256 MB.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from natlab import Lab, NatKind, NatSpec
from natlab.bulk_driver import SERVER, peer_pair, run_pair, server_args
from natlab.services import rendezvous_process

SECRET = "bench bulk secret"
TCP_PORT = 5201
MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Row:
    label: str
    loss: int
    megabytes: int
    seconds: float
    cpu: float  # both sides
    intact: bool
    path: str

    @property
    def mb_per_s(self) -> float:
        return self.megabytes * MB / self.seconds / 1e6

    @property
    def cpu_per_gb(self) -> float:
        return self.cpu / (self.megabytes * MB / 1e9)


def _row(label: str, loss: int, megabytes: int, sent: dict[str, Any], got: dict[str, Any]) -> Row:
    return Row(
        label=label,
        loss=loss,
        megabytes=megabytes,
        seconds=float(sent["seconds"]),
        cpu=float(sent["cpu"]) + float(got["cpu"]),
        intact=bool(sent["intact"]) and got["bytes"] == megabytes * MB,
        path=str(sent["path"]),
    )


def peer_run(kind: NatKind, loss: int, megabytes: int, timeout: float) -> Row:
    spec = NatSpec(kind=kind, loss=loss)
    with (
        tempfile.TemporaryDirectory() as keys,
        Lab.two_nats(a=spec, b=spec) as lab,
        rendezvous_process(server_args(SECRET), lab.server.exec_prefix),
    ):
        sent, got = peer_pair(lab, Path(keys), [f"--mb={megabytes}"], timeout)
    label = "direct" if kind is NatKind.PORT_RESTRICTED_CONE else "relay"
    return _row(label, loss, megabytes, sent, got)


def tcp_run(megabytes: int, timeout: float) -> Row:
    spec = NatSpec(kind=NatKind.PORT_RESTRICTED_CONE)
    with Lab.two_nats(a=spec, b=spec) as lab:
        common = ["--timeout", str(timeout), f"--port={TCP_PORT}"]
        receiver = [*common, "--role=tcp-receiver"]
        sender = [*common, "--role=tcp-sender", f"--server={SERVER}", f"--mb={megabytes}"]
        sent, got = run_pair(lab, ("server", receiver), ("a", sender), timeout)
    return _row("tcp", 0, megabytes, sent, got)


def lab(megabytes: int, losses: Sequence[int], timeout: float = 600.0) -> list[Row]:
    """Every row, printed as it is measured (progress on stderr), then the table."""
    plan: list[tuple[str, int]] = [("tcp", 0)]
    plan += [(label, loss) for loss in losses for label in ("direct", "relay")]
    rows: list[Row] = []
    for index, (label, loss) in enumerate(plan, 1):
        print(f"  [{index}/{len(plan)}] {label} at {loss}% loss ...", file=sys.stderr, flush=True)
        if label == "tcp":
            row = tcp_run(megabytes, timeout)
        else:
            kind = NatKind.PORT_RESTRICTED_CONE if label == "direct" else NatKind.SYMMETRIC
            row = peer_run(kind, loss, megabytes, timeout)
        rows.append(row)
    print(f"lab: {megabytes} MB, two port-restricted NATs (direct) / two symmetric (relay)")
    print(f"  {'path':8} {'loss':>5} {'MB/s':>8} {'CPU-s/GB':>9}  whole")
    for row in rows:
        print(
            f"  {row.label:8} {row.loss:4}% {row.mb_per_s:8.1f} {row.cpu_per_gb:9.1f}  "
            f"{'yes' if row.intact else 'NO'}"
            + (f" (path {row.path})" if row.path != row.label else "")
        )
    return rows
