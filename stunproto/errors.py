"""The STUN codec's errors: one base, and one class per kind of bad input.

Both kinds stay ``ValueError`` subclasses (callers have long caught that): malformed input
is a bad value, not a failure of the code."""


class StunError(Exception):
    """Anything the STUN codec or the stream framing refuses."""


class StunDecodeError(StunError, ValueError):
    """Bytes that are not a well-formed STUN message (or attribute value)."""


class StunEncodeError(StunError, ValueError):
    """A message that cannot be encoded: an attribute or the whole message longer than the
    16-bit lengths of STUN allow (65,535 bytes)."""


class FramingError(StunError, ValueError):
    """A byte stream (STUN over TCP) holds something that is neither STUN nor ChannelData.

    ``messages`` are the whole messages that preceded the garbage in the chunk being fed:
    a server may still answer them before it drops the connection."""

    def __init__(self, reason: str, messages: list[bytes] | None = None) -> None:
        super().__init__(reason)
        self.messages: list[bytes] = messages or []
