"""The file transfer's sans-I/O core: messages, the receiver's bookkeeping, names, modes,
and the progress meter (peer.transfer, peer.transfer_progress)."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.errors import LocalProtocolError
from peer.transfer import (
    FRAME_PREFIX,
    MAX_COPIES,
    MAX_FRAME,
    BodyReceived,
    FileVerified,
    IncomingFile,
    Offer,
    OfferReceived,
    OutgoingFile,
    ReceivePhase,
    TransferDecodeError,
    Verdict,
    candidate_names,
    file_name_problem,
    final_mode,
    frame,
    payload_length,
)
from peer.transfer_progress import (
    ProgressMeter,
    format_bytes,
    format_duration,
    progress_line,
)


def wire(name: str, content: bytes, mode: int | None = None) -> bytes:
    """What a sender writes for one file, built from the core's own sender side."""
    outgoing = OutgoingFile(Offer(name, len(content), mode))
    return outgoing.header() + outgoing.body(content) + outgoing.trailer()


def unframe(data: bytes) -> bytes:
    length = payload_length(data[: FRAME_PREFIX.size])
    assert len(data) == FRAME_PREFIX.size + length
    return data[FRAME_PREFIX.size :]


# ---------------------------------------------------------------- messages


@pytest.mark.parametrize(
    "offer", [Offer("a.txt", 0), Offer("résumé (final).pdf", 123_456, 0o640), Offer("x", 2**40)]
)
def test_offer_round_trip(offer: Offer) -> None:
    assert Offer.parse(unframe(offer.encode())) == offer


@pytest.mark.parametrize(
    "verdict", [Verdict.accepted("a (1).txt"), Verdict.refused("SHA-256 mismatch")]
)
def test_verdict_round_trip(verdict: Verdict) -> None:
    assert Verdict.parse(unframe(verdict.encode())) == verdict


def test_an_offer_ignores_fields_it_does_not_know() -> None:
    payload = json.dumps({"name": "a", "size": 3, "later": [1, 2]}).encode()
    assert Offer.parse(payload) == Offer("a", 3)


BAD_NAMES = [
    "",
    ".",
    "..",
    "../etc/passwd",
    "a/b",
    "/abs",
    "a\\b",
    "a\x00b",
    "line\nbreak",
    "\x1b[2Jclear",
    "del\x7f",
    "x" * 256,
    "é" * 128,  # 256 bytes of UTF-8
    "\udcff",  # an undecodable local name, surrogate-escaped
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_unsafe_names_are_refused_on_both_sides(name: str) -> None:
    assert file_name_problem(name) is not None
    with pytest.raises(LocalProtocolError):
        Offer(name, 1)
    payload = json.dumps({"name": name, "size": 1}).encode()
    with pytest.raises(TransferDecodeError, match="refused"):
        Offer.parse(payload)


@pytest.mark.parametrize("name", ["a..b", ".bashrc", "..hidden", "x" * 255, "日本語.txt", "a b"])
def test_ordinary_names_pass(name: str) -> None:
    assert file_name_problem(name) is None
    assert Offer.parse(unframe(Offer(name, 1).encode())).name == name


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"size": 1}', "without a file name"),
        (b'{"name": "a"}', "without a size"),
        (b'{"name": "a", "size": "12"}', "not an integer"),
        (b'{"name": "a", "size": true}', "not an integer"),
        (b'{"name": "a", "size": -1}', "size"),
        (b'{"name": "a", "size": 1, "mode": 65536}', "mode"),
        (b'{"name": "a", "size": 1, "mode": 1.5}', "not an integer"),
    ],
)
def test_malformed_offers(payload: bytes, message: str) -> None:
    with pytest.raises(TransferDecodeError, match=message):
        Offer.parse(payload)


