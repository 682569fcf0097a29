"""``rendezvous --publish-ports``: the publish gateway beside the server, in its process.

The gateway is a peer (peer.adapters.tunnel_gateway), so that publishers reach it over
the same authenticated, encrypted data plane as any peer, and outside connections to a
public port are carried as ``peer forward`` carries them. It logs in to this server under
``rvproto.names.GATEWAY_NAME``, which the server claims for the gateway's key at every
start (published or not), so that nobody else can ever hold that name.

This module is the one place where the server's package imports the peer's: a
composition root, like the CLI that calls it (the server's cores never do).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
from collections.abc import AsyncIterator
from dataclasses import dataclass

import structlog
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from peer.adapters.peer import Peer, PeerConfig
from peer.errors import PeerError
from peer.identity import Identity, IdentityError, load_or_create
from peer.tunnel.events import TunnelEvent
from peer.tunnel.publishing import PublishConfig
from rendezvous.errors import ConfigError
from rendezvous.registry import NameRegistry
from rvproto.names import GATEWAY_NAME, InvalidName, canonical_name
from stunproto.attributes import Address

log = structlog.get_logger()
RETRY_FIRST, RETRY_MAX = 1.0, 30.0


def add_publish_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "publishing (intranet penetration: peer publish)",
        "Open public ports that carry outside connections to peers behind NAT.",
    )
    group.add_argument(
        "--publish-ports",
        metavar="LOW-HIGH",
        help="the public TCP/UDP ports peers may publish on (needs a concrete --listen IP)",
    )
    group.add_argument(
        "--publish-allow",
        action="append",
        metavar="NAME",
        help="a peer name that may publish (repeat; default: any peer that logs in)",
    )
    group.add_argument(
        "--publish-http",
        type=int,
        metavar="PORT",
        help="one public HTTP port for every published site, routed by the Host header "
        "(peer publish --http-host)",
    )
    group.add_argument(
        "--publish-max-per-peer",
        type=int,
        default=16,
        metavar="N",
        help="public ports one peer may hold at once (default %(default)s)",
    )


def publish_config_from(args: argparse.Namespace) -> PublishConfig | None:
    if args.publish_ports is None and args.publish_http is None:
        if args.publish_allow:
            raise ConfigError("--publish-allow needs --publish-ports or --publish-http")
        return None
    host, _ = args.listen
    if ipaddress.ip_address(host).is_unspecified:
        raise ConfigError("publishing needs a concrete --listen IP (the gateway's)")
    try:
        low, high = (int(part) for part in (args.publish_ports or "1-0").split("-"))
        allow = None
        if args.publish_allow:
            allow = frozenset(canonical_name(name) for name in args.publish_allow)
        return PublishConfig(
            ports=range(low, high + 1),
            allow=allow,
            host=host,
            max_ports_per_peer=args.publish_max_per_peer,
            http_port=args.publish_http,
        )
    except InvalidName as exc:
        raise ConfigError(f"bad --publish-allow: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"bad --publish-ports {args.publish_ports!r}: {exc}") from None


@dataclass(frozen=True, slots=True)
class Publishing:
    config: PublishConfig | None  # None: no public ports (the name is reserved all the same)
    identity: Identity


def publishing_from(args: argparse.Namespace) -> Publishing:
    """The publish settings and the gateway's own key, kept beside the server's (0600,
    created on first start); ConfigError says what cannot work."""
    config = publish_config_from(args)
    try:
        identity = load_or_create(args.key_file.with_name("gateway_identity.pem"))
    except IdentityError as exc:
        raise ConfigError(f"gateway identity: {exc}") from None
    return Publishing(config, identity)


def reserve_gateway_name(registry: NameRegistry, publishing: Publishing) -> None:
    """Claim GATEWAY_NAME for the gateway's key; another owner is a config error when
    publishing (the gateway could not log in), a warning otherwise."""
    if registry.claim(GATEWAY_NAME, publishing.identity.public_key):
        return
    problem = f"the name {GATEWAY_NAME} belongs to another key in the database"
    if publishing.config is not None:
        raise ConfigError(problem)
    log.warning("gateway_name_taken", reason=problem)


@contextlib.asynccontextmanager
async def gateway_beside(
    publishing: Publishing, server: Address, private_key: bytes | None
) -> AsyncIterator[None]:
    """The gateway running while the server does (nothing without --publish-ports)."""
    config = publishing.config
    if config is None or private_key is None:
        yield
        return
    public = X25519PrivateKey.from_private_bytes(private_key).public_key().public_bytes_raw()
    address = (config.host, server[1])
    running = asyncio.ensure_future(run_gateway(address, config, publishing.identity, public))
    try:
        yield
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def run_gateway(
    server: Address, config: PublishConfig, identity: Identity, server_key: bytes
) -> None:
    """Log the gateway in to our own server and serve publishers, until cancelled; a
    failed start is logged and retried (the server itself keeps serving)."""
    peer_config = PeerConfig(probe_nat=False, server_key=server_key, accept_backlog=256)
    delay = RETRY_FIRST
    while True:
        try:
            async with Peer(server, identity=identity, name=GATEWAY_NAME, config=peer_config) as me:
                ports = f"{config.ports.start}-{config.ports.stop - 1}" if config.ports else "-"
                allow = sorted(config.allow or ["*"])
                log.info("gateway_online", ports=ports, http=config.http_port, allow=allow)
                await me.gateway(config, on_event=_log_event)
        except PeerError as exc:
            log.error("gateway_failed", reason=str(exc), retry_in=delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, RETRY_MAX)


def _log_event(event: TunnelEvent) -> None:
    """Refusals at info level; each carried connection at debug level (one line per
    outside connection would flood the log of a busy port)."""
    fields = event.to_json()
    kind = fields.pop("event")
    (log.info if kind == "refused" else log.debug)(kind, **fields)
