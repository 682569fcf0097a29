"""A session's states and the one table of the transitions between them."""

from __future__ import annotations

from enum import Enum

from peer.errors import LocalProtocolError


class SessionState(Enum):
    WAITING = "waiting"  # introduced; the punch schedule has not started yet
    PUNCHING = "punching"
    CONFIRMING = "confirming"  # responder: answered the handshake, awaiting first transport
    CONNECTED = "connected"
    CLOSED = "closed"


_S = SessionState
# Where each state may go. The initiator may connect straight from WAITING (a probe made it
# answer before its own schedule began), and the responder may answer a handshake before
# its first punch tick.
TRANSITIONS: dict[SessionState, frozenset[SessionState]] = {
    _S.WAITING: frozenset({_S.PUNCHING, _S.CONFIRMING, _S.CONNECTED, _S.CLOSED}),
    _S.PUNCHING: frozenset({_S.CONFIRMING, _S.CONNECTED, _S.CLOSED}),
    _S.CONFIRMING: frozenset({_S.CONNECTED, _S.CLOSED}),
    _S.CONNECTED: frozenset({_S.CLOSED}),
    _S.CLOSED: frozenset(),
}
BEFORE_HANDSHAKE = frozenset({_S.WAITING, _S.PUNCHING})


def next_state(current: SessionState, wanted: SessionState) -> SessionState:
    """``wanted``, if the table allows it from ``current`` (else a bug in the session)."""
    if wanted not in TRANSITIONS[current]:
        raise LocalProtocolError(f"no session transition {current.value} -> {wanted.value}")
    return wanted
