"""``TransportConnection``: streams, messages and datagrams over one lossy datagram path,
sans-I/O, shaped like aioquic's ``QuicConnection``.

The owner feeds it decrypted packets (``receive_packet``) and timer expiries
(``handle_timer``), drains ``packets_to_send`` (plaintext, at most ``max_packet_size``
each: the owner seals them) and ``next_event``. It never reads a clock: ``now`` comes in.

Streams: 0 carries the initiator's messages, 1 the responder's (each message a 4-byte
length and its bytes); user streams are bidirectional, the initiator's even from 2, the
responder's odd from 3. Packet building is peer.transport.packets'.
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
    PeerViolation,
    StreamLimitError,
    StreamStateError,
    TransportDecodeError,
)
from peer.transport.events import (
    ConnectionClosedByPeer,
    DatagramReceived,
    MessageReceived,
    StopSendingReceived,
    StreamOpened,
    StreamReadable,
    StreamReset,
    StreamsAvailable,
    TransportEvent,
)
from peer.transport.messages import LENGTH, MessageReader
from peer.transport.packets import PacketBuilder
from peer.transport.recovery import Recovery
from peer.transport.state import ConnectionState
from peer.transport.streams import ReceiveHalf, SendHalf

_STREAM_KINDS = frozenset({f.STREAM, f.STREAM_FIN})
FIRST_USER_STREAM = 2


class TransportConnection(PacketBuilder):
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
        """Since when something ack-eliciting has waited for an answer (None: nothing)."""
        return self._waiting_since

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
        """False while the stream buffers ``send_buffer_limit`` or more (wait for
        StreamWritable)."""
        send = self._send_half(stream_id)
        if send.buffered < self.config.send_buffer_limit:
            return True
        send.want_writable = True
        return False

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

    def path_changed(self, now: float) -> None:
        """The path moved: its RTT and capacity are unknown, and what was in flight on the
        old one is resent now (RFC 9000 9.4)."""
        self._on_lost(self._recovery.on_path_changed(now))
        self._waiting_since = None

    def next_event(self) -> TransportEvent | None:
        return self._events.popleft() if self._events else None

    # ------------------------------------------------------------------ receiving

    def receive_packet(self, packet: bytes, now: float) -> None:
        """A decrypted packet. Raises TransportDecodeError or PeerViolation (the owner
        then closes the connection with ``error.code``)."""
        if self.state is ConnectionState.CLOSED:
            return
        acks = self._acks
        size = len(packet)
        if size >= f.SOLO_STREAM.size and packet[f.PACKET_HEADER.size] in _STREAM_KINDS:
            # The bulk of traffic: a packet that is one stream frame (no frame objects).
            marker, number, kind, stream_id, offset, length = f.SOLO_STREAM.unpack_from(packet)
            if marker == f.PACKET and f.SOLO_STREAM.size + length == size:
                in_order = acks.add(number, now)
                if offset + length > f.MAX_OFFSET:
                    raise TransportDecodeError("stream offset beyond 2**62")
                data = memoryview(packet)[f.SOLO_STREAM.size :]
                self._on_stream(stream_id, offset, data, kind == f.STREAM_FIN)
                self._elicited(in_order, now)
                return
        number, frame_list = f.parse_packet(packet)
        in_order = acks.add(number, now)
        eliciting = False
        for frame in frame_list:
            kind = type(frame)
            if isinstance(frame, f.StreamFrame):
                eliciting = True
                self._on_stream(frame.stream_id, frame.offset, frame.data, frame.fin)
            elif kind is f.AckFrame:
                self._on_ack(frame, now)  # type: ignore[arg-type]
            elif kind is f.Padding:
                pass
            else:
                eliciting = True
                self._on_control(frame)
        if eliciting:
            self._elicited(in_order, now)

    def _elicited(self, in_order: bool, now: float) -> None:
        """An ack-eliciting packet arrived: acknowledge at once (every second one, or
        one out of order, RFC 9000 13.2.1), or within max_ack_delay."""
        acks = self._acks
        acks.eliciting += 1
        if not in_order or acks.eliciting >= self.config.ack_eliciting_threshold:
            acks.due_now = True
        elif acks.due_at is None:
            acks.due_at = now + self.config.max_ack_delay

    def _on_stream(self, stream_id: int, offset: int, data: bytes | memoryview, fin: bool) -> None:
        recv = self._recv.get(stream_id)
        if recv is None:
            recv = self._remote_stream(stream_id)
            if recv is None:
                return  # a late frame for a stream already finished
        grown = recv.on_data(offset, data, fin)
        if grown:
            self._recv_total += grown
            if self._recv_total > self._recv_limit:
                raise PeerViolation(ErrorCode.FLOW_CONTROL_ERROR, "connection flow control")
        if stream_id < FIRST_USER_STREAM:
            self._read_messages(recv)
        elif (recv.readable or recv.at_eof) and stream_id not in self._readable_told:
            self._readable_told.add(stream_id)
            self._events.append(StreamReadable(stream_id))

    def _read_messages(self, recv: ReceiveHalf) -> None:
        if recv.readable:
            data = recv.read(-1)
            self._consumed(recv, len(data))
            for message in self._messages.feed(data):
                self._events.append(MessageReceived(message))

    def _on_control(self, frame: f.Frame) -> None:
        if isinstance(frame, f.MaxData):
            if frame.limit > self._send_limit:
                self._send_limit = frame.limit
                self._unblock_all()
        elif isinstance(frame, f.MaxStreamData):
            send = self._send.get(frame.stream_id)
            if send is not None and frame.limit > send.limit:
                send.limit = frame.limit
                self._schedule(send)
        elif isinstance(frame, f.MaxStreams):
            if frame.limit > self._remote_limit:
                self._remote_limit = frame.limit
                self._events.append(StreamsAvailable(frame.limit))
        elif isinstance(frame, f.ResetStream):
            recv = self._recv.get(frame.stream_id) or self._remote_stream(frame.stream_id)
            if recv is not None and recv.reset_code is None:
                grown = recv.on_reset(frame.code, frame.final_size)
                self._recv_total += grown
                self._consumed(recv, grown)
                self._events.append(StreamReset(frame.stream_id, frame.code))
                self._forget(frame.stream_id)
        elif isinstance(frame, f.StopSending):
            send = self._send.get(frame.stream_id)
            if send is not None and send.reset_code is None and not send.fin_acked:
                self.reset_stream(frame.stream_id, frame.code)
                self._events.append(StopSendingReceived(frame.stream_id, frame.code))
        elif isinstance(frame, f.DatagramFrame):
            self._events.append(DatagramReceived(bytes(frame.data)))
        elif isinstance(frame, f.ConnectionClose) and self.state is not ConnectionState.CLOSED:
            self.state = ConnectionState.CLOSED
            self.close_code, self.close_reason = frame.code, frame.reason
            self._events.append(ConnectionClosedByPeer(frame.code, frame.reason))
        # PING, DATA_BLOCKED, STREAM_DATA_BLOCKED: acknowledged, nothing more to do (our
        # limits move as the application reads, not when asked).

    def _remote_stream(self, stream_id: int) -> ReceiveHalf | None:
        """The receiving half for a frame on a stream we do not have: the peer opens it
        (and every lower one of its own), or it is long finished (None)."""
        if stream_id % 2 == self._parity:
            if stream_id >= self._next_local:
                raise PeerViolation(ErrorCode.STREAM_STATE_ERROR, f"stream {stream_id} not opened")
            return None
        if stream_id < self._next_remote:
            return None
        if (stream_id - FIRST_USER_STREAM) // 2 >= self._local_limit:
            raise PeerViolation(ErrorCode.STREAM_LIMIT_ERROR, f"stream {stream_id} over the limit")
        while self._next_remote <= stream_id:
            self._open(self._next_remote)
            self._events.append(StreamOpened(self._next_remote))
            self._next_remote += 2
        return self._recv[stream_id]

    # ------------------------------------------------------------------ helpers

    def _open(self, stream_id: int) -> None:
        self._send[stream_id] = SendHalf(stream_id, self.config.initial_max_stream_data)
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
