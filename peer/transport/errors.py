"""The transport's errors, in the peer package's split: our misuse (``LocalProtocolError``)
against the other side's (``RemoteProtocolError``)."""

from __future__ import annotations

from enum import IntEnum

from peer.errors import LocalProtocolError, PeerError, RemoteProtocolError


class ErrorCode(IntEnum):
    """Codes a CONNECTION_CLOSE carries (RFC 9000 20.1, the ones that apply here)."""

    NO_ERROR = 0x0
    INTERNAL_ERROR = 0x1
    FLOW_CONTROL_ERROR = 0x3
    STREAM_LIMIT_ERROR = 0x4
    STREAM_STATE_ERROR = 0x5
    FINAL_SIZE_ERROR = 0x6
    FRAME_ENCODING_ERROR = 0x7
    PROTOCOL_VIOLATION = 0xA
    APPLICATION_ERROR = 0x100


class TransportError(PeerError):
    """A transport connection failed (closed, or its peer broke the protocol)."""


class TransportDecodeError(RemoteProtocolError, ValueError):
    """A packet or frame that does not parse: a bug or a hostile peer."""


class PeerViolation(RemoteProtocolError):
    """The peer broke a rule of the transport (flow control, stream state, final size):
    the connection closes with ``code``."""

    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class StreamStateError(LocalProtocolError):
    """This side used a stream wrongly: writing after the end, reading a stream that is
    not ours, a stream that does not exist."""


class StreamLimitError(LocalProtocolError):
    """The peer allows no more streams just now (wait for a StreamsAvailable event)."""


class MessageTooLarge(LocalProtocolError):
    """A message above ``TransportConfig.max_message_size``."""


class ConnectionClosedError(LocalProtocolError):
    """The connection is closed: nothing more can be sent."""
