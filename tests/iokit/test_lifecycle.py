"""iokit.lifecycle: ``async with`` starts and closes; a failed start closes too."""

from __future__ import annotations

import pytest

from iokit.lifecycle import AsyncLifecycle


class _Service(AsyncLifecycle):
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.calls: list[str] = []

    async def start(self) -> None:
        self.calls.append("start")
        if self.fail:
            raise OSError("cannot bind")

    def close(self) -> None:
        self.calls.append("close")


async def test_async_with_starts_then_closes() -> None:
    async with _Service() as service:
        assert service.calls == ["start"]
    assert service.calls == ["start", "close"]


async def test_a_failed_start_closes_and_raises() -> None:
    service = _Service(fail=True)
    with pytest.raises(OSError, match="cannot bind"):
        async with service:
            pytest.fail("the block must not run")
    assert service.calls == ["start", "close"]
