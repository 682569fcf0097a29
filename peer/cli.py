"""``peer``: the peer's command line. ``peer nat`` probes the NAT from the peer's own
punching socket (the mapping that matters for punching)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

from natprobe.cli import ArgumentError, resolve
from natprobe.probe import ProbeConfig, probe, route_local_ip
from natprobe.report import NatReport
from peer.socket import PunchSocket
from stunproto.attributes import Address
from stunproto.cli_logging import configure_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="peer", description="UDP hole-punching peer.")
    commands = parser.add_subparsers(dest="command", required=True)
    nat = commands.add_parser(
        "nat", help="classify the NAT as seen from the peer's punching socket"
    )
    nat.add_argument("server", help="rendezvous/STUN server HOST[:PORT]")
    nat.add_argument("--port", type=int, default=0, help="local UDP port of the punching socket")
    nat.add_argument("--json", action="store_true", help="print one JSON object")
    nat.add_argument("--verbose", "-v", action="store_true", help="debug logging on stderr")
    return parser


async def _probe_from_punch_socket(server: Address, port: int) -> NatReport:
    local_ip = route_local_ip(server)
    punch = await PunchSocket.open((local_ip, port))
    try:
        return await probe(server, config=ProbeConfig(local_ip=local_ip), endpoint=punch.stun)
    finally:
        punch.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(verbose=args.verbose)
    try:
        server = resolve(args.server)
    except ArgumentError as exc:
        print(f"peer: {exc}", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(_probe_from_punch_socket(server, args.port))
    except OSError as exc:
        print(f"peer: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report.to_json()) if args.json else report.to_table())
    return 0
