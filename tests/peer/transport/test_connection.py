"""A transport pair over an in-memory link in virtual time (tests/peer/transport/pair.py):
messages, streams, datagrams, flow control, loss, path changes and closes."""

from __future__ import annotations

import hashlib
import random

import pytest

from peer.transport import frames as f
from peer.transport.config import MIB, TransportConfig
from peer.transport.connection import TransportConnection
from peer.transport.errors import (
    ConnectionClosedError,
    MessageTooLarge,
    StreamLimitError,
    StreamStateError,
)
from peer.transport.events import (
    ConnectionClosedByPeer,
    DatagramReceived,
    MessageReceived,
    StopSendingReceived,
    StreamOpened,
    StreamReset,
    StreamWritable,
)
from tests.peer.transport.pair import Pair


def _messages(pair: Pair, conn: TransportConnection) -> list[bytes]:
    return [e.data for e in pair.events[conn] if isinstance(e, MessageReceived)]


@pytest.mark.parametrize("loss", [0.0, 0.1])
def test_twenty_thousand_messages_arrive_once_and_in_order(loss: float) -> None:
    pair = Pair(loss=loss, seed=3)
    sent = [i.to_bytes(4, "big") + bytes(996) for i in range(20_000)]
    for message in sent:
        pair.a.send_message(message)
    got: list[bytes] = []
    pair.on_event = lambda conn, event: (
        got.append(event.data) if isinstance(event, MessageReceived) else None
    )
    pair.run(lambda: len(got) >= len(sent) and not pair.a.buffered)
    assert got == sent


@pytest.mark.parametrize("loss", [0.0, 0.1])
def test_a_fifty_megabyte_message_arrives_whole(loss: float) -> None:
    pair = Pair(TransportConfig(max_message_size=64 * MIB), loss=loss, seed=5)
    message = random.Random(1).randbytes(50 * MIB)
    pair.a.send_message(message)
    pair.a.send_message(b"after")
    pair.run(lambda: len(_messages(pair, pair.b)) == 2)
    first, second = _messages(pair, pair.b)
    assert hashlib.sha256(first).digest() == hashlib.sha256(message).digest()
    assert second == b"after"


def test_messages_flow_both_ways_at_once() -> None:
    pair = Pair(loss=0.05, seed=9)
    for i in range(500):
        pair.a.send_message(b"a%d" % i)
        pair.b.send_message(b"b%d" % i)
    pair.run(lambda: len(_messages(pair, pair.a)) == 500 == len(_messages(pair, pair.b)))
    assert _messages(pair, pair.b) == [b"a%d" % i for i in range(500)]
    assert _messages(pair, pair.a) == [b"b%d" % i for i in range(500)]


def test_a_message_above_the_maximum_is_refused_clearly() -> None:
    conn = TransportConnection(config=TransportConfig(max_message_size=1000), initiator=True, now=0)
    with pytest.raises(MessageTooLarge, match="1001 bytes, at most 1000"):
        conn.send_message(bytes(1001))


def _readable(conn: TransportConnection, stream_id: int) -> int:
    """What can be read (0 too while the peer's first data has not arrived yet)."""
    return conn.readable(stream_id) if stream_id in conn._recv else 0


def _read_all(pair: Pair, conn: TransportConnection, stream_id: int) -> bytes:
    chunks = []
    while conn.readable(stream_id):
        chunks.append(conn.read(stream_id))
    return b"".join(chunks)


def test_streams_carry_bytes_both_ways_with_half_close() -> None:
    pair = Pair(loss=0.05, seed=2)
    a, b = pair.a, pair.b
    first, second = a.open_stream(), a.open_stream()
    assert (first, second) == (2, 4)
    payload = random.Random(2).randbytes(300_000)
    a.write(first, payload, end_stream=True)
    a.write(second, b"second")
    received: dict[int, bytearray] = {}

    def collect() -> bool:
        for stream_id in (first, second):
            if stream_id in b._recv:
                received.setdefault(stream_id, bytearray()).extend(_read_all(pair, b, stream_id))
        return (
            len(received.get(first, b"")) == len(payload)
            and b.at_eof(first)
            and bool(received.get(second))
        )

    pair.run(collect)
    assert bytes(received[first]) == payload and bytes(received[second]) == b"second"
    assert [e for e in pair.events[b] if isinstance(e, StreamOpened)] == [
        StreamOpened(2),
        StreamOpened(4),
    ]
    # The answer goes back on the same stream; the opener sees its end too.
    b.write(first, b"thanks", end_stream=True)
    pair.run(lambda: a.readable(first) == 6 and a._recv[first].final_size == 6)
    assert a.read(first) == b"thanks" and a.at_eof(first)
    # Finished both ways and acknowledged: both sides forget the stream.
    pair.run(lambda: first not in a._send and first not in b._send)


def test_the_responders_streams_are_odd_and_the_peer_learns_of_them() -> None:
    pair = Pair()
    stream_id = pair.b.open_stream()
    assert stream_id == 3
    pair.b.write(stream_id, b"x", end_stream=True)
    pair.run(lambda: StreamOpened(3) in pair.events[pair.a])


