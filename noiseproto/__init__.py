"""Noise (revision 34) for both sides: the peers' IK handshake with each other and their
login handshake with the rendezvous (docs/protocol.md). Sans-I/O, on ``cryptography``;
it imports nothing of ours, so the server and the peer share it without importing each
other."""

from noiseproto.handshake import (
    HandshakeState,
    Initiator,
    NoiseConfig,
    Responder,
    TransportKeys,
    random_ephemeral,
)
from noiseproto.symmetric import CipherState, NoiseError, SymmetricState

__all__ = [
    "CipherState",
    "HandshakeState",
    "Initiator",
    "NoiseConfig",
    "NoiseError",
    "Responder",
    "SymmetricState",
    "TransportKeys",
    "random_ephemeral",
]
