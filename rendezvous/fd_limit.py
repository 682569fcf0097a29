"""The open-file limit, checked and raised at start (docs/security.md): a relay that runs
out of descriptors must answer 508, not fail on EMFILE."""

from __future__ import annotations

from dataclasses import replace

import structlog

from rendezvous.adapters.tcp import TcpConfig
from rendezvous.errors import ConfigError
from rendezvous.turn_config import TurnConfig

# Descriptors besides relay sockets and TCP clients: the STUN sockets, the database, logs.
_FD_SPARE = 64


def raise_fd_limit(turn: TurnConfig | None) -> TurnConfig | None:
    """Make the open-file limit cover every relay socket and TCP connection the settings
    allow, so that a full relay answers 508 rather than failing on EMFILE: the soft limit
    is raised up to the hard one; where even that is short, the relay gets fewer
    allocations (said in the log). ConfigError when not even the TCP side fits."""
    try:
        import resource
    except ImportError:  # (not on this platform: nothing to check)
        return turn
    base = TcpConfig().max_connections + _FD_SPARE
    needed = base + (turn.max_allocations if turn is not None else 0)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return turn
    limit = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    if limit >= needed:
        return turn
    if turn is None or limit <= base:
        raise ConfigError(
            f"the open-file limit ({hard}) is below the {needed} descriptors the relay "
            "and TCP clients may need: raise it (ulimit -n) or lower --turn-max-allocations"
        )
    allocations = limit - base
    structlog.get_logger().warning(
        "relay_allocations_capped", fd_limit=hard, max_allocations=allocations
    )
    return replace(turn, max_allocations=allocations)
