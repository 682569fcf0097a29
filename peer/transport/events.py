"""What a transport connection tells its owner (``TransportConnection.next_event()``).

Readable and writable events are edge-triggered and coalesced: one event per stream until
the owner has read (or written) again, however many packets arrived meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """The peer opened stream ``stream_id`` (its first data, or its reset, arrived)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamReadable:
    """Data (or the end of the stream) can be read from ``stream_id``."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamWritable:
    """``stream_id``'s send buffer went below its limit: the writer may go on."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamSent:
    """Everything written on ``stream_id``, its end included, was acknowledged (or our
    side was reset and the reset acknowledged)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamReset:
    """The peer abandoned its side of ``stream_id`` (RESET_STREAM): data not yet read is
    gone."""

    stream_id: int
    code: int


@dataclass(frozen=True, slots=True)
class StopSendingReceived:
    """The peer will not read ``stream_id`` any more: our side of it was reset."""

    stream_id: int
    code: int


@dataclass(frozen=True, slots=True)
class StreamsAvailable:
    """The peer allows more streams now (MAX_STREAMS)."""

    limit: int


@dataclass(frozen=True, slots=True)
class DatagramReceived:
    data: bytes


@dataclass(frozen=True, slots=True)
class MessageReceived:
    data: bytes


@dataclass(frozen=True, slots=True)
class ConnectionClosedByPeer:
    code: int
    reason: str


TransportEvent = (
    StreamOpened
    | StreamReadable
    | StreamWritable
    | StreamSent
    | StreamReset
    | StopSendingReceived
    | StreamsAvailable
    | DatagramReceived
    | MessageReceived
    | ConnectionClosedByPeer
)
