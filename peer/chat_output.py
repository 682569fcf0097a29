"""What ``peer chat`` (peer.chat) prints, and how it reads a typed line; no I/O of its own.

Messages go to stdout as ``NAME: text``, status lines to stderr; with ``--json``, stdout
carries one JSON object per line instead (README, "Chat between two peers behind NATs").
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any, TextIO

MIB = 1024 * 1024


def shown(text: str) -> str:
    """``text`` safe for a terminal: control characters (escape sequences, a carriage
    return or a newline that would forge another line) and bidirectional overrides are
    printed escaped (``\x1b``, ``\n``, ``\u202e``); tabs and everything else as they are."""
    if text.isprintable():
        return text
    return "".join(_escaped(char) if _unsafe(char) else char for char in text)


# Controls, line and paragraph separators, lone surrogates; and the bidirectional controls
# that reorder what follows them (other format characters, a zero-width joiner in an emoji,
# are harmless).
_UNSAFE = frozenset({"Cc", "Zl", "Zp", "Cs"})
_BIDI = frozenset(
    "\u061c\u200e\u200f" + "".join(map(chr, [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]))
)


def _unsafe(char: str) -> bool:
    return char != "\t" and (unicodedata.category(char) in _UNSAFE or char in _BIDI)


def _escaped(char: str) -> str:
    code = ord(char)
    if char == "\n":
        return "\\n"
    if char == "\r":
        return "\\r"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


class ChatOutput:
    def __init__(self, json_mode: bool, stdout: TextIO, stderr: TextIO) -> None:
        self.json = json_mode
        self.stdout = stdout
        self.stderr = stderr

    def event(self, event: str, text: str, **fields: Any) -> None:
        """A status line (``text`` on stderr), or the JSON object ``event`` + ``fields``."""
        if self.json:
            print(json.dumps({"event": event, **fields}), file=self.stdout, flush=True)
        else:
            print(shown(text), file=self.stderr, flush=True)

    def message(self, sender: str, text: str) -> None:
        if self.json:
            # ("from": the same name, as before "peer" was there)
            line = json.dumps({"event": "message", "peer": sender, "from": sender, "text": text})
            print(line, file=self.stdout, flush=True)
        else:
            print(f"{shown(sender)}: {shown(text)}", file=self.stdout, flush=True)

    def connected(
        self, peer: str, path: str, remote: str, seconds: float, note: str | None
    ) -> None:
        self.event(
            "connected",
            f"connected to {peer} over {path} path, remote {remote}, in {seconds * 1000:.0f} ms"
            + (f" ({note})" if note else ""),
            peer=peer,
            path=path,
            remote=remote,
            ms=round(seconds * 1000, 1),
            **({"note": note} if note else {}),
        )

    def path(self, peer: str, path: str, remote: str) -> None:
        text = f"path to {peer} is now {path}, remote {remote}"
        self.event("path", text, peer=peer, path=path, remote=remote)

    def left(self, peer: str, reason: str) -> None:
        """``peer`` is gone (it hung up, or its path died); the chat goes on."""
        self.event("closed", left_line(peer, reason), peer=peer, reason=reason)

    def closed(self, peer: str, reason: str, *, only: bool) -> None:
        """The connection with ``peer`` ended; ``only``: it was the chat's one connection
        (``--to``), so the chat ends with it."""
        text = f"closed: {reason}" if only else f"closed the chat with {peer}: {reason}"
        self.event("closed", text, peer=peer, reason=reason)

    def refused(self, peer: str, reason: str) -> None:
        self.event("refused", f"refused a call from {peer}: {reason}", peer=peer, reason=reason)

    def skipped(self, reason: str) -> None:
        """A typed line that was not sent (the chat goes on)."""
        self.event("skipped", f"peer: not sent: {reason}", reason=reason)

    def error(self, reason: str) -> None:
        self.event("error", f"peer: {reason}", reason=reason)


def left_line(peer: str, reason: str) -> str:
    """``bob left`` (it hung up), ``bob left: its reason``, ``bob left: path dead: ...``."""
    by_peer = f"closed by {peer}"
    if reason == by_peer:
        return f"{peer} left"
    if reason.startswith(by_peer + ": "):
        return f"{peer} left: {reason[len(by_peer) + 2 :]}"
    return f"{peer} left: {reason}"


def addressed(line: bytes) -> tuple[str | None, bytes]:
    """``@name text`` is for ``name`` alone: (name, text); any other line is for everyone:
    (None, line)."""
    if line.startswith(b"@"):
        name, _, text = line[1:].partition(b" ")
        if name:
            return name.decode(errors="replace"), text
    return None, line


def too_long(limit: int) -> str:
    size = f"{limit // MIB} MiB" if limit % MIB == 0 else f"{limit} bytes"
    return f"the line is longer than the largest message ({size})"
