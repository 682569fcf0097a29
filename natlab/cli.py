"""`natlab` command line: bring a lab up for manual experiments."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence

import structlog

from natlab.lab import Lab
from natlab.netns import LabError
from natlab.spec import NatKind, NatSpec

KINDS = [k.value for k in NatKind]


def _spec(kind: str, args: argparse.Namespace) -> NatSpec:
    return NatSpec(
        kind=NatKind(kind),
        binding_timeout=args.binding_timeout,
        loss=args.loss,
        hairpin=args.hairpin,
        wan_firewall=not args.no_wan_firewall,
    )


def _build(args: argparse.Namespace) -> Lab:
    if args.topology == "two-nats":
        return Lab.two_nats(_spec(args.a, args), _spec(args.b, args))
    if args.topology == "same-lan":
        return Lab.same_lan(_spec(args.a, args))
    return Lab.double_nat(_spec(args.a, args), _spec(args.b, args), _spec(args.cgn, args))


def cmd_up(args: argparse.Namespace) -> int:
    stop = threading.Event()
    # SIGTERM/SIGHUP behave like Ctrl-C so `kill` also tears the lab down.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    with _build(args) as lab:
        print(json.dumps(lab.describe(), indent=None if args.compact else 2), flush=True)
        print("lab is up; Ctrl-C to tear down", file=sys.stderr, flush=True)
        try:
            while not stop.wait(3600):  # blocks on an event, woken by signals
                pass
        except KeyboardInterrupt:
            pass
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise SystemExit("natlab exec: no command given")
    # NODE may be a real namespace name or "<prefix><node>" from `natlab up`.
    return subprocess.call(["ip", "netns", "exec", args.netns, *cmd])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="natlab", description="real-kernel NAT lab")
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="build a lab, print it as JSON, keep it until Ctrl-C")
    up.add_argument(
        "--topology", choices=["two-nats", "same-lan", "double-nat"], default="two-nats"
    )
    up.add_argument(
        "--a",
        default="port-restricted-cone",
        choices=KINDS,
        help="NAT kind for host a (same-lan: the shared NAT)",
    )
    up.add_argument("--b", default="port-restricted-cone", choices=KINDS)
    up.add_argument("--cgn", default="port-restricted-cone", choices=KINDS)
    up.add_argument("--binding-timeout", type=int, default=30)
    up.add_argument("--loss", type=int, default=0)
    up.add_argument("--hairpin", action="store_true")
    up.add_argument("--no-wan-firewall", action="store_true")
    up.add_argument("--compact", action="store_true", help="print JSON on one line")
    up.set_defaults(func=cmd_up)
    ex = sub.add_parser("exec", help="run a command in a lab namespace")
    ex.add_argument("netns", help="namespace name as printed by `natlab up`")
    ex.add_argument("cmd", nargs=argparse.REMAINDER)
    ex.set_defaults(func=cmd_exec)
    demo = sub.add_parser(
        "demo",
        help="a NAT of every kind, our rendezvous server, and natprobe's verdict for each",
    )
    demo.add_argument("--no-hairpin", action="store_true", help="NATs without hairpinning")
    demo.set_defaults(func=cmd_demo)
    return p


def cmd_demo(args: argparse.Namespace) -> int:
    from natlab.demo import run_demo

    return run_demo(hairpin=not args.no_hairpin)


def main(argv: Sequence[str] | None = None) -> int:
    # stdout carries the JSON description; keep logs on stderr.
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.DEBUG if os.environ.get("NATLAB_DEBUG") else logging.INFO
        ),
    )
    args = build_parser().parse_args(argv)
    try:
        rc: int = args.func(args)
    except LabError as exc:
        print(f"natlab: {exc}", file=sys.stderr)
        return 1
    return rc
