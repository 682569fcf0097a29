"""Symmetric NAT (random ports) against a port-restricted cone, in the lab: how often the
birthday trick gets a direct path, and how fast; the relay otherwise.

Each attempt starts two fresh `peer chat` processes (they probe their NATs, which is how
they learn that this pair needs the birthday trick), connects, and records the path and the
time from the introduction to a proven path. Half the attempts have the symmetric side
initiate, half the other side.

Run as root from the repository: .venv/bin/python bench/hard_nat.py [--attempts 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from iokit.cli_logging import configure_logging
from natlab import Lab, NatKind, NatSpec
from natlab.services import chat_args, chat_process, rendezvous_process

SERVER, ALT = "203.0.113.10", "203.0.113.11"


def args_for(tmp: Path, name: str, *extra: str) -> list[str]:
    return chat_args(SERVER, tmp, name, *extra)


def attempt(lab: Lab, tmp: Path, initiator: str, responder: str) -> tuple[str, float]:
    with chat_process(lab.hosts[responder].exec_prefix, args_for(tmp, responder)) as (_, r_out):
        r_out.next("online", timeout=30)
        with chat_process(
            lab.hosts[initiator].exec_prefix, args_for(tmp, initiator, "--to", responder)
        ) as (_, i_out):
            connected = i_out.next("connected", timeout=30)
            return str(connected["path"]), float(str(connected["ms"]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=20)
    args = parser.parse_args()
    configure_logging()
    results: list[tuple[str, str, float]] = []  # (who initiated, path, ms)
    spec_a, spec_b = NatSpec(kind=NatKind.SYMMETRIC), NatSpec(kind=NatKind.PORT_RESTRICTED_CONE)
    with (
        tempfile.TemporaryDirectory() as tmp,
        Lab.two_nats(a=spec_a, b=spec_b) as lab,
        rendezvous_process(
            ["--listen", f"{SERVER}:3478", "--alt-ip", ALT, "--turn-secret", "bench"],
            lab.server.exec_prefix,
        ),
    ):
        for n in range(args.attempts):
            initiator, responder = ("a", "b") if n % 2 == 0 else ("b", "a")
            path, ms = attempt(lab, Path(tmp), initiator, responder)
            who = "symmetric" if initiator == "a" else "port-restricted"
            results.append((who, path, ms))
            print(f"attempt {n + 1:2}: {who:>15} initiates: {path:6} {ms:8.1f} ms", flush=True)
    direct = [ms for _, path, ms in results if path == "direct"]
    print(
        f"\nsymmetric vs port-restricted cone, {len(results)} attempts: "
        f"direct {len(direct)}/{len(results)}, relay {len(results) - len(direct)}"
    )
    if direct:
        print(
            f"time to a proven direct path: median {statistics.median(direct):.1f} ms, "
            f"max {max(direct):.1f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
