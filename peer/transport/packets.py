"""The sending half of ``TransportConnection``: what goes into each packet, in which
order, and what happens to its frames when the packet is acknowledged or lost.

Order within a packet: an ACK (when one is owed), control frames (limits, resets), queued
datagrams, then stream data, streams taking turns packet by packet. Acknowledgements go
out whenever owed; everything else waits for the congestion window and the pacer, except
the probes a PTO asks for (RFC 9002 6.2.4).

Each sent packet's record (the token ``Recovery`` hands back) lists its frames as tuples:
``(STREAM_RECORD, send_half, start, end, fin)``, ``(ACK_RECORD, largest)`` or
``(CONTROL_RECORD, key, frame)`` or ``(PROBE_RECORD, size)`` (a path MTU probe,
peer.transport.pmtu); datagrams and PINGs are never resent.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable

from peer.transport import frames as f
from peer.transport.acks import AckTracker
from peer.transport.config import TransportConfig
from peer.transport.events import TransportEvent
from peer.transport.pmtu import MtuSearch
from peer.transport.recovery import Recovery
from peer.transport.state import ConnectionState
from peer.transport.streams import ReceiveHalf, SendHalf

STREAM_RECORD, ACK_RECORD, CONTROL_RECORD, PROBE_RECORD = 0, 1, 2, 3
ControlKey = tuple[int, int]  # (frame type, stream id or 0)
_PING = b"\x01"
CLOSE_COPIES = 3
ACK_ONLY_RUN = 10
_STREAM_ROOM = f.STREAM_HEADER.size + 16  # less room than this left: no stream frame


class PacketBuilder(ABC):
    # Set by TransportConnection (the one class this is a part of).
    config: TransportConfig
    state: ConnectionState
    close_code: int
    close_reason: str
    _recovery: Recovery
    _acks: AckTracker
    _events: deque[TransportEvent]
    _send: dict[int, SendHalf]
    _recv: dict[int, ReceiveHalf]
    _recv_limit: int
    _send_limit: int
    _send_total: int
    _local_limit: int

    def __init__(self, config: TransportConfig, now: float) -> None:
        self._next_number = 0
        self._sendable: dict[int, None] = {}  # streams with something to send, in turn
        self._conn_blocked: set[int] = set()  # streams waiting for connection credit
        self._control: dict[ControlKey, None] = {}
        self._datagrams: deque[bytes] = deque()
        self._datagram_bytes = 0
        self._ping = False
        self._ack_only_run = 0  # packets in a row that carried only an ACK
        self._mtu = MtuSearch(config.max_packet_size, config.max_probed_packet_size)
        self._probes = 0
        self._paced_until: float | None = None
        self._waiting_since: float | None = None
        self._data_blocked_at = -1
        # ACK delay (draft-ietf-quic-ack-frequency): what we may hold an ACK back (the
        # peer asks for less on a short path), and what we asked of the peer.
        self._ack_delay = config.max_ack_delay
        self._ack_frequency_in = -1  # the newest request's sequence number
        self._ack_frequency_out = 0
        self._requested_ack_delay = config.recovery.max_ack_delay

    # ------------------------------------------------------------------ timers

    def get_timer(self) -> float | None:
        if self.state is ConnectionState.CLOSED:
            return None
        if self.state is ConnectionState.CLOSING or self._acks.due_now or self._probes:
            return 0.0
        deadlines = [self._recovery.get_timer(), self._acks.due_at, self._paced_until]
        return min((t for t in deadlines if t is not None), default=None)

    def handle_timer(self, now: float) -> None:
        acks = self._acks
        if acks.due_at is not None and acks.due_at <= now:
            acks.due_now = True
        at = self._recovery.get_timer()
        if at is not None and at <= now:
            lost, probes = self._recovery.on_timer(now)
            self._on_lost(lost)
            self._probes = max(self._probes, probes)
        if self._paced_until is not None and self._paced_until <= now:
            self._paced_until = None

    # ------------------------------------------------------------------ sending

    def packets_to_send(self, now: float) -> list[bytes]:
        if self.state is ConnectionState.CLOSED:
            return []
        if self.state is ConnectionState.CLOSING:
            self.state = ConnectionState.CLOSED
            self._recovery.discard()
            frames: list[f.Frame] = []
            acks = self._acks
            if acks.ranges:  # (the peer's last data is acknowledged, or its drain fails)
                count = min(len(acks.ranges), 16)
                ranges = f.encodable_ranges(acks.descending()[:count])
                frames.append(f.AckFrame(ranges, max(0.0, now - acks.largest_at)))
            frames.append(f.ConnectionClose(self.close_code, self.close_reason))
            # Nothing is resent after a close, so it goes three times (sealed apart): a
            # lossy path still hears of it at once rather than after a keepalive timeout.
            return [f.encode_packet(self._next_number, frames)] * CLOSE_COPIES
        out: list[bytes] = []
        recovery = self._recovery
        probe_size = self._mtu.next_probe()
        if probe_size is not None and recovery.rtt.has_sample:
            out.append(self._mtu_probe(probe_size, now))
        size = self._mtu.size
        self._paced_until = None
        while True:
            acks = self._acks
            ack_owed = acks.due_now or (acks.due_at is not None and acks.due_at <= now)
            probe = self._probes > 0
            wants = bool(self._sendable or self._control or self._datagrams or self._ping)
            may = probe
            if wants and not probe and recovery.can_send(size):
                at = recovery.send_time(now)
                if at <= now:
                    may = True
                else:
                    self._paced_until = at
            if not ack_owed and not (may and (wants or probe)):
                break
            packet = self._build(now, may, probe)
            if packet is None:
                break
            out.append(packet)
        return out

    def _build(self, now: float, eliciting_allowed: bool, probe: bool) -> bytes | None:
        number = self._next_number
        parts = [f.PACKET_HEADER.pack(f.PACKET, number)]
        room = self._mtu.size - f.PACKET_HEADER.size
        records: list[tuple[object, ...]] = []
        acks = self._acks
        if acks.ranges and (acks.eliciting or acks.due_now):
            count = min(
                len(acks.ranges), 1 + (room // 3 - f.ack_size(1)) // f.ACK_MAX_SIZE_PER_RANGE
            )
            ranges = f.encodable_ranges(acks.descending()[:count])
            parts.append(f.encode_ack(ranges, max(0.0, now - acks.largest_at)))
            room -= f.ack_size(len(ranges))
            records.append((ACK_RECORD, ranges[0][1]))
            acks.sent()
        eliciting = False
        if eliciting_allowed:
            if self._control:
                room, eliciting = self._add_control(parts, records, room)
            datagrams = self._datagrams
            while datagrams and len(datagrams[0]) + f.DATAGRAM_HEADER_SIZE <= room:
                data = datagrams.popleft()
                self._datagram_bytes -= len(data)
                parts.append(f.DatagramFrame(data).encode())
                room -= len(data) + f.DATAGRAM_HEADER_SIZE
                eliciting = True
            sendable = self._sendable
            while room > _STREAM_ROOM and sendable:
                stream_id = next(iter(sendable))
                send = self._send.get(stream_id)
                chunk = None if send is None else self._chunk(send, room - f.STREAM_HEADER.size)
                del sendable[stream_id]
                if chunk is None:
                    continue
                assert send is not None
                offset, data, fin = chunk
                kind = f.STREAM_FIN if fin else f.STREAM
                if len(parts) == 1:  # the first frame: one pack for both headers
                    parts[0] = f.SOLO_STREAM.pack(
                        f.PACKET, number, kind, stream_id, offset, len(data)
                    )
                else:
                    parts.append(f.STREAM_HEADER.pack(kind, stream_id, offset, len(data)))
                parts.append(data)
                room -= f.STREAM_HEADER.size + len(data)
                records.append((STREAM_RECORD, send, offset, offset + len(data), fin))
                eliciting = True
                if send.lost or send.has_new():
                    sendable[stream_id] = None  # its next turn: after the others
            # Every ACK_ONLY_RUN-th packet of ours that would carry only an ACK carries a
            # PING too (RFC 9000 13.2.4): the peer's acknowledgement of it lets us stop
            # reporting old ranges, and lets recovery forget our ACK-only packets.
            ack_only = not eliciting and bool(records)
            if ack_only and self._ack_only_run >= ACK_ONLY_RUN:
                self._ping = True
            if self._ping or (probe and not eliciting):
                parts.append(_PING)
                self._ping = False
                eliciting = True
        if not records and not eliciting:
            return None
        self._ack_only_run = 0 if eliciting else self._ack_only_run + 1
        if probe and eliciting:
            self._probes -= 1
        self._next_number = number + 1
        packet = b"".join(parts)
        idle = not self._recovery.bytes_in_flight
        self._recovery.on_packet_sent(
            number, len(packet), now, ack_eliciting=eliciting, in_flight=eliciting, token=records
        )
        # The wait for an answer starts with the first packet that asks for one while
        # nothing else does (what was in flight may have been declared lost meanwhile).
        if eliciting and (self._waiting_since is None or idle):
            self._waiting_since = now
        return packet

    def _mtu_probe(self, size: int, now: float) -> bytes:
        """A PING padded to ``size`` (RFC 8899 4.1): outside congestion control, so that
        its loss, likely when the path cannot carry it, is no congestion signal."""
        number = self._next_number
        self._next_number = number + 1
        header = f.PACKET_HEADER.pack(f.PACKET, number)
        packet = header + _PING + bytes(size - len(header) - 1)
        self._recovery.on_packet_sent(
            number, size, now, ack_eliciting=True, in_flight=False, token=[(PROBE_RECORD, size)]
        )
        self._mtu.on_sent(size)
        return packet

    def _chunk(self, send: SendHalf, room: int) -> tuple[int, bytes, bool] | None:
        """(offset, data, fin) of the next frame from ``send``: a lost range first, then
        new bytes within flow control. None: nothing it may send now."""
        if send.lost:
            lost = send.next_lost()
            if lost is not None:
                start, end = lost
                length = min(end - start, room)
                if start + length >= end:
                    send.lost.pop(0)
                else:
                    send.lost[0] = (start + length, end)
                return start, send.take(start, length), False
        if send.reset_code is not None:
            return None
        offset = send.sent
        credit = self._send_limit - self._send_total
        new_end = min(send.end, send.limit, offset + room, offset + credit)
        length = new_end - offset
        fin_owed = send.fin and not send.fin_sent
        if length <= 0:
            if fin_owed and offset == send.end:
                send.fin_sent = True
                return offset, b"", True
            if offset < send.end:
                self._blocked(send, credit)
            return None
        fin = fin_owed and new_end == send.end
        send.sent = new_end
        self._send_total += length
        if fin:
            send.fin_sent = True
        return offset, send.take(offset, length), fin

    def _blocked(self, send: SendHalf, credit: int) -> None:
        """Flow control holds ``send`` back: say so once per limit (RFC 9000 4.1)."""
        if credit <= 0:
            self._conn_blocked.add(send.stream_id)
            if self._data_blocked_at != self._send_limit:
                self._data_blocked_at = self._send_limit
                self._control[(f.DATA_BLOCKED, 0)] = None
        elif send.blocked_at != send.limit:
            send.blocked_at = send.limit
            self._control[(f.STREAM_DATA_BLOCKED, send.stream_id)] = None

    def _add_control(
        self, parts: list[bytes], records: list[tuple[object, ...]], room: int
    ) -> tuple[int, bool]:
        added = False
        for key in list(self._control):
            frame = self._control_frame(key)
            if frame is None:
                del self._control[key]
                continue
            encoded = frame.encode()
            if len(encoded) > room:
                break
            del self._control[key]
            parts.append(encoded)
            room -= len(encoded)
            records.append((CONTROL_RECORD, key, frame))
            added = True
        return room, added

    def _control_frame(self, key: ControlKey) -> f.Frame | None:
        """The frame for ``key`` with today's values (a resent limit is the newest), or
        None if it has become pointless."""
        kind, stream_id = key
        if kind == f.MAX_DATA:
            return f.MaxData(self._recv_limit)
        if kind == f.MAX_STREAMS:
            return f.MaxStreams(self._local_limit)
        if kind == f.DATA_BLOCKED:
            return f.DataBlocked(self._send_limit)
        if kind == f.ACK_FREQUENCY:
            return f.AckFrequency(self._ack_frequency_out, self._requested_ack_delay)
        send, recv = self._send.get(stream_id), self._recv.get(stream_id)
        if kind == f.MAX_STREAM_DATA and recv is not None and recv.final_size is None:
            return f.MaxStreamData(stream_id, recv.limit)
        if kind == f.STREAM_DATA_BLOCKED and send is not None:
            return f.StreamDataBlocked(stream_id, send.limit)
        if kind == f.RESET_STREAM and send is not None and not send.reset_acked:
            assert send.reset_code is not None
            return f.ResetStream(stream_id, send.reset_code, send.sent)
        if kind == f.STOP_SENDING and recv is not None and recv.stop_code is not None:
            return None if recv.final_size is not None else f.StopSending(stream_id, recv.stop_code)
        return None

    def _schedule(self, send: SendHalf) -> None:
        if send.lost or send.has_new():
            self._sendable[send.stream_id] = None

    def _unblock_all(self) -> None:
        for stream_id in self._conn_blocked:
            send = self._send.get(stream_id)
            if send is not None:
                self._schedule(send)
        self._conn_blocked.clear()

    # ------------------------------------------------------------------ outcomes

    def _on_lost(self, lost: Iterable[object]) -> None:
        for token in lost:
            for record in token:  # type: ignore[attr-defined]
                kind = record[0]
                if kind == STREAM_RECORD:
                    send = record[1]
                    send.on_lost(record[2], record[3], record[4])
                    if send.stream_id in self._send:
                        self._schedule(send)
                elif kind == CONTROL_RECORD:
                    self._control[record[1]] = None  # (built afresh, or dropped, when sent)
                elif kind == PROBE_RECORD:
                    self._mtu.on_lost(record[1])

    @abstractmethod
    def _forget(self, stream_id: int) -> None:
        """A stream may have finished both ways: drop it if so (the connection's rule)."""
