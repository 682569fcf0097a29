"""The peer: identity, NAT classification on the punching socket, simultaneous punching with
a Noise IK handshake, an encrypted reliable channel, keepalives; ``Peer`` is the asyncio API
(peer.adapters) and ``PeerAgent`` the sans-I/O core under it."""

from peer.adapters.peer import Connection, Peer, PeerConfig
from peer.adapters.punch_socket import PunchSocket
from peer.agent import AgentConfig, PeerAgent
from peer.errors import LocalProtocolError, PeerError, RemoteProtocolError
from peer.events import PathKind
from peer.identity import Identity, load_or_create
from peer.known_peers import KeyChanged, KnownPeers
from peer.session import SessionConfig
from peer.startup import Transport

__all__ = [
    "AgentConfig",
    "Connection",
    "Identity",
    "KeyChanged",
    "KnownPeers",
    "LocalProtocolError",
    "PathKind",
    "Peer",
    "PeerAgent",
    "PeerConfig",
    "PeerError",
    "PunchSocket",
    "RemoteProtocolError",
    "SessionConfig",
    "Transport",
    "load_or_create",
]
