"""``async with`` for adapters that have ``async start()`` and ``close()``."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class AsyncLifecycle:
    """``async with X(...) as x:`` starts ``x`` and closes it on the way out; a start that
    fails half way closes what it had opened before the error goes on. Subclasses define
    ``start`` and an idempotent ``close``."""

    async def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
