"""``TransportConnection``: streams, messages and datagrams over one lossy datagram path,
sans-I/O, shaped like aioquic's ``QuicConnection``.

The owner feeds it decrypted packets (``receive_packet``) and timer expiries
(``handle_timer``), drains ``packets_to_send`` (plaintext, at most ``max_packet_size``
each: the owner seals them) and ``next_event``. It never reads a clock: ``now`` comes in.

Streams: 0 carries the initiator's messages, 1 the responder's (each message a 4-byte
length and its bytes); user streams are bidirectional, the initiator's even from 2, the
responder's odd from 3. Packet building is peer.transport.packets', packet handling
peer.transport.receiving's.
"""

from __future__ import annotations

from collections import deque

from peer.transport import frames as f
from peer.transport.acks import AckTracker
from peer.transport.config import TransportConfig
from peer.transport.errors import (
    ConnectionClosedError,
    ErrorCode,
    MessageTooLarge,
    StreamLimitError,
    StreamStateError,
)
from peer.transport.events import (
    TransportEvent,
)
from peer.transport.messages import LENGTH, MessageReader
from peer.transport.packets import PacketBuilder
from peer.transport.receiving import FIRST_USER_STREAM, PacketReceiver
from peer.transport.recovery import Recovery
from peer.transport.state import ConnectionState
from peer.transport.streams import ReceiveHalf, SendHalf

__all__ = ["FIRST_USER_STREAM", "TransportConnection"]


