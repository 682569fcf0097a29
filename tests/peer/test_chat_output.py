"""What ``peer chat`` prints: a remote peer's text never reaches the terminal raw."""

from __future__ import annotations

import io
import json

import pytest

from peer.chat_output import ChatOutput, shown


@pytest.mark.parametrize(
    ("raw", "printed"),
    [
        ("hello", "hello"),
        ("clear\x1b[2J", "clear\\x1b[2J"),
        ("one\nbob: forged line", "one\\nbob: forged line"),
        ("back\rover", "back\\rover"),
        ("right\u202eto left", "right\\u202eto left"),
        ("tab\tstays, \u00e9 and \u5f20 too, and a \U0001f468\u200d\U0001f469", None),
    ],
)
def test_control_characters_are_shown_escaped(raw: str, printed: str | None) -> None:
    assert shown(raw) == (raw if printed is None else printed)


def test_messages_and_status_lines_from_a_peer_are_escaped_in_text_mode() -> None:
    stdout, stderr = io.StringIO(), io.StringIO()
    out = ChatOutput(False, stdout, stderr)
    out.message("bob", "hi\x1b]0;pwned\x07")
    out.left("bob", "closed by bob: \x1b[31mred")
    assert stdout.getvalue() == "bob: hi\\x1b]0;pwned\\x07\n"
    assert stderr.getvalue() == "bob left: \\x1b[31mred\n"
    assert "\x1b" not in stdout.getvalue() + stderr.getvalue()


def test_json_mode_carries_the_text_exactly() -> None:
    stdout = io.StringIO()
    ChatOutput(True, stdout, io.StringIO()).message("bob", "hi\x1b[2J")
    line = stdout.getvalue()
    assert "\x1b" not in line and json.loads(line)["text"] == "hi\x1b[2J"
