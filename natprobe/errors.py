"""natprobe's errors: one base, and h11's kind for a caller's own mistake.

A server that does not answer, or answers oddly, is never an error here: it is a verdict
(``udp-blocked``, a test in ``NatReport.skipped``). What natprobe raises on purpose is the
caller asking for something it cannot do.
"""

from __future__ import annotations


class NatProbeError(Exception):
    """Anything natprobe raises on purpose."""


class LocalProtocolError(NatProbeError):
    """This side asked for something that cannot work: a bug or a bad input in the
    caller, not a property of the network."""


class ArgumentError(LocalProtocolError):
    """A command-line argument natprobe cannot use: a bad port, a name that does not
    resolve, a duration out of range."""
