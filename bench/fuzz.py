"""Fuzzing every parser and sans-I/O handler that takes bytes from the network: random
inputs and mutations of valid ones (bit flips, byte changes, cuts, insertions, repeated or
dropped attributes), re-sealed with a valid MESSAGE-INTEGRITY where the target checks one,
and sealed with the peer's real channel key for the session, so that the code behind
authentication is reached. A crash is any exception other than the one decode error a
target documents (and, for the rendezvous core, which contains every exception itself,
any datagram it counted as failed). Targets: bench/fuzz_server.py, bench/fuzz_peer.py.

python bench/fuzz.py                      # 1,000,000 inputs per target
python bench/fuzz.py --count 20000 --seed 7 --target stun --target transport
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import structlog
from fuzz_peer import HttpHost, Session, Socks, Transport, TunnelWire, TurnClientTarget
from fuzz_server import Core, Framing, RvParse, StunParse
from fuzzlib import Target

TARGETS: dict[str, Callable[[random.Random], Target]] = {
    t.name: t
    for t in (
        StunParse,
        RvParse,
        Framing,
        Core,
        TurnClientTarget,
        Transport,
        Session,
        TunnelWire,
        Socks,
        HttpHost,
    )
}


def fuzz(target: Target, count: int) -> tuple[int, list[str]]:
    """Feed ``count`` inputs; (crashes, the first few tracebacks)."""
    crashes, shown = 0, []
    for _ in range(count):
        data = target.input()
        try:
            target.feed(data)
        except target.expected:
            pass
        except Exception:
            crashes += 1
            if len(shown) < 3:
                shown.append(f"input {data[:64].hex()}...\n{traceback.format_exc()}")
    return crashes + target.failures(), shown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000, help="inputs per target")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--target", action="append", choices=sorted(TARGETS))
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    # Handlers log what they refuse; a million refusals are not the measurement.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    total = 0
    print(f"fuzz: {args.count:,} inputs per target, seed {args.seed}")
    for name in args.target or list(TARGETS):
        target = TARGETS[name](random.Random(args.seed))
        started = time.process_time()
        crashes, shown = fuzz(target, args.count)
        elapsed = max(time.process_time() - started, 1e-9)
        print(f"  {name:18} {args.count / elapsed:10,.0f} inputs/s  crashes: {crashes}")
        for text in shown:
            print(text, file=sys.stderr)
        total += crashes
    return 1 if total else 0


if __name__ == "__main__":
    raise SystemExit(main())
