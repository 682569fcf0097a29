"""``peer expose``, ``peer forward`` and ``peer socks``: tunnels over the peer channel.

    peer expose ssh=127.0.0.1:22 dns=10.0.0.53:53/udp --allow alice --server S --name bob
    peer forward 8022 bob:ssh --server S --name alice       # then: ssh -p 8022 localhost
    peer socks 1080 --via bob --server S --name alice       # bob needs `expose --exit`

One status line per event on stderr (``online``, ``listening``, ``connected`` with the
path, ``tunnel_open``, ``tunnel_closed`` with the bytes each way, ``refused`` with the
reason, ``path`` when it changes, ``published``); with
``--json`` one JSON object per line on stdout instead. Ctrl-C or SIGTERM stops the
command, tells the peers, and exits 0: stopping is a server's normal end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peer.adapters.peer import Peer
from peer.adapters.tunnel_forward import Forward
from peer.adapters.tunnel_socks import SocksServer
from peer.chat_output import shown
from peer.errors import PeerError
from peer.events import Connected, PathChanged
from peer.transfer_cli import PeerSettings, online_line
from peer.tunnel.events import TunnelEvent
from peer.tunnel.http_route import site_name as http_site
from peer.tunnel.specs import (
    ListenSpec,
    ServiceSpec,
    TargetSpec,
    TunnelSpecError,
    join_host_port,
    parse_listen,
    parse_service,
    parse_target,
    parse_users,
    port_number,
)

COMMANDS = ("expose", "forward", "socks", "publish")


def _spec(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except TunnelSpecError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__.removeprefix("parse_")
    return convert


def add_tunnel_commands(
    commands: Any,
    add_peer_options: Callable[[argparse.ArgumentParser], None],
    peer_name: Callable[[str], str],
) -> None:
    expose = commands.add_parser(
        "expose",
        help="serve local services (or be a SOCKS exit) to the allowed peers",
        description=(
            "Log in and serve each SERVICE (NAME=HOST:PORT, /udp for UDP) to the peers "
            "named by --allow, identified by their pinned keys; every other peer is "
            "refused. --exit also lets them use this peer as a SOCKS exit (peer socks "
            "--via): it refuses loopback, link-local and private networks unless "
            "--exit-private. Runs until interrupted."
        ),
    )
    expose.add_argument("services", nargs="*", type=_spec(parse_service), metavar="SERVICE")
    expose.add_argument(
        "--allow", action="append", required=True, type=peer_name, metavar="PEER",
        help="a peer that may use the services (repeat for more)",
    )  # fmt: skip
    expose.add_argument("--exit", action="store_true", help="be a SOCKS exit for them too")
    expose.add_argument(
        "--exit-private", action="store_true",
        help="let the exit reach loopback, link-local and private networks",
    )  # fmt: skip
    add_peer_options(expose)
    forward = commands.add_parser(
        "forward",
        help="listen locally and carry each connection to a peer's service (like ssh -L)",
        description=(
            "Log in, check that PEER serves SERVICE to us, then listen on [LISTEN_IP:]PORT "
            "(127.0.0.1 by default; TCP, or UDP when the service is UDP): each connection "
            "becomes a stream to PEER, which connects to its target. Runs until interrupted."
        ),
    )
    forward.add_argument("listen", type=_spec(parse_listen), metavar="[LISTEN_IP:]PORT")
    forward.add_argument("target", type=_spec(parse_target), metavar="PEER:SERVICE")
    add_peer_options(forward)
    socks = commands.add_parser(
        "socks",
        help="a local SOCKS5 server whose connections leave from a peer (its exit)",
        description=(
            "Log in, check that --via lets us use it as an exit (peer expose --exit), then "
            "serve SOCKS5 on [LISTEN_IP:]PORT (127.0.0.1 by default): CONNECT to IPv4, IPv6 "
            "or a host name, resolved at the exit. With --users-file, clients must give "
            "one of its USER:PASSWORD lines (RFC 1929). Runs until interrupted."
        ),
    )
    socks.add_argument("listen", type=_spec(parse_listen), metavar="[LISTEN_IP:]PORT")
    socks.add_argument("--via", required=True, type=peer_name, metavar="PEER", help="the exit")
    socks.add_argument(
        "--users-file", type=Path, metavar="FILE",
        help="USER:PASSWORD lines: require one of them from every client",
    )  # fmt: skip
    add_peer_options(socks)
    publish = commands.add_parser(
        "publish",
        help="have the rendezvous open a public port for a local service (like frp, ngrok)",
        description=(
            "Log in and ask the rendezvous's gateway (rendezvous --publish-ports) to open "
            "a --public-port, or route an --http-host on its HTTP port (--publish-http), for "
            "each SERVICE (NAME=HOST:PORT[/udp]), in order; any outside host reaching it is "
            "carried to SERVICE over an encrypted connection to the gateway. The ports close "
            "when this stops; a lost connection is made again and the ports published again. "
            "Runs until interrupted."
        ),
    )
    publish.add_argument("services", nargs="+", type=_spec(parse_service), metavar="SERVICE")
    publish.add_argument(
        "--public-port", action=_Where, dest="where", type=_spec(public_port), metavar="PORT",
        help="the public port of the next SERVICE, in order",
    )  # fmt: skip
    publish.add_argument(
        "--http-host", action=_Where, dest="where", type=_spec(site_name), metavar="HOST",
        help="or: the host name of the next SERVICE as a site on the server's HTTP port",
    )  # fmt: skip
    add_peer_options(publish)


@dataclass(frozen=True, slots=True, kw_only=True)
class TunnelOptions:
    peer: PeerSettings
    json: bool
    services: tuple[ServiceSpec, ...] = ()
    allow: tuple[str, ...] = ()
    exit: bool = False
    exit_private: bool = False
    listen: ListenSpec | None = None
    target: TargetSpec | None = None  # forward
    via: str | None = None  # socks
    credentials: dict[str, str] | None = None
    where: tuple[int | str, ...] = ()  # publish: a public port or an HTTP site each


def tunnel_options(args: argparse.Namespace, settings: PeerSettings) -> TunnelOptions:
    if args.command == "expose":
        return TunnelOptions(
            peer=settings,
            json=args.json,
            services=tuple(args.services),
            allow=tuple(args.allow),
            exit=args.exit,
            exit_private=args.exit_private,
        )
    if args.command == "publish":
        where = args.where or []
        if len(where) != len(args.services):
            raise TunnelSpecError("give one --public-port or --http-host for each SERVICE")
        return TunnelOptions(
            peer=settings, json=args.json, services=tuple(args.services), where=tuple(where)
        )
    if args.command == "socks":
        credentials = None
        if args.users_file is not None:
            try:
                text = args.users_file.read_text()
            except (OSError, UnicodeDecodeError) as exc:
                raise TunnelSpecError(f"--users-file {args.users_file}: {exc}") from None
            credentials = parse_users(text, source=str(args.users_file))
        return TunnelOptions(
            peer=settings,
            json=args.json,
            listen=args.listen,
            via=args.via,
            credentials=credentials,
        )
    return TunnelOptions(peer=settings, json=args.json, listen=args.listen, target=args.target)


class Reporter:
    """One line per event: text on stderr, or JSON on stdout."""

    def __init__(self, json_mode: bool) -> None:
        self.json = json_mode

    def line(self, event: str, text: str, **fields: Any) -> None:
        if self.json:
            print(json.dumps({"event": event, **fields}), flush=True)
        else:
            print(shown(text), file=sys.stderr, flush=True)

    def tunnel(self, event: TunnelEvent) -> None:
        fields = event.to_json()
        self.line(fields.pop("event"), str(event), **fields)


def run_tunnel(options: TunnelOptions) -> Coroutine[Any, Any, int]:
    if options.listen is not None:
        return _run_listener(options)
    if options.where:
        return _run_publish(options)
    return _run_expose(options)


class _Where(argparse.Action):
    """--public-port and --http-host into one list, in the order given: the n-th is the
    n-th SERVICE's."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
        option_string: str | None = None,
    ) -> None:  # fmt: skip
        where = getattr(namespace, self.dest, None) or []
        setattr(namespace, self.dest, [*where, values])


