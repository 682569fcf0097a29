"""``peer``: the peer's command line. ``peer chat`` talks to another peer over a punched,
encrypted path; ``peer send``/``receive`` move files; ``peer nat`` probes the NAT from the
peer's own punching socket (the mapping that matters for punching).

Every failure is one line on stderr, ``peer: ...``, and a non-zero exit (2 for a bad
argument or file, 1 for what went wrong on the way). Ctrl-C and SIGTERM cancel the
command, so the peer closes in order (whoever it is connected to is told at once), then
it exits 130 or 143 without a word; ``peer receive`` takes either as its normal end and
exits 0 (peer.transfer_cli).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, NoReturn

from iokit.cli_logging import configure_logging
from natprobe.cli import port_number, resolve_endpoint, server_endpoint
from natprobe.errors import ArgumentError
from natprobe.probe import ProbeConfig, probe, route_local_ip
from natprobe.reach import os_reason
from natprobe.report import NatReport
from peer.adapters.peer import PeerConfig
from peer.adapters.punch_socket import PunchSocket
from peer.chat import ChatOptions, run_chat
from peer.errors import PeerError, ServerUnreachable
from peer.identity import Identity, IdentityError, load_or_create
from peer.known_peers import KnownPeers, KnownPeersError
from peer.pins_cli import forget_target, run_pins, server_key_arg
from peer.startup import Transport
from peer.transfer_cli import PeerSettings, ReceiveOptions, SendOptions, run_receive, run_send
from peer.tunnel.specs import TunnelSpecError
from peer.tunnel_cli import COMMANDS as TUNNEL_COMMANDS
from peer.tunnel_cli import add_tunnel_commands, run_tunnel, tunnel_options
from rvproto.names import InvalidName, canonical_name
from stunproto.attributes import Address

SERVER_KEY_HELP = (
    "the rendezvous's key as `rendezvous key` prints it (default: pinned at first login)"
)
INTERRUPTED = 128 + signal.SIGINT  # 130: Ctrl-C (SIGTERM: 143, 128 + its number too)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, like every other error peer reports (subcommands use this class too).
        self.exit(2, f"peer: {message} (see {self.prog} --help)\n")


def peer_name(text: str) -> str:
    """argparse type of a peer name: its canonical form ("Alice" is "alice",
    rvproto.names), what the rendezvous accepts and a pin file holds."""
    try:
        return canonical_name(text)
    except InvalidName as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds(minimum: float, *, inclusive: bool) -> Callable[[str], float]:
    def seconds(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
        if math.isnan(value) or not (value >= minimum if inclusive else value > minimum):
            bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"
            raise argparse.ArgumentTypeError(f"must be {bound} seconds, not {text}")
        return value

    seconds.__name__ = "seconds"
    return seconds


POSITIVE_SECONDS = _seconds(0, inclusive=False)
SECONDS = _seconds(0, inclusive=True)
PORT_HELP = "local UDP port of the punching socket, 0 to 65535 (default 0: any)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="peer",
        description="UDP hole-punching peer.",
        epilog="Exit status: 0 done; 1 failed (one line on stderr says why); 2 bad argument "
        "or file; 130 after Ctrl-C, 143 after SIGTERM (connections closed first, the other "
        "side told); peer receive exits 0 on either.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    nat = commands.add_parser(
        "nat", help="classify the NAT as seen from the peer's punching socket"
    )
    nat.add_argument("server", type=server_endpoint, help="rendezvous/STUN server HOST[:PORT]")
    nat.add_argument("--port", type=port_number, default=0, help=PORT_HELP)
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
    chat.add_argument(
        "--server", required=True, type=server_endpoint, help="rendezvous server HOST[:PORT]"
    )
    chat.add_argument(
        "--name", required=True, type=peer_name, help="your peer name (the first key owns it)"
    )
    chat.add_argument(
        "--to", type=peer_name, help="peer to connect to (default: wait for a connection)"
    )
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
    chat.add_argument("--server-key", type=server_key_arg, help=SERVER_KEY_HELP)
    chat.add_argument("--json", action="store_true", help="one JSON object per line on stdout")
    chat.add_argument("--port", type=port_number, default=0, help=PORT_HELP)
    chat.add_argument(
        "--keepalive",
        type=SECONDS,
        help="keepalive interval in seconds (default: half the measured binding lifetime, else 15)",
    )
    chat.add_argument(
        "--probe-lifetime",
        type=POSITIVE_SECONDS,
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
        "--timeout", type=POSITIVE_SECONDS, default=30.0, help="seconds to wait for the connection"
    )
    chat.add_argument("--verbose", "-v", action="store_true", help="debug logging on stderr")

    keys = commands.add_parser("keys", help="list pinned peer keys with their fingerprints")
    forget = commands.add_parser("forget", help="remove the pin of a peer (its next key is new)")
    forget.add_argument(
        "name", type=forget_target, help="the peer whose pins go (@HOST:PORT: a server's)"
    )
    for pins in (keys, forget):
        pins.add_argument("--known-peers", type=Path, default=default_config_dir() / "known_peers")
        pins.add_argument("--json", action="store_true", help="one JSON object per line")
        pins.add_argument("--verbose", "-v", action="store_true", help=argparse.SUPPRESS)

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
    send.add_argument("--to", required=True, type=peer_name, help="the receiving peer's name")
    send.add_argument(
        "--timeout", type=POSITIVE_SECONDS, default=30.0, help="seconds to wait for the connection"
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
    receive.add_argument(
        "--from", dest="from_peer", type=peer_name, help="accept files from this peer only"
    )
    _add_transfer_peer_options(receive)
    add_tunnel_commands(commands, _add_transfer_peer_options, peer_name)
    return parser


def _add_transfer_peer_options(parser: argparse.ArgumentParser) -> None:
    """The login and path options of ``send`` and ``receive`` (as ``chat`` has them)."""
    parser.add_argument(
        "--server", required=True, type=server_endpoint, help="rendezvous server HOST[:PORT]"
    )
    parser.add_argument(
        "--name", required=True, type=peer_name, help="your peer name (the first key owns it)"
    )
    config = default_config_dir()
    parser.add_argument("--identity", type=Path, default=config / "identity.pem")
    parser.add_argument("--known-peers", type=Path, default=config / "known_peers")
    parser.add_argument("--server-key", type=server_key_arg, help=SERVER_KEY_HELP)
    parser.add_argument("--json", action="store_true", help="one JSON object per line on stdout")
    parser.add_argument("--port", type=port_number, default=0, help=PORT_HELP)
    parser.add_argument("--keepalive", type=SECONDS, help="keepalive interval in seconds")
    parser.add_argument("--probe-lifetime", type=POSITIVE_SECONDS, metavar="MAX_SECONDS")
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


def _load_files(args: argparse.Namespace) -> tuple[Identity, KnownPeers]:
    """The identity and the pins, or a one-line error naming the option (exit 2)."""
    try:
        identity = load_or_create(args.identity)
    except IdentityError as exc:
        raise _BadFile(f"--identity {exc}") from None
    try:
        return identity, KnownPeers(args.known_peers)
    except KnownPeersError as exc:
        raise _BadFile(f"--known-peers {exc}") from None


class _BadFile(Exception):
    pass


def _peer_config(args: argparse.Namespace) -> PeerConfig:
    return PeerConfig(
        local_port=args.port,
        probe_nat=not args.no_probe,
        probe_lifetime=args.probe_lifetime,
        keepalive=args.keepalive,
        transport=Transport(args.transport),
        server_key=args.server_key,
    )


def _chat(args: argparse.Namespace, server: Address) -> Coroutine[Any, Any, int]:
    identity, known = _load_files(args)
    options = ChatOptions(
        server=server,
        name=args.name,
        to=args.to,
        identity=identity,
        known_peers=known,
        json=args.json,
        peer_config=_peer_config(args),
        connect_timeout=args.timeout,
    )
    return run_chat(options)


def _settings(args: argparse.Namespace, server: Address) -> PeerSettings:
    identity, known = _load_files(args)
    return PeerSettings(
        server=server,
        name=args.name,
        identity=identity,
        known_peers=known,
        peer_config=_peer_config(args),
    )


def _transfer(args: argparse.Namespace, server: Address) -> Coroutine[Any, Any, int]:
    settings = _settings(args, server)
    if args.command in TUNNEL_COMMANDS:
        return run_tunnel(tunnel_options(args, settings))
    if args.command == "send":
        files = tuple(args.files)
        sending = SendOptions(
            peer=settings, to=args.to, files=files, json=args.json, connect_timeout=args.timeout
        )
        return run_send(sending)
    receiving = ReceiveOptions(
        peer=settings, directory=args.dir, from_peer=args.from_peer, json=args.json
    )
    return run_receive(receiving)  # cancelled (SIGINT, SIGTERM): stopped, and exits 0


async def _nat(args: argparse.Namespace, server: Address) -> int:
    local_ip = route_local_ip(server)
    punch = await PunchSocket.open((local_ip, args.port))
    try:
        config = ProbeConfig(local_ip=local_ip)
        report: NatReport = await probe(server, config=config, endpoint=punch.stun)
    finally:
        punch.close()
    if report.server_unreachable is not None:
        raise ServerUnreachable(server, report.server_unreachable)
    print(json.dumps(report.to_json()) if args.json else report.to_table())
    return 0


def run_until_signalled(command: Coroutine[Any, Any, int]) -> int:
    """Run a command to its exit status. SIGINT and SIGTERM cancel it: its ``async with
    Peer`` closes the connections (telling the other side at once) on the way out, and
    the status is 130 or 143, with no traceback."""
    try:
        return asyncio.run(_cancelled_by_signals(command))
    except KeyboardInterrupt:  # before the handlers were in place, or after
        return INTERRUPTED


async def _cancelled_by_signals(command: Coroutine[Any, Any, int]) -> int:
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(command)
    received: list[int] = []

    def cancel(signum: int) -> None:
        received.append(signum)
        task.cancel()

    handled = (signal.SIGINT, signal.SIGTERM)
    for signum in handled:
        loop.add_signal_handler(signum, cancel, signum)
    try:
        # A command that takes being stopped as its normal end (peer receive) returns its
        # own status; the others end cancelled.
        return await task
    except asyncio.CancelledError:
        if not received:
            raise
        return 128 + received[0]
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The commands print their own status lines; the library's info logs (introduced,
    # online) would only repeat them: warnings and up, unless --verbose.
    configure_logging(verbose=args.verbose, level=logging.WARNING)
    try:
        return _run(args)
    except KeyboardInterrupt:  # (resolving a name, say: before the loop runs)
        return INTERRUPTED


def _run(args: argparse.Namespace) -> int:
    if args.command in ("keys", "forget"):
        return run_pins(args)
    try:
        server = resolve_endpoint(*args.server)
        if args.command == "chat":
            command = _chat(args, server)
        elif args.command in ("send", "receive", *TUNNEL_COMMANDS):
            command = _transfer(args, server)
        else:
            command = _nat(args, server)
    except (ArgumentError, _BadFile, TunnelSpecError) as exc:
        print(f"peer: {exc}", file=sys.stderr)
        return 2
    try:
        return run_until_signalled(command)
    except PeerError as exc:  # (chat, send and receive say theirs themselves)
        print(f"peer: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the network itself (no route to the server, ...)
        print(f"peer: {server[0]}:{server[1]}: {os_reason(exc)}", file=sys.stderr)
        return 1
