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
from peer.transfer_cli import PeerSettings, ReceiveOptions, SendOptions, run_receive, run_send
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

    send = commands.add_parser(
        "send",
        help="send files to another peer (exit 0 only when every file arrived whole)",
        description=(
            "Log in, connect to --to and send each FILE on its own stream; the receiver "
            "checks size and SHA-256 and keeps the file only whole. A progress bar on a "
            "terminal, or --json lines."
        ),
    )
    send.add_argument("files", nargs="+", type=Path, metavar="FILE", help="files to send")
    send.add_argument("--to", required=True, help="the receiving peer's name")
    send.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for the connection"
    )
    _add_transfer_peer_options(send)
    receive = commands.add_parser(
        "receive",
        help="receive files from other peers until stopped",
        description=(
            "Log in and save the files peers send into --dir, each only whole and verified "
            "(an existing NAME is kept: the new file becomes 'NAME (1)'). Runs until "
            "interrupted."
        ),
    )
    receive.add_argument(
        "--dir", type=Path, default=Path("."), help="where to save (default: current directory)"
    )
    receive.add_argument("--from", dest="from_peer", help="accept files from this peer only")
    _add_transfer_peer_options(receive)
    return parser


def _add_transfer_peer_options(parser: argparse.ArgumentParser) -> None:
    """The login and path options of ``send`` and ``receive`` (as ``chat`` has them)."""
    parser.add_argument("--server", required=True, help="rendezvous server HOST[:PORT]")
    parser.add_argument("--name", required=True, help="your peer name (the first key owns it)")
    config = default_config_dir()
    parser.add_argument("--identity", type=Path, default=config / "identity.pem")
    parser.add_argument("--known-peers", type=Path, default=config / "known_peers")
    parser.add_argument("--json", action="store_true", help="one JSON object per line on stdout")
    parser.add_argument("--port", type=int, default=0, help="local UDP port of the punching socket")
    parser.add_argument("--keepalive", type=float, help="keepalive interval in seconds")
    parser.add_argument("--probe-lifetime", type=float, metavar="MAX_SECONDS")
    parser.add_argument("--no-probe", action="store_true", help="skip NAT classification")
    parser.add_argument(
        "--transport",
        choices=[str(transport) for transport in Transport],
        default=str(Transport.AUTO),
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging on stderr")


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


def _transfer(args: argparse.Namespace, server: Address) -> int:
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
    settings = PeerSettings(
        server=server, name=args.name, identity=identity, known_peers=known, peer_config=config
    )
    try:
        if args.command == "send":
            files = tuple(args.files)
            sending = SendOptions(
                peer=settings, to=args.to, files=files, json=args.json, connect_timeout=args.timeout
            )
            return asyncio.run(run_send(sending))
        receiving = ReceiveOptions(
            peer=settings, directory=args.dir, from_peer=args.from_peer, json=args.json
        )
        return asyncio.run(run_receive(receiving))  # stops on SIGINT/SIGTERM by itself
    except KeyboardInterrupt:
        print("peer: interrupted", file=sys.stderr)
        return 130


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
    if args.command in ("send", "receive"):
        return _transfer(args, server)
    try:
        report = asyncio.run(_probe_from_punch_socket(server, args.port))
    except OSError as exc:
        print(f"peer: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report.to_json()) if args.json else report.to_table())
    return 0