def site_name(text: str) -> str:
    try:
        return http_site(text)
    except ValueError as exc:
        raise TunnelSpecError(str(exc)) from None


def public_port(text: str) -> int:
    return port_number(text, what=f"public port {text!r}")


async def _run_publish(options: TunnelOptions) -> int:
    out = Reporter(options.json)
    pairs = list(zip(options.services, options.where, strict=True))
    try:
        async with _open(options.peer) as me:
            _online(me, out)
            watching = asyncio.ensure_future(_watch_paths(me, out))
            try:
                await me.publish(pairs, on_event=out.tunnel)
            except PeerError as exc:
                out.line("error", f"peer: {exc}", reason=str(exc))
                return 1
            finally:
                watching.cancel()
    except asyncio.CancelledError:
        out.line("stopped", "stopped")
        return 0
    return 0


def _open(settings: PeerSettings) -> Peer:
    return Peer(
        settings.server,
        identity=settings.identity,
        name=settings.name,
        known_peers=settings.known_peers,
        config=settings.peer_config,
    )


def _online(me: Peer, out: Reporter) -> None:
    text, fields = online_line(me)
    out.line("online", text, **fields)


async def _watch_paths(me: Peer, out: Reporter) -> None:
    """A tunnel's peer connection coming up, and moving between the direct path and the
    relay."""
    while True:
        event = await me.events.get()
        if isinstance(event, Connected):
            remote = f"{event.remote[0]}:{event.remote[1]}"
            out.line(
                "connected",
                f"connected to {event.peer} over {event.path} ({remote}) in "
                f"{event.elapsed * 1000:.1f} ms",
                peer=event.peer,
                path=str(event.path),
                remote=remote,
                ms=round(event.elapsed * 1000, 1),
            )
        elif isinstance(event, PathChanged):
            remote = f"{event.remote[0]}:{event.remote[1]}"
            out.line(
                "path",
                f"path to {event.peer}: {event.path} ({remote})",
                peer=event.peer,
                path=str(event.path),
                remote=remote,
            )


