"""The rendezvous package's errors: one base, and the local kind of h11's split (a caller's
misuse of an API, a bad setting).

There is no remote kind: the server never raises for what arrives from the network (a
malformed datagram is dropped or answered with a STUN error, as the RFCs say; garbage on a
TCP stream closes that connection), so everything it raises is the caller's mistake.
"""

from __future__ import annotations


class RendezvousError(Exception):
    """Anything the rendezvous package raises on purpose."""


class LocalProtocolError(RendezvousError):
    """This side used an API wrongly (an adapter started twice, a route the core never
    handed out): a bug in the caller, not in the network."""


class ConfigError(LocalProtocolError, ValueError):
    """A setting that cannot work (a port range out of bounds, a relay on 0.0.0.0). Also a
    ValueError, as configuration errors always were."""
