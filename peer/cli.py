"""``peer``: the peer's command line. ``peer chat`` talks to another peer over a punched,
encrypted path; ``peer nat`` probes the NAT from the peer's own punching socket (the
mapping that matters for punching)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from iokit.cli_logging import configure_logging
from natprobe.cli import resolve
from natprobe.errors import ArgumentError
from natprobe.probe import ProbeConfig, probe, route_local_ip
from natprobe.report import NatReport
from peer.adapters.peer import PeerConfig
from peer.adapters.punch_socket import PunchSocket
from peer.chat import ChatOptions, run_chat
from peer.identity import IdentityError, load_or_create
from peer.known_peers import KnownPeers, KnownPeersError
from peer.startup import Transport
from stunproto.attributes import Address


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

    chat = commands.add_parser(
        "chat",
        help="chat with another peer over a punched, encrypted UDP path",
        description=(
            "Log in to the rendezvous server, then connect to --to (or wait for whoever "
            "connects). Each stdin line is one message; received messages print as "
            "'NAME: text'; status lines go to stderr. On end of input, pending messages "
            "are delivered and it exits 0."
        ),
    )
    chat.add_argument("--server", required=True, help="rendezvous server HOST[:PORT]")
    chat.add_argument("--name", required=True, help="your peer name (the first key owns it)")
    chat.add_argument("--to", help="peer to connect to (default: wait for a connection)")
    chat.add_argument(
        "--identity",
        type=Path,
        default=default_config_dir() / "identity.pem",
        help="Ed25519 identity key file, created 0600 on first run (default %(default)s)",
    )
    chat.add_argument(
        "--known-peers",
        type=Path,
        default=default_config_dir() / "known_peers",
        help="pinned peer keys; a changed key is refused (default %(default)s)",
    )
    chat.add_argument("--json", action="store_true", help="one JSON object per line on stdout")
    chat.add_argument("--port", type=int, default=0, help="local UDP port of the punching socket")
    chat.add_argument(
        "--keepalive",
        type=float,
        help="keepalive interval in seconds (default: half the measured binding lifetime, else 15)",
    )
    chat.add_argument(
        "--probe-lifetime",
        type=float,
        metavar="MAX_SECONDS",
        help="measure the NAT binding lifetime first (up to this long) to pace keepalives",
    )
    chat.add_argument(
        "--no-probe", action="store_true", help="skip NAT classification before logging in"
    )
    chat.add_argument(
        "--transport",
        choices=[str(transport) for transport in Transport],
        default=str(Transport.AUTO),
        help="how to reach the rendezvous: auto tries UDP and falls back to TCP, relaying "
        "everything, when UDP gets no answer (default %(default)s)",
    )
    chat.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for the connection"
    )
    chat.add_argument("--verbose", "-v", action="store_true", help="debug logging on stderr")
    return parser


def default_config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "holepunch"


def _chat(args: argparse.Namespace, server: Address) -> int:
    try:
        identity = load_or_create(args.identity)
        known = KnownPeers(args.known_peers)
    except (IdentityError, KnownPeersError, OSError) as exc:
        print(f"peer: {exc}", file=sys.stderr)
        return 2
    config = PeerConfig(
        local_port=args.port,
        probe_nat=not args.no_probe,
        probe_lifetime=args.probe_lifetime,
        keepalive=args.keepalive,
        transport=Transport(args.transport),
    )
    options = ChatOptions(
        server=server,
        name=args.name,
        to=args.to,
        identity=identity,
        known_peers=known,
        json=args.json,
        peer_config=config,
        connect_timeout=args.timeout,
    )
    return asyncio.run(run_chat(options))


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
    if args.command == "chat":
        return _chat(args, server)
    try:
        report = asyncio.run(_probe_from_punch_socket(server, args.port))
    except OSError as exc:
        print(f"peer: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report.to_json()) if args.json else report.to_table())
    return 0
