"""What each rendezvous transaction in flight is for (peer.rendezvous_client): one frozen
dataclass per kind of request."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LoginRequest:
    """The first login message: asks for a challenge."""


@dataclass(frozen=True, slots=True)
class SignedLoginRequest:
    """The login with the signed challenge (and our endpoints, NAT type, RTT)."""


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """Asks the server to introduce us to ``name``."""

    name: str


@dataclass(frozen=True, slots=True)
class RefreshRequest:
    """Keeps the registration (and tells the server our relayed endpoint)."""


RvRequest = LoginRequest | SignedLoginRequest | ConnectRequest | RefreshRequest
