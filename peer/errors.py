"""The peer package's errors: one base, and h11's split between our own misuse of an API
(``LocalProtocolError``) and a remote side breaking the protocol (``RemoteProtocolError``).

Everything the package raises on purpose is a ``PeerError``, so an application catches one
class; the finer classes say whose fault it was.
"""

from __future__ import annotations


class PeerError(Exception):
    """Login refused, peer unknown, punching failed, the connection closed, or any other
    failure of the peer toolkit."""


class LocalProtocolError(PeerError):
    """This side used an API wrongly (sending on a closed session, connecting before the
    login): a bug in the caller, not in the network."""


class RemoteProtocolError(PeerError):
    """The other side (a peer, the rendezvous, the relay) sent something the protocol does
    not allow."""


class PeerTimeout(PeerError, TimeoutError):
    """Something did not happen in time; the message says what, and after how long (it
    is a TimeoutError too, for callers that catch those)."""


class ServerUnreachable(PeerError):
    """No rendezvous server answers at the address: over the transports tried, nothing
    came back (``detail``: "UDP: nothing within 10 s; TCP: connection refused")."""

    def __init__(self, server: tuple[str, int], detail: str) -> None:
        self.server = server
        self.detail = detail
        super().__init__(f"no rendezvous server answers at {server[0]}:{server[1]} ({detail})")
