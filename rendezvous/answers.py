"""What the server's request handlers share: the cache of answers for retransmitted
requests, and the one builder of STUN error answers."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

from stunproto import AttrType, ErrorCode, MessageClass, StunMessage

# RFC 8489's Ti (section 6.2.1): how long a client may retransmit a request.
ANSWER_CACHE_TIME = 40.0

KeyT = TypeVar("KeyT", bound=Hashable)


class AnswerCache(Generic[KeyT]):
    """Answers by request (a key with the transaction id in it), for ``ANSWER_CACHE_TIME``.

    A retransmitted request (its answer was lost) must get the very same answer, not a
    second execution: a retransmitted Allocate would meet its own allocation and fail with
    437 (RFC 8656 section 7.2), a retransmitted login would find its challenge "used", a
    retransmitted CONNECT would start a second introduction (RFC 8489 section 6.3.4 caches
    likewise). Bounded: when ``max_entries`` are held, expired answers go, and if that is not
    enough all of them do (a flood of fresh requests: bounded memory wins).
    """

    __slots__ = ("_answers", "_lifetime", "_max")

    def __init__(self, *, max_entries: int, lifetime: float = ANSWER_CACHE_TIME) -> None:
        self._answers: dict[KeyT, tuple[float, bytes]] = {}  # key -> (until, answer)
        self._max = max_entries
        self._lifetime = lifetime

    def get(self, key: KeyT, now: float) -> bytes | None:
        cached = self._answers.get(key)
        return cached[1] if cached is not None and cached[0] > now else None

    def put(self, key: KeyT, answer: bytes, now: float) -> None:
        if len(self._answers) >= self._max:
            self.expire(now)
        self._answers[key] = (now + self._lifetime, answer)

    def expire(self, now: float) -> None:
        """Forget what has expired (and everything, should the cache still be full)."""
        answers = self._answers
        for key in [k for k, (until, _) in answers.items() if until <= now]:
            del answers[key]
        if len(answers) >= self._max:
            answers.clear()

    def __len__(self) -> int:
        return len(self._answers)


def error_answer(
    request: StunMessage,
    code: int,
    reason: str,
    *extra: tuple[int, object],
    unknown: tuple[int, ...] = (),
    key: bytes | None = None,
    fingerprint: bool | None = None,
    software: str | None = None,
) -> bytes:
    """The encoded error response to ``request``: ERROR-CODE, UNKNOWN-ATTRIBUTES (if any
    ``unknown``), ``extra``, SOFTWARE (if given), MESSAGE-INTEGRITY with ``key``, and
    FINGERPRINT unless ``fingerprint`` says otherwise (default: all but RFC 3489 requests).

    RFC 3489 requests (11.2.9/11.2.10) get the reason padded with spaces and an even count
    of unknown attributes, so that every length is a multiple of four for old parsers.
    """
    if request.legacy:
        reason += " " * (-len(reason) % 4)
        if len(unknown) % 2:
            unknown = (*unknown, unknown[-1])
    attrs: list[tuple[int, object]] = [(AttrType.ERROR_CODE, ErrorCode(code, reason))]
    if unknown:
        attrs.append((AttrType.UNKNOWN_ATTRIBUTES, unknown))
    attrs.extend(extra)
    if software:
        attrs.append((AttrType.SOFTWARE, software))
    if fingerprint is None:
        fingerprint = not request.legacy
    reply = request.reply(MessageClass.ERROR, *attrs)
    return reply.encode(integrity_key=key, fingerprint=fingerprint)