@pytest.mark.parametrize(
    "payload",
    [
        b'{"ok": "yes"}',
        b'{"ok": true, "reason": "but why"}',
        b'{"ok": false}',
        b'{"ok": false, "reason": "evil\\u001b[2J"}',
        b'{"ok": true, "saved_as": "../x"}',
        b'{"ok": true, "saved_as": 7}',
    ],
)
def test_malformed_verdicts(payload: bytes) -> None:
    with pytest.raises(TransferDecodeError):
        Verdict.parse(payload)


def test_refused_verdicts_are_one_short_printable_line() -> None:
    verdict = Verdict.refused("first line\nsecond\x1b[31m" + "x" * 1000)
    assert "\n" not in verdict.reason and "\x1b" not in verdict.reason
    assert len(verdict.reason) <= 400 and verdict.reason.startswith("first line second?")
    assert Verdict.parse(unframe(verdict.encode())) == verdict


@pytest.mark.parametrize("length", [0, MAX_FRAME + 1, 2**32 - 1])
def test_frame_lengths_outside_the_limit(length: int) -> None:
    with pytest.raises(TransferDecodeError, match="frame length"):
        payload_length(FRAME_PREFIX.pack(length))
    with pytest.raises(TransferDecodeError):
        payload_length(b"\x00\x01")


# ---------------------------------------------------------------- both sides of a file


def feed(incoming: IncomingFile, data: bytes, cuts: list[int]) -> list[object]:
    events: list[object] = []
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        events += incoming.receive_data(data[start:cut])
        start = cut
    return events


@given(content=st.binary(max_size=3000), cuts=st.lists(st.integers(0, 3100), max_size=12))
def test_a_file_arrives_whole_in_any_split(content: bytes, cuts: list[int]) -> None:
    data = wire("f.bin", content, 0o600)
    incoming = IncomingFile()
    events = feed(incoming, data, [min(cut, len(data)) for cut in cuts])
    assert events[0] == OfferReceived(Offer("f.bin", len(content), 0o600))
    body = b"".join(e.data for e in events if isinstance(e, BodyReceived))
    assert body == content
    assert events[-1] == FileVerified(hashlib.sha256(content).hexdigest())
    incoming.receive_eof()
    assert incoming.phase is ReceivePhase.DONE and incoming.received == len(content)


def test_one_byte_at_a_time_and_an_empty_file() -> None:
    incoming = IncomingFile()
    data = wire("empty", b"")
    events = feed(incoming, data, list(range(len(data))))
    assert [type(e) for e in events] == [OfferReceived, FileVerified]
    incoming.receive_eof()


def test_a_changed_byte_is_a_hash_mismatch() -> None:
    data = bytearray(wire("f", b"hello world" * 100))
    data[-40] ^= 0x01  # inside the body
    with pytest.raises(TransferDecodeError, match="SHA-256 mismatch"):
        IncomingFile().receive_data(bytes(data))


@pytest.mark.parametrize(
    ("keep", "message"),
    [(0, "before the offer"), (3, "before the offer"), (-40, "short file"), (-5, "trailer")],
)
def test_an_early_end_is_refused(keep: int, message: str) -> None:
    data = wire("f", b"x" * 100)
    incoming = IncomingFile()
    incoming.receive_data(data[:keep])
    with pytest.raises(TransferDecodeError, match=message):
        incoming.receive_eof()


def test_bytes_after_the_trailer_are_refused() -> None:
    with pytest.raises(TransferDecodeError, match="after the SHA-256"):
        IncomingFile().receive_data(wire("f", b"abc") + b"more")


def test_the_sender_refuses_to_send_more_or_less_than_offered() -> None:
    outgoing = OutgoingFile(Offer("f", 4))
    outgoing.body(b"abc")
    with pytest.raises(LocalProtocolError, match="shrank"):
        outgoing.trailer()
    with pytest.raises(LocalProtocolError, match="more than"):
        outgoing.body(b"de")


def test_frame_is_a_length_prefix() -> None:
    assert frame(b"abc") == b"\x00\x00\x00\x03abc"


# ---------------------------------------------------------------- names and modes


