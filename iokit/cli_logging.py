"""structlog set-up shared by the command-line tools (libraries never call this)."""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(
    *, verbose: bool = False, json: bool | None = None, level: int = logging.INFO
) -> None:
    """Console rendering on a terminal, JSON lines otherwise; logs go to stderr so that
    stdout stays free for a tool's own output. ``level`` is the least that is logged
    (``verbose``: everything)."""
    if json is None:
        json = not sys.stderr.isatty()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG if verbose else level),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is now, so a replaced stream (tests capture it,
    then close it) never leaves a logger holding a closed file."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()