def test_a_reader_that_stops_reading_bounds_the_writers_memory() -> None:
    config = TransportConfig(initial_max_stream_data=256 * 1024, send_buffer_limit=512 * 1024)
    pair = Pair(config)
    a, b = pair.a, pair.b
    stream_id = a.open_stream()
    chunk = bytes(64 * 1024)
    written = 0
    while a.writable(stream_id):
        a.write(stream_id, chunk)
        written += len(chunk)
    assert written == 512 * 1024  # the writer is told to wait at the buffer limit
    pair.run(lambda: _readable(b, stream_id) == 256 * 1024 and not a.bytes_in_flight)
    # The receiver holds exactly its window, the sender the rest; nothing else moves.
    assert a._send[stream_id].sent == 256 * 1024 and a.buffered == written - 256 * 1024
    for _ in range(50):
        pair.run(lambda: True)
    # Reading frees the window: the rest comes, and the writer is told it may go on.
    got = bytearray()

    def drain() -> bool:
        got.extend(_read_all(pair, b, stream_id))
        return len(got) == written

    pair.run(drain)
    assert got == bytes(written)
    assert StreamWritable(stream_id) in pair.events[a]


def test_a_streams_own_buffer_limit_replaces_the_transports() -> None:
    pair = Pair(TransportConfig(send_buffer_limit=4 * MIB))
    a, b = pair.a, pair.b
    small, large = a.open_stream(), a.open_stream()
    a.limit_buffer(small, 128 * 1024)
    chunk = bytes(32 * 1024)
    written = {small: 0, large: 0}
    for stream_id in (small, large):
        while a.writable(stream_id) and written[stream_id] < 8 * MIB:
            a.write(stream_id, chunk)
            written[stream_id] += len(chunk)
    assert written == {small: 128 * 1024, large: 4 * MIB}
    got = bytearray()

    def read_small() -> bool:
        if _readable(b, small):
            got.extend(_read_all(pair, b, small))
        return len(got) == written[small]

    pair.run(read_small)
    assert StreamWritable(small) in pair.events[a]
    with pytest.raises(StreamStateError):
        a.limit_buffer(small, 0)


def test_a_stream_whose_end_comes_alone_after_everything_was_read_is_forgotten() -> None:
    # A tunnel's reply: the data, read at once, then the FIN in a frame of its own. No
    # read() follows it, and the stream used to stay for ever (and, on the side that
    # accepted it, kept the peer's stream slot: after max_streams such streams, no more).
    pair = Pair()
    a, b = pair.a, pair.b
    stream_id = a.open_stream()
    a.write(stream_id, b"request", end_stream=True)
    pair.run(lambda: _readable(b, stream_id) == len(b"request") and a.sending_done(stream_id))
    assert b.read(stream_id) == b"request" and b.at_eof(stream_id)
    b.write(stream_id, b"reply")
    pair.run(lambda: _readable(a, stream_id) == len(b"reply"))
    assert a.read(stream_id) == b"reply"
    b.write(stream_id, b"", end_stream=True)
    limit = a.config.max_streams + 1  # b gives the slot back
    pair.run(lambda: stream_id not in a._send and a._remote_limit == limit)
    assert stream_id not in b._send
    assert a.at_eof(stream_id) and a.reset_code(stream_id) is None


def test_connection_flow_control_limits_all_streams_together() -> None:
    config = TransportConfig(initial_max_data=100_000, initial_max_stream_data=1 * MIB)
    pair = Pair(config)
    ids = [pair.a.open_stream() for _ in range(3)]
    for stream_id in ids:
        pair.a.write(stream_id, bytes(80_000))
    pair.run(lambda: not pair.a.bytes_in_flight and pair.a._send_total > 0)
    assert pair.a._send_total == 100_000  # the connection's window, shared
    total = 0

    def drain() -> bool:
        nonlocal total
        for stream_id in ids:
            if stream_id in pair.b._recv:
                total += len(pair.b.read(stream_id))
        return total == 240_000

    pair.run(drain)  # reading gives the connection's credit back


def test_reset_and_stop_sending_reach_the_other_side() -> None:
    pair = Pair()
    a, b = pair.a, pair.b
    stream_id = a.open_stream()
    a.write(stream_id, bytes(10_000))
    pair.run(lambda: _readable(b, stream_id) == 10_000)
    a.reset_stream(stream_id, 7)
    pair.run(lambda: StreamReset(stream_id, 7) in pair.events[b])
    assert b.at_eof(stream_id) and b.reset_code(stream_id) == 7
    with pytest.raises(StreamStateError):
        a.write(stream_id, b"more")
    other = a.open_stream()
    a.write(other, b"data")
    pair.run(lambda: other in b._recv)
    b.stop_sending(other, 3)
    pair.run(lambda: StopSendingReceived(other, 3) in pair.events[a])
    pair.run(lambda: StreamReset(other, 3) in pair.events[b])