class TransportConnection(PacketReceiver):
    def __init__(
        self, *, config: TransportConfig | None = None, initiator: bool, now: float
    ) -> None:
        self.config = config = config or TransportConfig()
        self.initiator = initiator
        self.state = ConnectionState.OPEN
        self.close_code = 0
        self.close_reason = ""
        self._recovery = Recovery(config.recovery)
        self._acks = AckTracker(config.max_ack_ranges)
        self._events: deque[TransportEvent] = deque()
        self._send: dict[int, SendHalf] = {}
        self._recv: dict[int, ReceiveHalf] = {}
        self._parity = 0 if initiator else 1
        self._next_local = FIRST_USER_STREAM + self._parity
        self._next_remote = FIRST_USER_STREAM + 1 - self._parity
        self._local_limit = config.max_streams  # streams the peer may open (cumulative)
        self._remote_limit = config.max_streams  # assumed symmetric until MAX_STREAMS
        self._remote_closed = 0  # peer streams finished (each one frees a slot)
        # Connection flow control (RFC 9000 4.1).
        self._recv_limit = config.initial_max_data
        self._recv_total = 0  # highest offsets received, summed over streams
        self._recv_consumed = 0
        self._send_limit = config.initial_max_data
        self._send_total = 0  # new bytes sent, summed over streams
        self._readable_told: set[int] = set()
        self._messages = MessageReader(config.max_message_size)
        for stream_id in (0, 1):
            self._open(stream_id)
        self.message_stream = self._parity  # ours; the peer's is the other
        PacketBuilder.__init__(self, config, now)

    # ------------------------------------------------------------------ views

    @property
    def rtt(self) -> float:
        return self._recovery.rtt.smoothed_rtt

    @property
    def congestion_window(self) -> int:
        return self._recovery.congestion_window

    @property
    def bytes_in_flight(self) -> int:
        return self._recovery.bytes_in_flight

    @property
    def buffered(self) -> int:
        """Bytes written on any stream and not yet acknowledged."""
        return sum(send.buffered for send in self._send.values())

    @property
    def stalled_since(self) -> float | None:
        """Since when something ack-eliciting has waited for an answer (None: nothing).
        Packets declared lost wait for nothing: when loss detection empties the flight
        (the lost ones carried only a PING or an ACK_FREQUENCY, nothing to resend), no
        answer is owed, and an idle connection must not be called gone 8 s later."""
        return self._waiting_since if self._recovery.bytes_in_flight else None

    # ------------------------------------------------------------------ streams

    def open_stream(self) -> int:
        self._check_open()
        stream_id = self._next_local
        if (stream_id - FIRST_USER_STREAM) // 2 >= self._remote_limit:
            raise StreamLimitError(f"the peer allows {self._remote_limit} streams at once")
        self._next_local += 2
        self._open(stream_id)
        return stream_id

    def write(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        self._check_open()
        send = self._send_half(stream_id)
        if stream_id < FIRST_USER_STREAM:
            raise StreamStateError("streams 0 and 1 carry messages: use send_message")
        if end_stream and not data and send.fin:
            return  # (ending twice is harmless)
        send.write(data)
        if end_stream:
            send.fin = True
        self._schedule(send)

    def writable(self, stream_id: int) -> bool:
        """False while the stream buffers its limit or more (``send_buffer_limit``, or what
        ``limit_buffer`` set; wait for StreamWritable)."""
        send = self._send_half(stream_id)
        if send.buffered < send.buffer_limit:
            return True
        send.want_writable = True
        return False

    def limit_buffer(self, stream_id: int, limit: int) -> None:
        """Buffer at most about ``limit`` bytes of this stream before ``writable`` turns
        false: a tunnel carrying a thousand connections keeps each one's share small."""
        if limit < 1:
            raise StreamStateError("a stream's buffer limit must be positive")
        self._send_half(stream_id).buffer_limit = limit

    def send_message(self, data: bytes) -> None:
        self._check_open()
        if len(data) > self.config.max_message_size:
            raise MessageTooLarge(
                f"message of {len(data)} bytes, at most {self.config.max_message_size}"
            )
        send = self._send[self.message_stream]
        send.write(LENGTH.pack(len(data)))
        send.write(data)
        self._schedule(send)

    def read(self, stream_id: int, max_bytes: int = -1) -> bytes:
        if self._finished(stream_id):
            return b""
        recv = self._recv_half(stream_id)
        data = recv.read(max_bytes)
        self._readable_told.discard(stream_id)
        self._consumed(recv, len(data))
        self._forget(stream_id)
        return data

    def readable(self, stream_id: int) -> int:
        return 0 if self._finished(stream_id) else self._recv_half(stream_id).readable

    def at_eof(self, stream_id: int) -> bool:
        return self._finished(stream_id) or self._recv_half(stream_id).at_eof

    def sending_done(self, stream_id: int) -> bool:
        """Everything we wrote on the stream, its end included, was acknowledged (or the
        stream was reset, or is gone)."""
        send = self._send.get(stream_id)
        return send is None or send.done

    def reset_code(self, stream_id: int) -> int | None:
        recv = self._recv.get(stream_id)
        return None if recv is None else recv.reset_code

    def reset_stream(self, stream_id: int, code: int = 0) -> None:
        send = self._send_half(stream_id)
        if send.reset_code is None and not send.fin_acked:
            send.reset(code)
            self._control[(f.RESET_STREAM, stream_id)] = None
            self._sendable.pop(stream_id, None)

    def stop_sending(self, stream_id: int, code: int = 0) -> None:
        recv = self._recv_half(stream_id)
        if recv.stop_code is None and not recv.at_eof:
            recv.stop(code)
            self._control[(f.STOP_SENDING, stream_id)] = None

    def send_datagram(self, data: bytes) -> None:
        self._check_open()
        limit = self.config.max_packet_size - f.PACKET_HEADER.size - f.DATAGRAM_HEADER_SIZE
        if len(data) > limit - 64:  # room for an ACK beside it
            raise MessageTooLarge(f"datagram of {len(data)} bytes, at most {limit - 64}")
        self._datagrams.append(data)
        self._datagram_bytes += len(data)
        while self._datagram_bytes > self.config.datagram_queue_limit:
            self._datagram_bytes -= len(self._datagrams.popleft())  # unreliable: oldest go

    def ping(self) -> None:
        """Send something ack-eliciting (a keepalive that proves the path both ways)."""
        if self.state is ConnectionState.OPEN:
            self._ping = True

    def close(self, code: int = ErrorCode.NO_ERROR, reason: str = "") -> None:
        if self.state is ConnectionState.OPEN:
            self.state = ConnectionState.CLOSING
            self.close_code, self.close_reason = code, reason

    def path_changed(self, now: float, *, probe_mtu: bool = False) -> None:
        """The path moved: its RTT, capacity and MTU are unknown, and what was in flight on
        the old one is resent now (RFC 9000 9.4). ``probe_mtu``: search this path for
        packets above max_packet_size (see probe_mtu)."""
        self._mtu.restart(False)
        self._on_lost(self._recovery.on_path_changed(now))
        self._waiting_since = None
        self.probe_mtu(probe_mtu)

    def probe_mtu(self, enabled: bool = True) -> None:
        """Search the current path for the largest packet it carries, up to
        max_probed_packet_size (RFC 8899); packets start at max_packet_size again. For
        paths whose every hop sends with DF set and never fragments: not a relay, whose
        own framing and sockets this side cannot see."""
        self._mtu.restart(enabled)

    @property
    def packet_size(self) -> int:
        """The largest packet sent on this path now (plaintext, before sealing)."""
        return self._mtu.size

    @property
    def probing_mtu(self) -> bool:
        """Whether the path MTU search is still going on."""
        return self._mtu.searching

    def next_event(self) -> TransportEvent | None:
        return self._events.popleft() if self._events else None

    # ------------------------------------------------------------------ helpers

    def _open(self, stream_id: int) -> None:
        config = self.config
        self._send[stream_id] = SendHalf(
            stream_id, config.initial_max_stream_data, config.send_buffer_limit
        )
        self._recv[stream_id] = ReceiveHalf(stream_id, self.config.initial_max_stream_data)

    def _finished(self, stream_id: int) -> bool:
        """A user stream that existed and is finished both ways (and so forgotten)."""
        if stream_id in self._recv or stream_id < FIRST_USER_STREAM:
            return False
        if stream_id % 2 == self._parity:
            return stream_id < self._next_local
        return stream_id < self._next_remote

    def _send_half(self, stream_id: int) -> SendHalf:
        send = self._send.get(stream_id)
        if send is None:
            raise StreamStateError(f"no stream {stream_id}")
        return send

    def _recv_half(self, stream_id: int) -> ReceiveHalf:
        recv = self._recv.get(stream_id)
        if recv is None:
            raise StreamStateError(f"no stream {stream_id}")
        return recv

    def _check_open(self) -> None:
        if self.state is not ConnectionState.OPEN:
            raise ConnectionClosedError("the connection is closed")

    def _consumed(self, recv: ReceiveHalf, count: int) -> None:
        if recv.want_limit:
            recv.want_limit = False
            self._control[(f.MAX_STREAM_DATA, recv.stream_id)] = None
        self._recv_consumed += count
        window = self.config.initial_max_data
        if self._recv_limit - self._recv_consumed <= window // 2:
            self._recv_limit = self._recv_consumed + window
            self._control[(f.MAX_DATA, 0)] = None

    def _forget(self, stream_id: int) -> None:
        """A user stream finished both ways: drop it, and give the peer a slot back."""
        if stream_id < FIRST_USER_STREAM:
            return
        send, recv = self._send.get(stream_id), self._recv.get(stream_id)
        if send is None or recv is None or not (send.done and recv.done):
            return
        del self._send[stream_id], self._recv[stream_id]
        self._readable_told.discard(stream_id)
        if stream_id % 2 != self._parity:
            self._remote_closed += 1
            self._local_limit = self.config.max_streams + self._remote_closed
            self._control[(f.MAX_STREAMS, 0)] = None
