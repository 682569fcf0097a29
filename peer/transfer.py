"""File transfer over a connection's streams, sans-I/O: the messages, the sender's and the
receiver's bookkeeping (sizes, SHA-256) and the name rules (progress: peer.transfer_progress).

One stream carries one file. The sender writes, then ends its side::

    +-------------+----------------------+------------------+------------------+
    | length (u32)| Offer (JSON, UTF-8)  | exactly size     | SHA-256 of the   |
    | big-endian  | {"name","size",mode} | bytes of content | content (32 B)   |
    +-------------+----------------------+------------------+------------------+

and the receiver answers on the same stream with one framed Verdict, ``{"ok": true,
"saved_as": NAME}`` or ``{"ok": false, "reason": "..."}``, then ends its side. A receiver
that gives up early (a refused name, a full disk) answers at once and reads on to the end;
a sender that reads a verdict before it has sent everything stops and resets the stream.

The name is a base name only: anything that could leave the receiver's directory, hide a
terminal escape, or exceed a file system's name limit is refused (``file_name_problem``).
The receiver never overwrites: an existing ``NAME`` makes it save ``NAME (1)``, then
``NAME (2)``... (``candidate_names``). Parsing raises ``TransferDecodeError`` and nothing
else; building a message with bad fields raises ``LocalProtocolError``.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Any

from peer.errors import LocalProtocolError, RemoteProtocolError

FRAME_PREFIX = struct.Struct("!I")
MAX_FRAME = 16 * 1024  # an offer or a verdict is small; a larger length is garbage
DIGEST_SIZE = hashlib.sha256().digest_size
MAX_NAME_BYTES = 255  # NAME_MAX on Linux, macOS and the usual file systems
MAX_SIZE = 2**63 - 1
MAX_REASON = 400
MAX_COPIES = 1000  # "NAME (1)" up to "NAME (999)", then the receiver refuses


class TransferDecodeError(RemoteProtocolError, ValueError):
    """The other side sent something that is not a valid transfer: a bad frame, an unsafe
    file name, a short file, a hash that does not match."""


class ResetCode(IntEnum):
    """Why a side reset a file's stream (the code on the stream reset)."""

    SENDER_ABORTED = 1  # the sender could not read its file, or the receiver refused it
    RECEIVER_GAVE_UP = 2  # the receiver stopped waiting for the sender to finish


def file_name_problem(name: str) -> str | None:
    """Why ``name`` may not name a received file, or None if it may: a base name that
    cannot climb out of the directory, hide control characters, or exceed NAME_MAX."""
    if not name:
        return "empty file name"
    if name in (".", ".."):
        return f"file name {name!r} is a directory reference"
    if "/" in name or "\\" in name:
        return f"file name {name!r} contains a path separator"
    if "\x00" in name:
        return f"file name {name!r} contains NUL"
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in name):
        return f"file name {name!r} contains control characters"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"file name longer than {MAX_NAME_BYTES} bytes"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # a surrogate from an undecodable local name
        return f"file name {name!r} is not valid UTF-8"
    return None


def _one_line_problem(text: str) -> str | None:
    if len(text) > MAX_REASON:
        return f"longer than {MAX_REASON} characters"
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in text):
        return "contains control characters"
    return None


def frame(payload: bytes) -> bytes:
    return FRAME_PREFIX.pack(len(payload)) + payload


def payload_length(prefix: bytes) -> int:
    """The payload length a frame's 4-byte prefix announces (1 to MAX_FRAME)."""
    if len(prefix) != FRAME_PREFIX.size:
        raise TransferDecodeError(f"a frame prefix is {FRAME_PREFIX.size} bytes")
    (length,) = FRAME_PREFIX.unpack(prefix)
    if not 0 < length <= MAX_FRAME:
        raise TransferDecodeError(f"frame length {length} outside 1..{MAX_FRAME}")
    return int(length)


