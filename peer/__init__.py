"""The peer: identity, NAT classification on the punching socket, simultaneous punching with
a Noise IK handshake, an encrypted reliable channel, keepalives; ``Peer`` is the asyncio API
and ``PeerAgent`` the sans-I/O core under it."""

from peer.agent import AgentConfig, PeerAgent
from peer.client import Connection, Peer, PeerConfig, PeerError
from peer.events import PathKind
from peer.identity import Identity, load_or_create
from peer.known_peers import KeyChanged, KnownPeers
from peer.session import SessionConfig
from peer.socket import PunchSocket

__all__ = [
    "AgentConfig",
    "Connection",
    "Identity",
    "KeyChanged",
    "KnownPeers",
    "PathKind",
    "Peer",
    "PeerAgent",
    "PeerConfig",
    "PeerError",
    "PunchSocket",
    "SessionConfig",
    "load_or_create",
]