async def _run_expose(options: TunnelOptions) -> int:
    out = Reporter(options.json)
    try:
        async with _open(options.peer) as me:
            _online(me, out)
            names = ", ".join(str(service) for service in options.services) or "-"
            out.line(
                "exposing",
                f"exposing {names}{' and a SOCKS exit' if options.exit else ''} "
                f"to {', '.join(options.allow)}",
                services=[str(service) for service in options.services],
                allow=list(options.allow),
                exit=options.exit,
            )
            watching = asyncio.ensure_future(_watch_paths(me, out))
            try:
                await me.expose(
                    options.services,
                    allow=options.allow,
                    exit=options.exit,
                    exit_private=options.exit_private,
                    on_event=out.tunnel,
                )
            finally:
                watching.cancel()
    except asyncio.CancelledError:
        out.line("stopped", "stopped")
        return 0
    return 0


async def _run_listener(options: TunnelOptions) -> int:
    """``forward`` and ``socks``: log in, start listening, serve until stopped."""
    out = Reporter(options.json)
    listen = options.listen
    assert listen is not None
    try:
        async with _open(options.peer) as me:
            _online(me, out)
            try:
                server = await _start(me, options, out)
            except PeerError as exc:
                out.line("error", f"peer: {exc}", reason=str(exc))
                return 1
            except OSError as exc:
                reason = f"cannot listen on {join_host_port(listen.host, listen.port)}: " + (
                    exc.strerror or str(exc)
                )
                out.line("error", f"peer: {reason}", reason=reason)
                return 1
            try:
                where = join_host_port(*server.address)
                if isinstance(server, SocksServer):
                    text, target, protocol = (
                        f"SOCKS5 on {where} via {server.via}",
                        server.via,
                        "socks5",
                    )
                else:
                    target = f"{server.target.peer}:{server.target.service}"
                    protocol = server.protocol.value
                    text = f"forwarding {where} ({protocol}) -> {target}"
                out.line("listening", text, listen=where, target=target, protocol=protocol)
                watching = asyncio.ensure_future(_watch_paths(me, out))
                try:
                    await server.serve_forever()
                finally:
                    watching.cancel()
            finally:
                await server.aclose()
    except asyncio.CancelledError:
        out.line("stopped", "stopped")
        return 0
    return 0


async def _start(me: Peer, options: TunnelOptions, out: Reporter) -> Forward | SocksServer:
    assert options.listen is not None
    if options.via is not None:
        return await me.socks(
            options.listen, via=options.via, credentials=options.credentials, on_event=out.tunnel
        )
    assert options.target is not None
    return await me.forward(options.listen, options.target, on_event=out.tunnel)
