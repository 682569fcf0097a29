"""What happens on a tunnel, one event per connection opened, closed or refused: the CLI
prints each as one status line (or one JSON object with ``--json``), an application gets
them from its ``on_event`` callback."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any


class Side(Enum):
    """Where the event was seen: the forwarding side (a local client connected) or the
    exposing side (a peer asked for a service)."""

    FORWARD = "forward"
    EXPOSE = "expose"


@dataclass(frozen=True, slots=True)
class TunnelOpened:
    side: Side
    tunnel: int  # an id for this connection, unique within the process
    peer: str
    service: str
    client: str  # HOST:PORT of the local client, or of the target on the exposing side

    def to_json(self) -> dict[str, Any]:
        return {"event": "tunnel_open", **_common(self), "client": self.client}

    def __str__(self) -> str:
        arrow = "->" if self.side is Side.FORWARD else "<-"
        return f"tunnel {self.tunnel} open: {self.client} {arrow} {self.peer}:{self.service}"


@dataclass(frozen=True, slots=True)
class TunnelClosed:
    side: Side
    tunnel: int
    peer: str
    service: str
    sent: int  # bytes toward the peer
    received: int  # bytes from the peer
    reason: str = ""  # "" for a clean end on both sides

    def to_json(self) -> dict[str, Any]:
        return {
            "event": "tunnel_closed",
            **_common(self),
            "bytes_sent": self.sent,
            "bytes_received": self.received,
            "reason": self.reason,
        }

    def __str__(self) -> str:
        how = f" ({self.reason})" if self.reason else ""
        return (
            f"tunnel {self.tunnel} closed: {self.peer}:{self.service}, "
            f"{self.sent} B sent, {self.received} B received{how}"
        )


@dataclass(frozen=True, slots=True)
class TunnelRefused:
    side: Side
    tunnel: int
    peer: str
    service: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"event": "refused", **_common(self), "reason": self.reason}

    def __str__(self) -> str:
        return f"tunnel {self.tunnel} refused: {self.peer}:{self.service}: {self.reason}"


def _common(event: TunnelOpened | TunnelClosed | TunnelRefused) -> dict[str, Any]:
    return {
        "side": event.side.value,
        "tunnel": event.tunnel,
        "peer": event.peer,
        "service": event.service,
    }


@dataclass(frozen=True, slots=True)
class Published:
    """The gateway opened a public port for one of our services (or closed it again,
    ``open`` False, when the connection to it ended)."""

    service: str
    port: int
    protocol: str
    public: str  # HOST:PORT outside hosts connect to
    open: bool = True
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        kind = "published" if self.open else "unpublished"
        fields = {"service": self.service, "port": self.port, "protocol": self.protocol}
        return {"event": kind, **fields, "public": self.public, "reason": self.reason}

    def __str__(self) -> str:
        if self.open:
            return f"published {self.service} at {self.public} ({self.protocol})"
        return f"unpublished {self.service} at {self.public}: {self.reason}"


TunnelEvent = TunnelOpened | TunnelClosed | TunnelRefused | Published
EventSink = Callable[[TunnelEvent], None]


def ignore(event: TunnelEvent) -> None:
    """The default sink: events are for whoever asks for them."""
