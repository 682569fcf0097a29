"""What each rendezvous transaction in flight is for (peer.rendezvous_client): one frozen
dataclass per kind of request; and how a request the server never answered is told (so
that start-up, peer.startup, can tell silence from a refusal)."""

from __future__ import annotations

from dataclasses import dataclass

from rvproto.messages import RvAttr, RvMethod, rv_message
from stunproto import AttrType, MessageClass, StunMessage
from stunproto.message import new_transaction_id


@dataclass(frozen=True, slots=True)
class LoginRequest:
    """The first login message: asks for a challenge."""


@dataclass(frozen=True, slots=True)
class HandshakeLoginRequest:
    """The login with the challenge and the Noise handshake (and our endpoints, NAT type,
    RTT)."""


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """Asks the server to introduce us to ``name``."""

    name: str


@dataclass(frozen=True, slots=True)
class RefreshRequest:
    """Keeps the registration (and tells the server our relayed endpoint)."""


NO_ANSWER = "no answer from the rendezvous server"


def no_answer(seconds: float) -> str:
    """The reason a request got no answer: "no answer from the rendezvous server (nothing
    within 10 s)"."""
    return f"{NO_ANSWER} ({silence(seconds)})"


def silence(seconds: float) -> str:
    return f"nothing within {seconds:.0f} s" if seconds >= 1 else f"nothing within {seconds:g} s"


def silence_in(reason: str) -> str | None:
    """The "nothing within 10 s" of a reason :func:`no_answer` gave, else None."""
    if not reason.startswith(NO_ANSWER + " ("):
        return None
    return reason.removeprefix(NO_ANSWER + " (").removesuffix(")")


RvRequest = LoginRequest | HandshakeLoginRequest | ConnectRequest | RefreshRequest


def report_indication(name: str, peer: str, outcome: str, elapsed: float) -> StunMessage:
    """REPORT: how a punch with ``peer`` ended (an indication: no answer, no retransmission)."""
    return rv_message(
        RvMethod.REPORT,
        MessageClass.INDICATION,
        new_transaction_id(),
        (
            (AttrType.USERNAME, name),
            (RvAttr.PEER_NAME, peer),
            (RvAttr.OUTCOME, outcome),
            (RvAttr.ELAPSED, max(0, round(elapsed * 1000))),
        ),
    )