@pytest.mark.parametrize(
    ("name", "second", "third"),
    [
        ("a.txt", "a (1).txt", "a (2).txt"),
        ("archive.tar.gz", "archive (1).tar.gz", "archive (2).tar.gz"),
        ("Makefile", "Makefile (1)", "Makefile (2)"),
        (".bashrc", ".bashrc (1)", ".bashrc (2)"),
        ("v1.2.notes", "v1.2 (1).notes", "v1.2 (2).notes"),
    ],
)
def test_candidate_names(name: str, second: str, third: str) -> None:
    names = list(candidate_names(name))
    assert names[:3] == [name, second, third]
    assert len(names) == len(set(names)) == MAX_COPIES


@pytest.mark.parametrize(
    ("offered", "umask", "mode"),
    [(None, 0o022, 0o644), (0o755, 0o022, 0o755), (0o4777, 0o027, 0o750), (0o600, 0, 0o600)],
)
def test_final_mode(offered: int | None, umask: int, mode: int) -> None:
    assert final_mode(offered, umask) == mode


# ---------------------------------------------------------------- progress


def test_progress_rate_follows_the_window_not_the_average() -> None:
    meter = ProgressMeter(20_000, now=0.0, window=2.0, interval=0.0)
    for second in range(1, 6):  # 1,000 B/s for five seconds
        progress = meter.advance(1000, now=float(second))
    assert progress is not None and progress.rate == pytest.approx(1000)
    for tenth in range(1, 21):  # then 4,000 B/s for two seconds
        progress = meter.advance(400, now=5.0 + tenth / 10)
    assert progress is not None
    assert progress.rate == pytest.approx(4000)  # the overall average would be 1,857
    assert progress.done == 13_000 and progress.eta == pytest.approx(7000 / 4000)


def test_progress_eta_and_fraction() -> None:
    meter = ProgressMeter(1000, now=10.0, window=5.0, interval=0.0)
    progress = meter.advance(250, now=11.0)
    assert progress is not None
    assert progress.fraction == 0.25 and progress.rate == pytest.approx(250)
    assert progress.eta == pytest.approx(3.0) and progress.elapsed == pytest.approx(1.0)
    first = ProgressMeter(10, now=0.0).advance(0, now=0.0)
    assert first is not None and first.rate is None and first.eta is None


def test_progress_reports_are_throttled_but_first_and_last_always_come() -> None:
    meter = ProgressMeter(100, now=0.0, interval=1.0)
    reports = [meter.advance(step, now=t) for step, t in [(0, 0.0), (10, 0.1), (10, 0.5)]]
    assert [r is not None for r in reports] == [True, False, False]
    assert meter.advance(10, now=1.2) is not None  # an interval since the last report
    last = meter.advance(70, now=1.3)  # the end, however soon
    assert last is not None and last.done == 100 and last.eta == 0.0
    assert meter.advance(0, now=5.0) is None  # the end is reported once


def test_an_empty_file_is_done_at_once() -> None:
    progress = ProgressMeter(0, now=0.0).advance(0, now=0.0)
    assert progress is not None and progress.fraction == 1.0 and progress.eta == 0.0


def test_a_bad_meter_is_refused() -> None:
    with pytest.raises(LocalProtocolError):
        ProgressMeter(-1, now=0.0)
    with pytest.raises(LocalProtocolError):
        ProgressMeter(1, now=0.0, window=0)


def test_formatting() -> None:
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(3 * 1024**3) == "3.0 GiB"
    assert format_duration(65) == "1:05" and format_duration(3725) == "1:02:05"
    meter = ProgressMeter(4 * 1024**2, now=0.0, interval=0.0)
    progress = meter.advance(1024**2, now=2.0)
    assert progress is not None
    line = progress_line("big.iso", progress, width=8)
    assert line == "big.iso   25% [##------] 1.0 MiB / 4.0 MiB  512.0 KiB/s  ETA 0:06"
