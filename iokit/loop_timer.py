"""Keeps an asyncio timer at the time a sans-I/O object asks for."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class LoopTimer:
    """Keeps one ``loop.call_at`` armed at the time a sans-I/O object's ``get_timer()``
    asks for; ``arm`` after every interaction, ``cancel`` on close."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self._at: float | None = None

    def arm(self, at: float | None) -> None:
        if at == self._at:
            return
        self.cancel()
        self._at = at
        if at is not None:
            self._handle = asyncio.get_running_loop().call_at(at, self._fire)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._at = None

    def _fire(self) -> None:
        self._handle = self._at = None
        self._callback()
