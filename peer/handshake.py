"""The session's Noise IK handshake, one side of it: the initiator's message 1 (which is
also its punch packet) and the responder's answer, message 2, with the repeats that loss
and simultaneous punching cause.

Packets on the wire (first byte; STUN uses 0x00-0x3F on the same socket):
  0xA1 handshake initiation (Noise IK message 1, payload = nothing; the rendezvous token
       is in the prologue, so a message from another introduction does not even decrypt)
  0xA2 handshake response (Noise IK message 2)
  0xA3 transport (the channel: explicit counter, AEAD, replay window; peer.channel)
  0xA4 punch probe from the responder: opens its NAT toward the initiator, carries nothing

Neither side here moves a path or sends anything: they say what a datagram means, and the
session acts on it (peer.session).
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from noiseproto import Initiator, NoiseError, Responder, TransportKeys
from rvproto.keys import ed25519_to_x25519_public
from rvproto.messages import Introduction, Role

INIT, RESPONSE, TRANSPORT, PROBE = 0xA1, 0xA2, 0xA3, 0xA4
PEER_PACKET_TYPES = frozenset({INIT, RESPONSE, TRANSPORT, PROBE})
PROLOGUE = b"holepunch peer v1\x00"
PROBE_PACKET = bytes([PROBE])


class InitiatorHandshake:
    """We know the responder's static key (the rendezvous vouched for it): message 1 goes
    out with every punch, message 2 completes the handshake."""

    __slots__ = ("_noise", "_response", "message1")
    message2 = None  # (the responder's: the initiator sends none)

    def __init__(self, static: X25519PrivateKey, remote_static: bytes, prologue: bytes) -> None:
        self._noise = Initiator(static, remote_static, prologue)
        self.message1 = bytes([INIT]) + self._noise.write_message1(b"")
        self._response: bytes | None = None  # the message 2 that completed the handshake

    def read_response(self, data: bytes) -> TransportKeys | None:
        """The transport keys, or None for a message 2 that does not authenticate (another
        introduction's, or forged): the handshake state stays as it was."""
        if self._response is not None:
            return None
        try:
            _, keys = self._noise.read_message2(data[1:])
        except NoiseError:
            return None
        self._response = data  # to recognise the responder's repeats
        return keys

    def is_repeat(self, data: bytes) -> bool:
        """The responder sent the very answer again (it has not seen our confirmation, or
        answered over another path too). A repeat can also be a replay by anyone: it proves
        nothing about the path it came over."""
        return self._response is not None and data == self._response


class ResponderHandshake:
    """The initiator knows our key; we check that its static key is the one the
    rendezvous vouched for before we answer anything at all."""

    __slots__ = ("_init", "_prologue", "_remote_static", "_static", "message2")
    message1 = None  # (the initiator's: the responder sends probes)

    def __init__(self, static: X25519PrivateKey, remote_static: bytes, prologue: bytes) -> None:
        self._static = static
        self._remote_static = remote_static
        self._prologue = prologue
        self.message2: bytes | None = None  # cached answer for repeated inits
        self._init: bytes | None = None  # the message 1 it answers

    def answer(self, data: bytes) -> tuple[bytes, TransportKeys] | None:
        """Read a first message 1: message 2 (kept in ``message2`` for repeats) and the
        transport keys; None, and no answer, for garbage, another introduction's handshake,
        or a key nobody vouched for."""
        if self.message2 is not None:
            return None
        responder = Responder(self._static, self._prologue)
        try:
            remote_static, _ = responder.read_message1(data[1:])
        except NoiseError:
            return None
        if remote_static != self._remote_static:
            return None  # not the key the rendezvous vouched for: do not answer
        message2, keys = responder.write_message2(b"")
        self.message2 = bytes([RESPONSE]) + message2
        self._init = data
        return self.message2, keys

    def is_repeat(self, data: bytes) -> bool:
        """The initiator sent the very message 1 again: it did not get our answer yet."""
        return self._init is not None and data == self._init


Handshake = InitiatorHandshake | ResponderHandshake


def handshake_for(introduction: Introduction, static: X25519PrivateKey) -> Handshake:
    """Our side of the handshake the rendezvous introduced: its role, the peer's key it
    vouched for, and its token in the prologue. PublicKeyError for a key with no X25519
    form."""
    remote_static = ed25519_to_x25519_public(introduction.public_key)
    prologue = PROLOGUE + introduction.token
    if introduction.role is Role.INITIATOR:
        return InitiatorHandshake(static, remote_static, prologue)
    return ResponderHandshake(static, remote_static, prologue)
