"""``rendezvous``: the public service: STUN (with RFC 5780 support) and the rendezvous
protocol (login, registration, introductions with a punch schedule) on one socket."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import structlog

from iokit.cli_logging import configure_logging
from rendezvous import server_key
from rendezvous.adapters.server import RendezvousServer
from rendezvous.binding import StunServiceConfig
from rendezvous.errors import ConfigError
from rendezvous.fd_limit import raise_fd_limit
from rendezvous.gateway import (
    Publishing,
    add_publish_arguments,
    gateway_beside,
    publishing_from,
    reserve_gateway_name,
)
from rendezvous.introductions import RendezvousConfig
from rendezvous.quotas import QuotaConfig
from rendezvous.ratelimit import RateLimit
from rendezvous.registry import DEFAULT_NAME_TTL, NameRegistry, RegistryError
from rendezvous.turn_config import DEFAULT_DENIED_PEERS, TurnConfig
from stunproto.attributes import Address

DEFAULT_PORT = 3478


def parse_endpoint(text: str, default_port: int = DEFAULT_PORT) -> Address:
    """``IP``, ``IP:PORT`` or ``[IPv6]:PORT``."""
    host, port = text, default_port
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            port = int(rest.removeprefix(":"))
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = int(port_text)
    ipaddress.ip_address(host)
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range: {port}")
    return host, port


def _endpoint_arg(text: str) -> Address:
    try:
        return parse_endpoint(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an IP[:PORT]: {text!r} ({exc})") from exc


def _ip_arg(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an IP address: {text!r}") from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rendezvous",
        description=(
            "Public rendezvous service. Serves STUN Binding (RFC 8489/5389, RFC 3489 "
            "compatible) and, with --alt-ip, RFC 5780 NAT behaviour discovery on four "
            "sockets: primary and alternate IP, each with primary and alternate port."
        ),
    )
    parser.add_argument(
        "--listen",
        type=_endpoint_arg,
        default=("0.0.0.0", DEFAULT_PORT),
        metavar="IP:PORT",
        help="primary address (default 0.0.0.0:3478; give a concrete IP with --alt-ip)",
    )
    parser.add_argument(
        "--alt-ip",
        type=_ip_arg,
        metavar="IP",
        help="second IP of this host: enables CHANGE-REQUEST and OTHER-ADDRESS (RFC 5780)",
    )
    parser.add_argument(
        "--alt-port",
        type=int,
        metavar="PORT",
        help="alternate port (default: primary port + 1, as in RFC 3489)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=RateLimit().rate,
        help="requests per second allowed per source IP (default %(default)s)",
    )
    parser.add_argument(
        "--burst",
        type=float,
        default=RateLimit().burst,
        help="burst size of the per-source limit (default %(default)s)",
    )
    parser.add_argument(
        "--new-names-per-hour",
        type=float,
        default=QuotaConfig().new_names_per_hour,
        help="new names one source (IPv4 address, IPv6 /64) may create per hour, after a "
        f"burst of {QuotaConfig().new_names_burst} (default %(default)s)",
    )
    parser.add_argument(
        "--introductions-per-second",
        type=float,
        default=QuotaConfig().introductions_per_second,
        help="introductions to one peer per second, after a burst of "
        f"{QuotaConfig().introductions_burst} (default %(default)s)",
    )
    parser.add_argument(
        "--name-ttl-days",
        type=float,
        default=DEFAULT_NAME_TTL / 86400,
        help="days without a login after which a name is free again (default %(default)g)",
    )
    parser.add_argument("--software", help="SOFTWARE attribute to put in responses")
    parser.add_argument(
        "--db",
        default=str(default_db_path()),
        metavar="PATH",
        help="SQLite file recording which key owns which peer name; ':memory:' keeps it "
        "in memory only (default %(default)s)",
    )
    parser.add_argument(
        "--key-file",
        type=Path,
        default=default_key_path(),
        metavar="PATH",
        help="the server's long-term key, created 0600 on first start; peers pin it "
        "(`rendezvous key` prints it) (default %(default)s)",
    )
    parser.add_argument(
        "--registration-lifetime",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="a peer is offline this long after its last refresh (default %(default)s)",
    )
    parser.add_argument(
        "--max-peers",
        type=int,
        default=100_000,
        help="most registrations held at once (default %(default)s)",
    )
    relay = parser.add_argument_group(
        "relay",
        "The embedded TURN relay (RFC 8656, UDP) on the same socket, the fallback when "
        "punching cannot work. Logged-in peers get short-lived TURN REST credentials "
        "(coturn's use-auth-secret scheme), so coturn with the same secret can stand in.",
    )
    relay.add_argument(
        "--turn-secret",
        metavar="SECRET",
        help="shared secret for TURN credentials; enables the relay (also $RENDEZVOUS_TURN_SECRET)",
    )
    relay.add_argument(
        "--turn-server",
        type=_endpoint_arg,
        metavar="IP:PORT",
        help="advertise an external relay (e.g. coturn with the same secret) instead of "
        "running the embedded one",
    )
    relay.add_argument("--turn-realm", default="holepunch", help="TURN realm (%(default)s)")
    relay.add_argument(
        "--turn-relay-ip", type=_ip_arg, help="address for relay sockets (default: --listen IP)"
    )
    relay.add_argument(
        "--turn-ports",
        default="49152-65535",
        metavar="MIN-MAX",
        help="relay port range (default %(default)s)",
    )
    relay.add_argument(
        "--turn-bandwidth",
        type=float,
        default=1_000_000.0,
        metavar="BYTES_PER_S",
        help="relay bandwidth per allocation (default %(default)s)",
    )
    relay.add_argument(
        "--turn-allow-private-peers",
        action="store_true",
        help="relay to loopback and private networks too (refused by default, so that "
        "strangers cannot reach services behind the relay; for tests and benchmarks)",
    )
    relay.add_argument(
        "--turn-max-allocations",
        type=int,
        default=1000,
        help="relay allocations held at once (default %(default)s)",
    )
    add_publish_arguments(parser)
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    parser.add_argument("--json-logs", action="store_true", default=None, help="force JSON logs")
    parser.add_argument(
        "--event-loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="uvloop (installed by default where it exists), asyncio's own loop, or auto: "
        "uvloop if importable (default %(default)s)",
    )
    parser.add_argument(
        "--no-uvloop",
        dest="event_loop",
        action="store_const",
        const="asyncio",
        help="the same as --event-loop asyncio",
    )
    return parser


def _loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop to run on; raises ImportError for ``uvloop`` without uvloop."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise
        return None
    return uvloop.new_event_loop


def _state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "holepunch"


def default_db_path() -> Path:
    return _state_dir() / "rendezvous.sqlite"


def default_key_path() -> Path:
    return _state_dir() / "server_key.pem"


def key_main(argv: Sequence[str]) -> int:
    """``rendezvous key``: print the server's public key (creating it on first use), the
    value peers give as ``--server-key``."""
    parser = argparse.ArgumentParser(
        prog="rendezvous key",
        description="Print the server's public key and fingerprint, creating the key file "
        "(0600) if there is none. Give the key to peers as --server-key, so that their "
        "first login cannot be intercepted.",
    )
    parser.add_argument("--key-file", type=Path, default=default_key_path(), metavar="PATH")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    args = parser.parse_args(argv)
    try:
        private = server_key.load_or_create(args.key_file)
    except ConfigError as exc:
        print(f"rendezvous: {exc}", file=sys.stderr)
        return 1
    public, print_ = server_key.public_text(private), server_key.fingerprint(private)
    if args.json:
        print(json.dumps({"server_key": public, "fingerprint": print_, "file": str(args.key_file)}))
    else:
        print(f"server key {public} ({print_}) in {args.key_file}")
    return 0


async def _serve(
    config: RendezvousConfig, db: str, turn: TurnConfig | None, ttl_days: float, pub: Publishing
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if db != ":memory:":
        Path(db).parent.mkdir(parents=True, exist_ok=True)
    registry = NameRegistry(db, name_ttl=ttl_days * 86400)
    if config.server_key is not None:  # (what peers pin, or take as --server-key)
        structlog.get_logger().info(
            "server_key",
            key=server_key.public_text(config.server_key),
            fingerprint=server_key.fingerprint(config.server_key),
        )
    try:
        reserve_gateway_name(registry, pub)
        async with (
            RendezvousServer(config, registry, turn=turn),
            gateway_beside(pub, config.stun.primary, config.server_key),
        ):
            await stop.wait()
    finally:
        registry.close()
    structlog.get_logger().info("stopped")


def configs_from(args: argparse.Namespace) -> tuple[RendezvousConfig, TurnConfig | None]:
    """The server's settings from the parsed flags; ConfigError says what cannot work."""
    host, _ = args.listen
    if args.alt_ip is not None and ipaddress.ip_address(host).is_unspecified:
        raise ConfigError("--alt-ip needs a concrete --listen IP")
    secret_text = args.turn_secret or os.environ.get("RENDEZVOUS_TURN_SECRET")
    secret = secret_text.encode() if secret_text else None
    turn: TurnConfig | None = None
    if secret is not None and args.turn_server is None:
        relay_ip = args.turn_relay_ip or host
        if ipaddress.ip_address(relay_ip).is_unspecified:
            raise ConfigError("the relay needs --turn-relay-ip or a concrete --listen IP")
        try:
            low, high = (int(part) for part in args.turn_ports.split("-"))
            turn = TurnConfig(
                realm=args.turn_realm,
                shared_secret=secret,
                relay_ip=relay_ip,
                relay_ports=range(low, high + 1),
                bandwidth=args.turn_bandwidth,
                max_allocations=args.turn_max_allocations,
                denied_peers=() if args.turn_allow_private_peers else DEFAULT_DENIED_PEERS,
            )
        except ValueError as exc:
            raise ConfigError(f"bad relay settings: {exc}") from None
    try:
        rate_limit = RateLimit(rate=args.rate, burst=args.burst)
    except ValueError as exc:
        raise ConfigError(f"bad rate limit: {exc}") from None
    try:
        quotas = QuotaConfig(
            new_names_per_hour=args.new_names_per_hour,
            introductions_per_second=args.introductions_per_second,
        )
    except ValueError as exc:
        raise ConfigError(f"bad quota: {exc}") from None
    config = RendezvousConfig(
        quotas=quotas,
        stun=StunServiceConfig(
            primary=args.listen,
            alternate_ip=args.alt_ip,
            alternate_port=args.alt_port,
            software=args.software,
            rate_limit=rate_limit,
        ),
        registration_lifetime=args.registration_lifetime,
        max_peers=args.max_peers,
        turn_secret=secret,
        # Peers must be told a concrete relay address, never 0.0.0.0.
        turn_server=args.turn_server
        or ((turn.relay_ip, args.listen[1]) if turn is not None else None),
    )
    return config, turn


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["key"]:
        return key_main(argv[1:])
    args = build_parser().parse_args(argv)
    configure_logging(verbose=args.verbose, json=args.json_logs)
    try:
        config, turn = configs_from(args)
    except ConfigError as exc:
        print(f"rendezvous: {exc}", file=sys.stderr)
        return 2
    if not args.name_ttl_days > 0:
        print("rendezvous: --name-ttl-days must be positive", file=sys.stderr)
        return 2
    try:
        turn = raise_fd_limit(turn)
        private = server_key.load_or_create(args.key_file)
        config = replace(config, server_key=private)
        publishing = publishing_from(args)
    except ConfigError as exc:
        print(f"rendezvous: {exc}", file=sys.stderr)
        return 2
    try:
        loop_factory = _loop_factory(args.event_loop)
    except ImportError:
        print("rendezvous: --event-loop uvloop, but uvloop is not installed", file=sys.stderr)
        return 2
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(_serve(config, args.db, turn, args.name_ttl_days, publishing))
    except (RegistryError, ConfigError) as exc:  # (a bad --db never serves "healthy")
        print(f"rendezvous: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"rendezvous: {exc}", file=sys.stderr)
        return 1
    return 0
