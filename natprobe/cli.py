"""``natprobe SERVER[:PORT]``: what NAT is this host behind?"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
from collections.abc import Sequence
from typing import NoReturn

from iokit.cli_logging import configure_logging
from natprobe.errors import ArgumentError
from natprobe.probe import ProbeConfig, probe
from natprobe.reach import os_reason
from stunproto.attributes import Address

DEFAULT_PORT = 3478


def split_endpoint(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT`` or ``[IPv6]:PORT`` to host and port 1..65535 (not resolved);
    ArgumentError says what is wrong."""
    host, port_text = text, ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    if not host:
        raise ArgumentError(f"no host in {text!r}")
    try:
        port = int(port_text) if port_text else default_port
    except ValueError as exc:
        raise ArgumentError(f"bad port in {text!r}") from exc
    if not 0 < port < 65536:
        raise ArgumentError(f"port out of range (1-65535) in {text!r}")
    return host, port


def resolve_endpoint(host: str, port: int) -> Address:
    """One IPv4 (preferred) or IPv6 address for ``host``; ArgumentError if it has none."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ArgumentError(f"cannot resolve {host!r}: {exc}") from exc
    # Prefer IPv4: most NAT behaviour worth probing is IPv4's.
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    address = infos[0][4]
    return str(address[0]), int(address[1])


def resolve(text: str, default_port: int = DEFAULT_PORT) -> Address:
    """``HOST``, ``HOST:PORT`` or ``[IPv6]:PORT`` to one IPv4/IPv6 address and port."""
    return resolve_endpoint(*split_endpoint(text, default_port))


def server_endpoint(text: str) -> tuple[str, int]:
    """argparse type of a server ``HOST[:PORT]``: the port checked, the host not resolved."""
    try:
        return split_endpoint(text)
    except ArgumentError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def port_number(text: str) -> int:
    """argparse type of a local port: 0 (any) to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range (0-65535): {text}")
    return port


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, like every other argument error natprobe reports.
        self.exit(2, f"natprobe: {message} (see natprobe --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="natprobe",
        description=(
            "Find out what NAT this host is behind: public address, mapping and filtering "
            "behaviour (RFC 4787/5780), hairpinning, binding lifetime and the classic RFC "
            "3489 type. Full results need a server with RFC 5780 support (two addresses, "
            "e.g. our rendezvous with --alt-ip, or coturn with two -L)."
        ),
        epilog=(
            "Exit status: 0 for any verdict (udp-blocked: no UDP answer, but the server takes "
            "TCP connections on its port); 1 when no server answers there at all (neither UDP "
            "nor TCP) or the probe cannot run; 2 for a bad argument."
        ),
    )
    parser.add_argument(
        "server", type=server_endpoint, help="STUN server, HOST[:PORT] (default port 3478)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--second-server",
        type=server_endpoint,
        metavar="HOST[:PORT]",
        help="another STUN server: tests mapping when the first lacks RFC 5780",
    )
    parser.add_argument(
        "--lifetime",
        type=float,
        metavar="MAX_SECONDS",
        help="also measure the UDP binding lifetime, waiting at most this long",
    )
    parser.add_argument("--no-hairpin", action="store_true", help="skip the hairpinning test")
    parser.add_argument("--local-ip", help="local address to send from")
    parser.add_argument(
        "--rto",
        type=float,
        default=ProbeConfig().initial_rto,
        help="initial retransmission timeout in seconds before an RTT is measured",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging on stderr")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(verbose=args.verbose)
    try:
        return _run(args)
    except KeyboardInterrupt:
        return 130  # Ctrl-C: nothing to report, nothing to say


def _run(args: argparse.Namespace) -> int:
    try:
        server = resolve_endpoint(*args.server)
        second = resolve_endpoint(*args.second_server) if args.second_server else None
        if args.lifetime is not None and not 0 < args.lifetime <= 3600:
            raise ArgumentError("--lifetime must be between 0 and 3600 seconds")
        if args.rto <= 0:
            raise ArgumentError("--rto must be positive")
    except ArgumentError as exc:
        print(f"natprobe: {exc}", file=sys.stderr)
        return 2
    config = ProbeConfig(
        hairpin=not args.no_hairpin,
        lifetime_max=args.lifetime,
        second_server=second,
        local_ip=args.local_ip,
        initial_rto=args.rto,
    )
    where = f"{args.server[0]}:{args.server[1]}"
    try:
        report = asyncio.run(probe(server, config=config))
    except OSError as exc:
        print(f"natprobe: cannot probe {where}: {os_reason(exc)}", file=sys.stderr)
        return 1
    if report.server_unreachable is not None:  # not a verdict: no server answers there
        print(f"natprobe: no answer from {where} ({report.server_unreachable})", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        print(report.to_table())
    return 0
