"""The receiving half of ``TransportConnection``: what each incoming packet's frames do,
acknowledgements above all (what our sent packets' fates mean, and how soon the peer
should acknowledge). The sending half is peer.transport.packets'.
"""

from __future__ import annotations

from abc import abstractmethod

from peer.transport import frames as f
from peer.transport.errors import ErrorCode, PeerViolation, TransportDecodeError
from peer.transport.events import (
    ConnectionClosedByPeer,
    DatagramReceived,
    MessageReceived,
    StopSendingReceived,
    StreamOpened,
    StreamReadable,
    StreamReset,
    StreamsAvailable,
    StreamSent,
    StreamWritable,
)
from peer.transport.messages import MessageReader
from peer.transport.packets import (
    ACK_RECORD,
    PROBE_RECORD,
    STREAM_RECORD,
    ControlKey,
    PacketBuilder,
)
from peer.transport.state import ConnectionState
from peer.transport.streams import ReceiveHalf

_STREAM_KINDS = frozenset({f.STREAM, f.STREAM_FIN})
FIRST_USER_STREAM = 2  # streams 0 and 1 carry messages


class PacketReceiver(PacketBuilder):
    # Set by TransportConnection (the one class this is a part of).
    _parity: int
    _next_local: int
    _next_remote: int
    _remote_limit: int
    _recv_total: int
    _readable_told: set[int]
    _messages: MessageReader

    # ------------------------------------------------------------------ packets

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
        one out of order, RFC 9000 13.2.1), or within the ACK delay (the configured
        max_ack_delay, or less if the peer asked for less)."""
        acks = self._acks
        acks.eliciting += 1
        if not in_order or acks.eliciting >= self.config.ack_eliciting_threshold:
            acks.due_now = True
        elif acks.due_at is None:
            acks.due_at = now + self._ack_delay

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
        else:
            if (recv.readable or recv.at_eof) and stream_id not in self._readable_told:
                self._readable_told.add(stream_id)
                self._events.append(StreamReadable(stream_id))
            if recv.at_eof:
                # The end came after everything was read (its own frame, a FIN alone): no
                # read() will follow to finish the stream, so finish it here if our side
                # is done too, or it is never forgotten and its slot never given back.
                self._forget(stream_id)

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
        elif isinstance(frame, f.AckFrequency):
            if frame.sequence > self._ack_frequency_in:
                self._ack_frequency_in = frame.sequence
                self._ack_delay = min(frame.delay, self.config.max_ack_delay)
        elif isinstance(frame, f.ConnectionClose) and self.state is not ConnectionState.CLOSED:
            self.state = ConnectionState.CLOSED
            self.close_code, self.close_reason = frame.code, frame.reason
            self._events.append(ConnectionClosedByPeer(frame.code, frame.reason))
        elif isinstance(frame, f.DataBlocked):
            if self._recv_limit > frame.limit:  # our MAX_DATA was lost, or is on its way
                self._control[(f.MAX_DATA, 0)] = None
        elif isinstance(frame, f.StreamDataBlocked):
            recv = self._recv.get(frame.stream_id)
            if recv is not None and recv.limit > frame.limit:
                self._control[(f.MAX_STREAM_DATA, frame.stream_id)] = None
        # PING: acknowledged, nothing more to do. A BLOCKED frame asks for nothing new
        # (our limits move as the application reads), only for a lost update again: our
        # own loss detection would find it too, but a receiver that only acknowledges has
        # no round-trip sample and waits out a probe timeout from the initial 100 ms.

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

    # ------------------------------------------------------------------ acknowledgements

    def _on_ack(self, frame: f.AckFrame, now: float) -> None:
        acked, lost = self._recovery.on_ack_received(frame.ranges, frame.delay, now)
        if acked:
            for token in acked:
                for record in token:  # type: ignore[attr-defined]
                    kind = record[0]
                    if kind == STREAM_RECORD:
                        send = record[1]
                        was_done = send.done
                        send.on_acked(record[2], record[3], record[4])
                        if send.want_writable and send.buffered < send.buffer_limit:
                            send.want_writable = False
                            self._events.append(StreamWritable(send.stream_id))
                        if send.done and not was_done:
                            self._events.append(StreamSent(send.stream_id))
                            self._forget(send.stream_id)
                    elif kind == ACK_RECORD:
                        self._acks.forget_through(record[1])
                    elif kind == PROBE_RECORD:
                        self._mtu.on_acked(record[1])
                    else:
                        self._control_acked(record[1], record[2])
            self._waiting_since = now if self._recovery.bytes_in_flight else None
            self._tune_ack_delay()
        if lost:
            self._on_lost(lost)

    def _tune_ack_delay(self) -> None:
        """Ask the peer to acknowledge within a quarter of the round trip (at least the
        timer granularity, at most its promise), so that a lone packet on a short path is
        acknowledged, or found lost, in about a round trip rather than after 25 ms; asked
        again when the round trip has changed by more than twice."""
        recovery = self._recovery
        rtt, config = recovery.rtt, recovery.config
        if not rtt.has_sample:
            return
        wanted = min(max(rtt.smoothed_rtt / 4, config.granularity), config.max_ack_delay)
        requested = self._requested_ack_delay
        if requested / 2 <= wanted <= requested * 2:
            return
        self._requested_ack_delay = wanted
        self._ack_frequency_out += 1
        # More delay counts at once; less only once the peer has the request.
        recovery.peer_ack_delay = max(recovery.peer_ack_delay, wanted)
        self._control[(f.ACK_FREQUENCY, 0)] = None

    def _control_acked(self, key: ControlKey, frame: object) -> None:
        kind, stream_id = key
        if kind == f.ACK_FREQUENCY:
            assert isinstance(frame, f.AckFrequency)
            if frame.sequence == self._ack_frequency_out:
                self._recovery.peer_ack_delay = frame.delay
        elif kind == f.RESET_STREAM and (send := self._send.get(stream_id)) is not None:
            if not send.reset_acked:
                send.reset_acked = True
                self._events.append(StreamSent(stream_id))
            self._forget(stream_id)
        elif kind == f.STOP_SENDING and (recv := self._recv.get(stream_id)) is not None:
            recv.stop_sent = True
            self._forget(stream_id)

    @abstractmethod
    def _open(self, stream_id: int) -> None:
        """Create both halves of a stream (the connection's)."""

    @abstractmethod
    def _consumed(self, recv: ReceiveHalf, count: int) -> None:
        """The application took ``count`` bytes: raise our limits as due."""

    @abstractmethod
    def reset_stream(self, stream_id: int, code: int = 0) -> None:
        """Abandon sending on a stream (RESET_STREAM)."""
