"""A secondary simulated socket that its owner drives: it has no timer of its own, hands what
arrives to the owner (``receive_datagram``, per subclass) and sends what the owner queued in
``out``. The relay sockets of the simulated server and the birthday trick's extra sockets of
a simulated peer are both one."""

from __future__ import annotations

from stunproto.attributes import Address


class SideSocket:
    def __init__(self) -> None:
        self.out: list[tuple[bytes, Address]] = []

    def receive_datagram(self, data: bytes, source: Address, now: float) -> None:
        raise NotImplementedError

    def handle_timer(self, now: float) -> None:
        return None

    def get_timer(self) -> float | None:
        return None

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out, self.out = self.out, []
        return out
