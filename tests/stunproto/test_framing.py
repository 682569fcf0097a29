"""Stream framing (STUN and ChannelData over TCP): any split of a stream decodes to the same
messages, ChannelData padding is added and removed, garbage raises only FramingError, and
the buffer never holds more than one message."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stunproto import AttrType, MessageClass, Method, StunMessage
from stunproto.framing import MAX_MESSAGE_SIZE, FramingError, StreamDecoder, frame
from stunproto.message import new_transaction_id

# Messages as they are on the wire (unpadded): STUN with a body of padded attributes, and
# ChannelData of any length on any channel number the decoder accepts (0x4000-0x7FFF).
stun_message = st.builds(
    lambda method, data: StunMessage(
        method, MessageClass.INDICATION, new_transaction_id(), ((AttrType.DATA, data),)
    ).encode(),
    st.sampled_from([Method.BINDING, Method.SEND, Method.DATA]),
    st.binary(max_size=300),
)
channel_data = st.builds(
    lambda channel, data: channel.to_bytes(2, "big") + len(data).to_bytes(2, "big") + data,
    st.integers(0x4000, 0x7FFF),
    st.binary(max_size=300),
)
message = st.one_of(stun_message, channel_data)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def decode_all(chunks: list[bytes]) -> list[bytes]:
    decoder = StreamDecoder()
    out: list[bytes] = []
    for chunk in chunks:
        out += decoder.feed(chunk)
    assert decoder.buffered == 0
    return out


@given(st.lists(message, max_size=12), st.lists(st.integers(0, 10_000), max_size=30))
def test_any_split_decodes_to_the_same_messages(messages: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(frame(m) for m in messages)
    assert decode_all(split(stream, cuts)) == messages


@given(st.lists(message, min_size=1, max_size=5))
def test_byte_by_byte(messages: list[bytes]) -> None:
    stream = b"".join(frame(m) for m in messages)
    assert decode_all([stream[i : i + 1] for i in range(len(stream))]) == messages


@given(message)
def test_frame_pads_channel_data_only(data: bytes) -> None:
    framed = frame(data)
    assert len(framed) % 4 == 0
    assert framed[: len(data)] == data
    assert framed[len(data) :] == b"\x00" * (len(framed) - len(data))
    if data[0] < 0x40:
        assert framed == data


def test_channel_data_waits_for_its_padding() -> None:
    decoder = StreamDecoder()
    message = b"\x40\x00\x00\x05hello"
    assert decoder.feed(message) == []  # 3 padding bytes still to come
    assert decoder.feed(b"\x00\x00") == []
    assert decoder.feed(b"\x00\x40\x01\x00\x00") == [message, b"\x40\x01\x00\x00"]
    assert decoder.buffered == 0


def test_frame_refuses_what_is_not_one_message() -> None:
    with pytest.raises(ValueError):
        frame(frame(b"\x40\x00\x00\x01x"))  # already padded
    with pytest.raises(ValueError):
        frame(b"\x80\x00\x00\x00")
    with pytest.raises(ValueError):
        frame(b"\x40\x00")


@pytest.mark.parametrize("first", [0x80, 0x97, 0xFF])
def test_garbage_fails_on_its_first_byte(first: int) -> None:
    decoder = StreamDecoder()
    with pytest.raises(FramingError):
        decoder.feed(bytes([first]))
    with pytest.raises(FramingError):
        decoder.feed(frame(b"\x40\x00\x00\x00"))  # broken for good: no resynchronising


def test_misaligned_stun_length_is_garbage() -> None:
    with pytest.raises(FramingError):
        StreamDecoder().feed(b"\x00\x01\x00\x03")


def test_messages_before_the_garbage_are_handed_over() -> None:
    good = StunMessage(Method.BINDING, MessageClass.REQUEST, new_transaction_id()).encode()
    with pytest.raises(FramingError) as caught:
        StreamDecoder().feed(good + b"\x40\x00\x00\x00" + b"\xffgarbage")
    assert caught.value.messages == [good, b"\x40\x00\x00\x00"]


def test_buffer_is_bounded_by_one_message() -> None:
    decoder = StreamDecoder()
    header = b"\x00\x01\xff\xfc" + b"\x00" * 16  # the largest STUN length
    largest = header + b"\x00" * 0xFFFC
    assert decoder.feed(largest + largest[:-1]) == [largest]
    assert decoder.buffered == len(largest) - 1 == MAX_MESSAGE_SIZE - 4
    assert decoder.feed(largest[-1:]) == [largest]
    assert decoder.buffered == 0


@given(st.lists(message, max_size=4), st.binary(min_size=1, max_size=200), st.integers(0, 500))
def test_garbage_raises_only_framing_error(messages: list[bytes], garbage: bytes, cut: int) -> None:
    """Valid messages followed by arbitrary bytes: either more messages come out or
    FramingError, never another exception; and the valid prefix always comes out intact."""
    stream = b"".join(frame(m) for m in messages) + garbage
    decoder = StreamDecoder()
    out: list[bytes] = []
    try:
        for chunk in split(stream, [cut]):
            out += decoder.feed(chunk)
    except FramingError as exc:
        out += exc.messages
    assert out[: len(messages)] == messages
    assert decoder.buffered < MAX_MESSAGE_SIZE


@given(st.binary(max_size=2000), st.lists(st.integers(0, 3000), max_size=10))
def test_random_bytes_raise_only_framing_error(data: bytes, cuts: list[int]) -> None:
    decoder = StreamDecoder()
    try:
        for chunk in split(data, cuts):
            for decoded in decoder.feed(chunk):
                assert len(decoded) <= MAX_MESSAGE_SIZE
    except FramingError:
        pass
