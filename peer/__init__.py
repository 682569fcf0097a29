"""The peer: client library and CLI (NAT classification on the punching socket for now)."""

from peer.socket import PunchSocket

__all__ = ["PunchSocket"]