def test_the_stream_limit_holds_and_finished_streams_free_slots() -> None:
    pair = Pair(TransportConfig(max_streams=2))
    a, b = pair.a, pair.b
    s1, s2 = a.open_stream(), a.open_stream()
    with pytest.raises(StreamLimitError):
        a.open_stream()
    for stream_id in (s1, s2):
        a.write(stream_id, b"x", end_stream=True)
    pair.run(lambda: s1 in b._recv and s2 in b._recv and b.readable(s1) and b.readable(s2))
    b.read(s1)
    b.write(s1, b"", end_stream=True)
    pair.run(lambda: a._remote_limit == 3)
    assert a.open_stream() == 6


def test_datagrams_are_delivered_unreliably_beside_streams() -> None:
    pair = Pair()
    for i in range(20):
        pair.a.send_datagram(b"dgram %d" % i)
    pair.a.send_message(b"reliable")
    pair.run(lambda: _messages(pair, pair.b) == [b"reliable"])
    got = [e.data for e in pair.events[pair.b] if isinstance(e, DatagramReceived)]
    assert got == [b"dgram %d" % i for i in range(20)]
    with pytest.raises(MessageTooLarge):
        pair.a.send_datagram(bytes(1200))


def test_everything_survives_a_path_change_mid_transfer() -> None:
    pair = Pair(delay=0.02)
    sent = [b"%06d" % i + bytes(1000) for i in range(3000)]
    for message in sent:
        pair.a.send_message(message)
    pair.run(lambda: len(_messages(pair, pair.b)) > 500)
    pair.loss = 1.0  # the old path swallows whatever is in flight
    lost_from = pair.now
    pair.run(lambda: pair.now > lost_from + 0.3, max_time=5)
    pair.loss = 0.0
    pair.a.path_changed(pair.now)
    pair.b.path_changed(pair.now)
    pair.run(lambda: len(_messages(pair, pair.b)) == len(sent))
    assert _messages(pair, pair.b) == sent


def test_close_tells_the_peer_and_stops_everything() -> None:
    pair = Pair()
    pair.a.send_message(b"last words")
    pair.run(lambda: bool(_messages(pair, pair.b)))
    pair.a.close(0, "bye")
    pair.run(
        lambda: bool([e for e in pair.events[pair.b] if isinstance(e, ConnectionClosedByPeer)])
    )
    assert ConnectionClosedByPeer(0, "bye") in pair.events[pair.b]
    with pytest.raises(ConnectionClosedError):
        pair.a.send_message(b"more")
    assert pair.a.get_timer() is None and pair.b.get_timer() is None


def test_stalled_since_tells_how_long_the_peer_has_not_answered() -> None:
    pair = Pair()
    pair.a.send_message(b"hello")
    pair.run(lambda: bool(_messages(pair, pair.b)) and pair.a.stalled_since is None)
    pair.loss = 1.0
    pair.a.ping()
    pair.run(lambda: pair.a.stalled_since is not None)
    started = pair.a.stalled_since
    pair.run(lambda: pair.now > 5, max_time=10)
    assert pair.a.stalled_since == started  # probes resent in vain do not reset it


def test_on_a_short_path_a_lone_packet_is_acknowledged_within_the_round_trip() -> None:
    # 0.4 ms of round trip: the sender asks for ACKs within a quarter of it (at least the
    # 1 ms timer granularity) instead of the 25 ms max_ack_delay.
    pair = Pair(delay=0.0002)
    for _ in range(20):
        pair.a.send_message(bytes(100))
        pair.run(lambda: not pair.a.bytes_in_flight)
    sent_at = pair.now
    pair.a.send_message(b"alone")
    pair.run(lambda: not pair.a.bytes_in_flight)
    assert pair.now - sent_at < 0.002  # (25 ms before)


def test_a_lost_window_update_is_sent_again_when_the_sender_says_it_is_blocked() -> None:
    # b only acknowledges, so it has no round-trip sample of its own, and its probe timeout
    # for a lost MAX_STREAM_DATA would start from the initial 100 ms; a's
    # STREAM_DATA_BLOCKED brings the update back after one round trip instead.
    config = TransportConfig(initial_max_stream_data=64 * 1024, initial_max_data=MIB)
    pair = Pair(config, delay=0.001)
    stream = pair.a.open_stream()
    pair.a.write(stream, bytes(200 * 1024), end_stream=True)
    dropped: list[float] = []

    def drop_first_update(sender: TransportConnection, packet: bytes) -> bool:
        if sender is not pair.b or dropped:
            return False
        if any(isinstance(frame, f.MaxStreamData) for frame in f.parse_packet(packet)[1]):
            dropped.append(pair.now)
            return True
        return False

    pair.drop = drop_first_update
    got = bytearray()

    pair.run(lambda: pair.read_stream(stream, got), max_time=5.0)
    assert dropped and len(got) == 200 * 1024
    assert pair.now - dropped[0] < 0.05  # (above 0.3 s when it waited for the timeout)
