"""natprobe versus pystun3 and coturn's turnutils_natdiscovery behind lossy real NATs.

For 0%, 10% and 30% random loss (on each NAT, both directions), builds labs with full-cone,
restricted-cone, port-restricted-cone and symmetric NATs, starts our rendezvous server on
the lab's internet, and runs every tool repeatedly from behind each NAT against that same
server. Prints, per loss rate and tool, how often the verdict was right and the median and
90th-percentile wall time of one run.

Right means: natprobe -- classic type, mapping and filtering all right; pystun3 -- classic
type right (it reports nothing else); natdiscovery -- mapping and filtering right.

Run as root from the repository: .venv/bin/python bench/natprobe_loss.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from iokit.cli_logging import configure_logging
from natlab import Lab, NatKind, NatSpec
from natlab.demo import EXPECTED
from natlab.netns import Node
from natlab.services import rendezvous_process
from tests.interop.refclients import (
    RefClientError,
    run_natdiscovery,
    run_pystun3,
)

SERVER, ALT, PORT = "203.0.113.10", "203.0.113.11", 3478
PAIRS = (
    (NatKind.FULL_CONE, NatKind.RESTRICTED_CONE),
    (NatKind.PORT_RESTRICTED_CONE, NatKind.SYMMETRIC),
)
TOOLS = ("natprobe", "pystun3", "natdiscovery")


def run_natprobe(host: Node, kind: NatKind) -> bool:
    result = host.run(
        [sys.executable, "-m", "natprobe", f"{SERVER}:{PORT}", "--json", "--no-hairpin"],
        timeout=120,
        check=False,
    )
    try:
        report = json.loads(result.stdout)
    except ValueError:
        return False
    return (report["nat_type"], report["mapping"], report["filtering"]) == EXPECTED[kind]


def run_pystun3_right(host: Node, kind: NatKind) -> bool:
    verdict = run_pystun3(host.exec_prefix, SERVER, PORT, source_ip=host.ip, timeout=120)
    return verdict.nat_type == EXPECTED[kind][0]


def run_natdiscovery_right(host: Node, kind: NatKind) -> bool:
    verdict = run_natdiscovery(host.exec_prefix, SERVER, PORT, local_ip=host.ip, timeout=120)
    return (verdict.mapping, verdict.filtering) == EXPECTED[kind][1:]


RUNNERS: dict[str, Callable[[Node, NatKind], bool]] = {
    "natprobe": run_natprobe,
    "pystun3": run_pystun3_right,
    "natdiscovery": run_natdiscovery_right,
}


def timed(tool: str, host: Node, kind: NatKind) -> tuple[str, bool, float]:
    started = time.monotonic()
    try:
        right = RUNNERS[tool](host, kind)
    except RefClientError:
        right = False
    return tool, right, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per tool per NAT kind")
    parser.add_argument("--loss", type=int, nargs="*", default=[0, 10, 30])
    args = parser.parse_args()
    configure_logging()
    # (loss, tool) -> list of (right, seconds)
    results: dict[tuple[int, str], list[tuple[bool, float]]] = defaultdict(list)
    for loss in args.loss:
        for kind_a, kind_b in PAIRS:
            print(f"loss {loss}%: {kind_a} and {kind_b} ...", file=sys.stderr, flush=True)
            specs = {"a": NatSpec(kind=kind_a, loss=loss), "b": NatSpec(kind=kind_b, loss=loss)}
            with (
                Lab.two_nats(a=specs["a"], b=specs["b"]) as lab,
                rendezvous_process(
                    ["--listen", f"{SERVER}:{PORT}", "--alt-ip", ALT, "--rate", "10000"],
                    lab.server.exec_prefix,
                ),
                ThreadPoolExecutor(6) as pool,
            ):
                for _ in range(args.runs):
                    jobs = [
                        pool.submit(timed, tool, lab.hosts[name], spec.kind)
                        for name, spec in specs.items()
                        for tool in TOOLS
                    ]
                    for job in jobs:
                        tool, right, seconds = job.result()
                        results[(loss, tool)].append((right, seconds))
    print(f"\nnatprobe vs reference clients, {args.runs} runs per NAT kind, 4 NAT kinds")
    print(f"{'loss':>5}  {'tool':<13} {'right':>9}  {'median s':>8}  {'p90 s':>6}")
    for loss in args.loss:
        for tool in TOOLS:
            samples = results[(loss, tool)]
            right = sum(ok for ok, _ in samples)
            times = sorted(seconds for _, seconds in samples)
            p90 = times[min(len(times) - 1, int(0.9 * len(times)))]
            print(
                f"{loss:>4}%  {tool:<13} {right:>4}/{len(samples):<4}"
                f"  {statistics.median(times):>8.2f}  {p90:>6.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