def _json_object(payload: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise TransferDecodeError(f"{what} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise TransferDecodeError(f"{what} is not a JSON object")
    return value


def _encode_json(fields: dict[str, Any]) -> bytes:
    return frame(json.dumps(fields, separators=(",", ":"), sort_keys=True).encode())


def _optional_int(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if type(value) is not int:
        raise TransferDecodeError(f"{what} is not an integer")
    return value


@dataclass(frozen=True, slots=True)
class Offer:
    """The header of a file's stream: what comes, and how much of it."""

    name: str
    size: int
    mode: int | None = None  # the sender's permission bits (0o7777), if it wants them kept

    def __post_init__(self) -> None:
        if (problem := file_name_problem(self.name)) is not None:
            raise LocalProtocolError(problem)
        if not 0 <= self.size <= MAX_SIZE:
            raise LocalProtocolError(f"file size {self.size} outside 0..2^63-1")
        if self.mode is not None and not 0 <= self.mode <= 0o7777:
            raise LocalProtocolError(f"file mode {self.mode:#o} outside 0..0o7777")

    def encode(self) -> bytes:
        fields: dict[str, Any] = {"name": self.name, "size": self.size}
        if self.mode is not None:
            fields["mode"] = self.mode
        return _encode_json(fields)

    @classmethod
    def parse(cls, payload: bytes) -> Offer:
        """An offer from a frame's payload (without the length prefix); unknown fields are
        ignored, so that later senders may add some."""
        fields = _json_object(payload, "offer")
        name, size = fields.get("name"), _optional_int(fields.get("size"), "offer size")
        if not isinstance(name, str):
            raise TransferDecodeError("offer without a file name")
        if size is None:
            raise TransferDecodeError("offer without a size")
        try:
            return cls(name, size, _optional_int(fields.get("mode"), "offer mode"))
        except LocalProtocolError as exc:
            raise TransferDecodeError(f"refused: {exc}") from None


@dataclass(frozen=True, slots=True)
class Verdict:
    """The receiver's answer: saved (and under which name), or not, and why."""

    ok: bool
    reason: str = ""
    saved_as: str | None = None

    def __post_init__(self) -> None:
        if self.ok == bool(self.reason):
            raise LocalProtocolError("a verdict has a reason exactly when it is not ok")
        if (problem := _one_line_problem(self.reason)) is not None:
            raise LocalProtocolError(f"verdict reason {problem}")
        if self.saved_as is not None and (problem := file_name_problem(self.saved_as)):
            raise LocalProtocolError(problem)

    @classmethod
    def accepted(cls, saved_as: str) -> Verdict:
        return cls(True, saved_as=saved_as)

    @classmethod
    def refused(cls, reason: str) -> Verdict:
        """An error verdict; a long or multi-line reason is cut to one short line."""
        line = " ".join(reason.split()) or "refused"
        if len(line) > MAX_REASON:
            line = line[: MAX_REASON - 3] + "..."
        return cls(False, reason="".join(c if c.isprintable() else "?" for c in line))

    def encode(self) -> bytes:
        fields: dict[str, Any] = {"ok": self.ok}
        if self.reason:
            fields["reason"] = self.reason
        if self.saved_as is not None:
            fields["saved_as"] = self.saved_as
        return _encode_json(fields)

    @classmethod
    def parse(cls, payload: bytes) -> Verdict:
        fields = _json_object(payload, "verdict")
        ok, reason, saved_as = fields.get("ok"), fields.get("reason", ""), fields.get("saved_as")
        if not isinstance(ok, bool) or not isinstance(reason, str):
            raise TransferDecodeError("verdict without a boolean 'ok' and a text 'reason'")
        if saved_as is not None and not isinstance(saved_as, str):
            raise TransferDecodeError("verdict 'saved_as' is not text")
        try:
            return cls(ok, reason, saved_as)
        except LocalProtocolError as exc:
            raise TransferDecodeError(f"bad verdict: {exc}") from None


class OutgoingFile:
    """The sender's side of one file: frames the offer, hashes the body as it goes, and
    refuses to end with more or fewer bytes than offered."""

    def __init__(self, offer: Offer) -> None:
        self.offer = offer
        self.sent = 0
        self._hash = hashlib.sha256()

    def header(self) -> bytes:
        return self.offer.encode()

    def body(self, data: bytes) -> bytes:
        if self.sent + len(data) > self.offer.size:
            raise LocalProtocolError(f"{self.offer.name}: more than the {self.offer.size} offered")
        self._hash.update(data)
        self.sent += len(data)
        return data

    def trailer(self) -> bytes:
        if self.sent != self.offer.size:
            raise LocalProtocolError(
                f"{self.offer.name}: {self.sent} of {self.offer.size} bytes read "
                "(the file shrank while being sent)"
            )
        return self._hash.digest()

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


class ReceivePhase(Enum):
    PREFIX = "prefix"
    OFFER = "offer"
    BODY = "body"
    TRAILER = "trailer"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class OfferReceived:
    offer: Offer


@dataclass(frozen=True, slots=True)
class BodyReceived:
    data: bytes


@dataclass(frozen=True, slots=True)
class FileVerified:
    sha256: str  # hex


IncomingEvent = OfferReceived | BodyReceived | FileVerified


class IncomingFile:
    """The receiver's side of one file's stream: feed it what the stream reads, write out
    the BodyReceived data, keep the file only after FileVerified and ``receive_eof``."""

    def __init__(self) -> None:
        self.phase = ReceivePhase.PREFIX
        self.offer: Offer | None = None
        self.received = 0  # body bytes so far
        self._pending = bytearray()  # a prefix, offer or trailer not yet whole
        self._want = FRAME_PREFIX.size
        self._hash = hashlib.sha256()

    def receive_data(self, data: bytes) -> list[IncomingEvent]:
        events: list[IncomingEvent] = []
        position = 0
        while position < len(data):
            if self.phase is ReceivePhase.DONE:
                raise TransferDecodeError(f"{len(data) - position} bytes after the SHA-256")
            if self.phase is ReceivePhase.BODY:
                assert self.offer is not None
                take = min(len(data) - position, self.offer.size - self.received)
                # The body goes out without passing through the pending buffer (no copy
                # when a read holds nothing but body).
                chunk = data if take == len(data) else data[position : position + take]
                self._hash.update(chunk)
                self.received += take
                position += take
                events.append(BodyReceived(chunk))
                self._after_body()
                continue
            take = min(len(data) - position, self._want - len(self._pending))
            self._pending += data[position : position + take]
            position += take
            if len(self._pending) == self._want:
                events.extend(self._complete_piece(bytes(self._pending)))
                self._pending.clear()
        return events

    @property
    def sha256(self) -> str:
        """The hex SHA-256 of the body received so far (the file's, once verified)."""
        return self._hash.hexdigest()

    def receive_eof(self) -> None:
        """The sender ended its side: fine only after the whole file and its SHA-256."""
        if self.phase is ReceivePhase.DONE:
            return
        if self.offer is None:
            raise TransferDecodeError("the stream ended before the offer")
        if self.phase is ReceivePhase.BODY:
            raise TransferDecodeError(
                f"short file: the stream ended after {self.received} of {self.offer.size} bytes"
            )
        raise TransferDecodeError("the stream ended before the SHA-256 trailer")

    def _complete_piece(self, piece: bytes) -> list[IncomingEvent]:
        if self.phase is ReceivePhase.PREFIX:
            self.phase, self._want = ReceivePhase.OFFER, payload_length(piece)
            return []
        if self.phase is ReceivePhase.OFFER:
            self.offer = Offer.parse(piece)
            self.phase = ReceivePhase.BODY
            self._after_body()
            return [OfferReceived(self.offer)]
        # the trailer
        if piece != self._hash.digest():
            raise TransferDecodeError(
                f"SHA-256 mismatch: the {self.received} bytes received are not the file sent"
            )
        self.phase = ReceivePhase.DONE
        return [FileVerified(self._hash.hexdigest())]

    def _after_body(self) -> None:
        assert self.offer is not None
        if self.received == self.offer.size:
            self.phase, self._want = ReceivePhase.TRAILER, DIGEST_SIZE


def candidate_names(name: str) -> Iterator[str]:
    """``name``, then ``stem (1).ext``, ``stem (2).ext``... (a ``.tar.gz`` stays whole):
    the names a receiver tries, in order, so that nothing is overwritten."""
    yield name
    stem, dot, suffix = name.rpartition(".")
    if not stem or not dot:  # no extension, or a dot file like ".bashrc"
        stem, suffix = name, ""
    elif stem.endswith(".tar"):
        stem, suffix = stem[: -len(".tar")], "tar." + suffix
    for copy in range(1, MAX_COPIES):
        yield f"{stem} ({copy}).{suffix}" if suffix else f"{stem} ({copy})"


def final_mode(offered: int | None, umask: int) -> int:
    """The received file's permission bits: the sender's, as ``cp`` keeps them (no setuid,
    setgid or sticky bit, the receiver's umask applied), else a fresh file's."""
    return (0o666 if offered is None else offered & 0o777) & ~umask
