"""The shape of the sans-I/O applications the simulator drives (aioquic's connection API)."""

from __future__ import annotations

from typing import Protocol

Address = tuple[str, int]


class DatagramApp(Protocol):
    """One application bound to one UDP socket.

    The simulator owns the clock: every call passes the virtual ``now``. After any call it
    drains :meth:`datagrams_to_send` and re-reads :meth:`get_timer`. ``receive_datagram``
    returns ``object`` rather than ``None`` so that existing endpoints which report whether
    they consumed the datagram (``stunproto.StunClient`` returns ``bool``) fit unchanged.
    """

    def receive_datagram(self, data: bytes, source: Address, now: float) -> object: ...

    def handle_timer(self, now: float) -> None: ...

    def get_timer(self) -> float | None:
        """Absolute virtual time of the next timer, or ``None`` for none."""
        ...

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """Payloads and destinations queued since the last call."""
        ...
