"""stunproto's errors: one base for the codec and the stream framing, both ValueErrors."""

from __future__ import annotations

import pytest

from stunproto import FramingError, StunDecodeError, StunError, StunMessage
from stunproto.framing import StreamDecoder


def test_hierarchy() -> None:
    for kind in (StunDecodeError, FramingError):
        assert issubclass(kind, StunError) and issubclass(kind, ValueError)


def test_each_kind_is_raised_where_expected() -> None:
    with pytest.raises(StunDecodeError):
        StunMessage.parse(b"\x00\x01\x00")
    with pytest.raises(FramingError) as raised:
        StreamDecoder().feed(b"\xff\x00\x00\x00")
    assert raised.value.messages == []
