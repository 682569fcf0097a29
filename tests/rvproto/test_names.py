"""Peer names: one canonical form, look-alikes refused (rvproto.names)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rvproto.names import InvalidName, canonical_name, is_canonical


@pytest.mark.parametrize(
    ("typed", "canonical"),
    [
        ("alice", "alice"),
        ("Alice", "alice"),
        ("\uff21\uff2c\uff29\uff23\uff25", "alice"),  # full-width letters
        ("Stra\u00dfe", "strasse"),
        ("bob-2.home_1", "bob-2.home_1"),
        ("\u0438\u0432\u0430\u043d", "\u0438\u0432\u0430\u043d"),  # Cyrillic "ivan"
        ("\u5f20\u4e09", "\u5f20\u4e09"),  # Han
        (
            "\u65e5\u672c\u8a9e\u3072\u3089\u304c\u306a",
            "\u65e5\u672c\u8a9e\u3072\u3089\u304c\u306a",
        ),
    ],
)
def test_names_fold_to_one_form(typed: str, canonical: str) -> None:
    assert canonical_name(typed) == canonical
    assert is_canonical(canonical) and is_canonical(typed) is (typed == canonical)


@pytest.mark.parametrize(
    ("typed", "reason"),
    [
        ("", "no peer name"),
        ("bob smith", "has whitespace"),
        ("bob\tsmith", "has whitespace"),
        ("ali\u200bce", "U+200B (zero width space)"),
        ("bob\x1b[31m", "U+001B"),
        ("evil\u202e", "U+202E"),
        ("-bob", "starts with '-'"),
        ("#bob", "U+0023"),
        ("a" * 65, "is 65 bytes long"),
        ("p\u0430ypal", "mixes scripts (cyrillic, latin)"),  # a Cyrillic "a"
        ("\u0440\u043e\u0440", "looks like a Latin name"),  # Cyrillic "pop"
        ("\u03bf\u03ba", "looks like a Latin name"),  # Greek "ok"
    ],
)
def test_look_alikes_and_invisible_characters_are_refused(typed: str, reason: str) -> None:
    with pytest.raises(InvalidName, match=r"^(peer name|no peer name)") as caught:
        canonical_name(typed)
    assert reason in str(caught.value)
    assert "\n" not in str(caught.value) and "\x1b" not in str(caught.value)
    assert not is_canonical(typed)


@given(st.text(max_size=80))
def test_any_text_has_one_canonical_form_or_a_one_line_refusal(text: str) -> None:
    try:
        canonical = canonical_name(text)
    except InvalidName as exc:
        assert "\n" not in str(exc)
        return
    assert canonical_name(canonical) == canonical  # (idempotent)
    assert 0 < len(canonical.encode()) <= 64
    assert not any(char.isspace() or not char.isprintable() for char in canonical)
