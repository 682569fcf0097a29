"""A transport connection's lifecycle."""

from __future__ import annotations

from enum import Enum


class ConnectionState(Enum):
    OPEN = "open"
    CLOSING = "closing"  # our CONNECTION_CLOSE waits to go out
    CLOSED = "closed"
