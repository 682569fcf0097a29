"""One stream's two halves: what we send (buffered until acknowledged, resent when lost)
and what we receive (reassembled in order, within the flow-control window we advertised).

Offsets are stream offsets (RFC 9000 2.2). Both halves are plain state; the connection
(peer.transport.connection) decides what goes into which packet.
"""

from __future__ import annotations

import heapq

from peer.transport.errors import ErrorCode, PeerViolation, StreamStateError

# Drop acknowledged bytes from the front of a send buffer in steps of at least this much:
# each drop moves what is left, so dropping per acknowledgement would be quadratic.
_COMPACT_AT = 256 * 1024


class SendHalf:
    __slots__ = (
        "_acked",
        "_base",
        "_buffer",
        "acked_to",
        "blocked_at",
        "buffer_limit",
        "fin",
        "fin_acked",
        "fin_sent",
        "limit",
        "lost",
        "reset_acked",
        "reset_code",
        "reset_sent",
        "sent",
        "stream_id",
        "want_writable",
    )

    def __init__(self, stream_id: int, limit: int, buffer_limit: int) -> None:
        self.stream_id = stream_id
        self.buffer_limit = buffer_limit  # writable() is false from this many bytes on
        self._buffer = bytearray()
        self._base = 0  # stream offset of _buffer[0]
        self.sent = 0  # every byte below this went out at least once
        self.acked_to = 0  # every byte below this is acknowledged
        self._acked: list[tuple[int, int]] = []  # acknowledged [start, end) beyond acked_to
        self.lost: list[tuple[int, int]] = []  # [start, end) to send again, oldest first
        self.limit = limit  # the peer's MAX_STREAM_DATA
        self.fin = False  # write_eof was called
        self.fin_sent = False
        self.fin_acked = False
        self.reset_code: int | None = None
        self.reset_sent = False
        self.reset_acked = False
        self.blocked_at = -1  # the limit we last said we were blocked at
        self.want_writable = False  # the writer hit the buffer limit: tell it when not

    @property
    def end(self) -> int:
        """Stream offset after the last byte written."""
        return self._base + len(self._buffer)

    @property
    def buffered(self) -> int:
        """Bytes written and not yet acknowledged (what this stream holds in memory)."""
        return self.end - self.acked_to

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.fin or self.reset_code is not None:
            raise StreamStateError(f"stream {self.stream_id} is closed for writing")
        self._buffer += data

    def has_new(self) -> bool:
        """Unsent bytes, or an unsent end of stream, wait (flow control aside)."""
        if self.reset_code is not None:
            return False
        return self.sent < self.end or (self.fin and not self.fin_sent)

    def take(self, offset: int, length: int) -> bytes:
        start = offset - self._base
        return bytes(self._buffer[start : start + length])

    def on_acked(self, offset: int, end: int, fin: bool) -> None:
        if fin:
            self.fin_acked = True
        if end <= self.acked_to:
            return
        if offset <= self.acked_to:
            self.acked_to = end
            acked = self._acked
            while acked and acked[0][0] <= self.acked_to:
                self.acked_to = max(self.acked_to, acked.pop(0)[1])
            if self.acked_to - self._base >= _COMPACT_AT or self.acked_to == self.end:
                del self._buffer[: self.acked_to - self._base]
                self._base = self.acked_to
        else:
            _insert_range(self._acked, offset, end)

    def on_lost(self, offset: int, end: int, fin: bool) -> None:
        if self.reset_code is not None:
            return
        if fin and not self.fin_acked:
            self.fin_sent = False  # the end of stream goes out again (with the data, or alone)
        if end > self.acked_to:
            self.lost.append((max(offset, self.acked_to), end))

    def next_lost(self) -> tuple[int, int] | None:
        """The oldest lost range still unacknowledged, trimmed to what is not acked."""
        lost = self.lost
        while lost:
            start, end = lost[0]
            start = max(start, self.acked_to)
            if start >= end or _covered(self._acked, start, end):
                lost.pop(0)
                continue
            return start, end
        return None

    def reset(self, code: int) -> None:
        if self.reset_code is None and not self.fin_acked:
            self.reset_code = code
            self.lost.clear()
            self._buffer.clear()
            self._base = self.acked_to = self.sent = max(self.sent, self.acked_to)

    @property
    def done(self) -> bool:
        """Everything, the end included, acknowledged; or reset, and that acknowledged."""
        return (self.fin_acked and self.acked_to == self.end) or self.reset_acked


class ReceiveHalf:
    __slots__ = (
        "_buffer",
        "_pending",
        "final_size",
        "frontier",
        "highest",
        "limit",
        "read_offset",
        "reset_code",
        "stop_code",
        "stop_sent",
        "stream_id",
        "want_limit",
        "window",
    )

    def __init__(self, stream_id: int, window: int) -> None:
        self.stream_id = stream_id
        self._buffer = bytearray()  # bytes frontier - len .. frontier, not yet read
        self._pending: list[tuple[int, bytes]] = []  # out-of-order (offset, data) heap
        self.read_offset = 0  # what the application has read
        self.frontier = 0  # every byte below this has arrived
        self.highest = 0  # the highest offset seen (counts against flow control)
        self.window = window
        self.limit = window  # the MAX_STREAM_DATA we advertised
        self.final_size: int | None = None
        self.reset_code: int | None = None
        self.stop_code: int | None = None  # we asked the peer to stop sending
        self.stop_sent = False
        self.want_limit = False  # a raised limit must be sent

    def on_data(self, offset: int, data: bytes | memoryview, fin: bool) -> int:
        """Take a STREAM frame; returns how many bytes it added to ``highest`` (for the
        connection's flow control). Raises PeerViolation for what the peer may not do."""
        end = offset + len(data)
        if end > self.limit:
            raise PeerViolation(
                ErrorCode.FLOW_CONTROL_ERROR,
                f"stream {self.stream_id}: data to {end} beyond the limit {self.limit}",
            )
        if self.final_size is not None and (
            end > self.final_size or (fin and end != self.final_size)
        ):
            raise PeerViolation(
                ErrorCode.FINAL_SIZE_ERROR, f"stream {self.stream_id}: final size changed"
            )
        if fin:
            if end < self.highest:
                raise PeerViolation(
                    ErrorCode.FINAL_SIZE_ERROR, f"stream {self.stream_id}: final size below data"
                )
            self.final_size = end
        grown = max(0, end - self.highest)
        self.highest += grown
        if self.reset_code is not None or self.stop_code is not None or end <= self.frontier:
            return grown  # (a duplicate, or nobody will read it)
        if offset <= self.frontier:
            self._buffer += data[self.frontier - offset :] if offset < self.frontier else data
            self.frontier = end
            pending = self._pending
            while pending and pending[0][0] <= self.frontier:
                start, chunk = heapq.heappop(pending)
                chunk_end = start + len(chunk)
                if chunk_end > self.frontier:
                    self._buffer += chunk[self.frontier - start :]
                    self.frontier = chunk_end
        else:
            heapq.heappush(self._pending, (offset, bytes(data)))
        return grown

    def on_reset(self, code: int, final_size: int) -> int:
        if self.final_size is not None and final_size != self.final_size:
            raise PeerViolation(
                ErrorCode.FINAL_SIZE_ERROR, f"stream {self.stream_id}: final size changed"
            )
        if final_size < self.highest or final_size > self.limit:
            raise PeerViolation(
                ErrorCode.FINAL_SIZE_ERROR, f"stream {self.stream_id}: bad final size"
            )
        grown = final_size - self.highest
        self.highest = self.final_size = final_size
        self.reset_code = code
        self._buffer.clear()
        self._pending.clear()
        return grown

    @property
    def readable(self) -> int:
        return len(self._buffer)

    @property
    def at_eof(self) -> bool:
        """Everything up to the final size has been read (or the stream was reset)."""
        return self.reset_code is not None or (
            self.final_size is not None and self.read_offset == self.final_size
        )

    def peek(self, n: int) -> bytes:
        return bytes(self._buffer[:n])

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes (all, if ``n`` < 0)."""
        buffer = self._buffer
        if n < 0 or n >= len(buffer):
            data = bytes(buffer)
            buffer.clear()
        else:
            data = bytes(buffer[:n])
            del buffer[:n]
        self.read_offset += len(data)
        if self.limit - self.read_offset <= self.window // 2 and self.final_size is None:
            self.limit = self.read_offset + self.window
            self.want_limit = True
        return data

    def stop(self, code: int) -> None:
        if self.stop_code is None and not self.at_eof:
            self.stop_code = code
            self._buffer.clear()
            self._pending.clear()

    @property
    def done(self) -> bool:
        return self.at_eof or (
            self.stop_code is not None and self.final_size is not None and self.stop_sent
        )


def _insert_range(ranges: list[tuple[int, int]], start: int, end: int) -> None:
    """Add [start, end) to a sorted list of disjoint ranges, merging what touches."""
    if not ranges or ranges[-1][1] < start:
        ranges.append((start, end))  # the usual case: acknowledgements come in order
        return
    if ranges[-1][0] <= start:
        ranges[-1] = (ranges[-1][0], max(ranges[-1][1], end))
        return
    merged: list[tuple[int, int]] = []
    placed = False
    for low, high in ranges:
        if high < start:
            merged.append((low, high))
        elif low > end:
            if not placed:
                merged.append((start, end))
                placed = True
            merged.append((low, high))
        else:
            start, end = min(start, low), max(end, high)
    if not placed:
        merged.append((start, end))
    ranges[:] = merged


def _covered(ranges: list[tuple[int, int]], start: int, end: int) -> bool:
    return any(low <= start and end <= high for low, high in ranges)
