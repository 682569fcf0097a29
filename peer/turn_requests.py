"""What the TURN client asks its server, one frozen dataclass per kind of request, each
knowing its method and attributes (RFC 8656 sections 7, 9 and 11), and the transaction
that carries one (with what an authentication retry needs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from stunproto import AttrType, Method
from stunproto.attributes import Address

TRANSPORT_UDP = 17  # REQUESTED-TRANSPORT: the protocol number of UDP

Attributes = tuple[tuple[int, object], ...]


@dataclass(frozen=True, slots=True)
class AllocateRequest:
    """RFC 8656 section 7.1: a relayed transport address, for ``lifetime`` seconds."""

    lifetime: int
    method: ClassVar[int] = Method.ALLOCATE

    def attributes(self) -> Attributes:
        return ((AttrType.REQUESTED_TRANSPORT, TRANSPORT_UDP), (AttrType.LIFETIME, self.lifetime))


@dataclass(frozen=True, slots=True)
class RefreshRequest:
    """RFC 8656 section 7.2: keep the allocation for another ``lifetime`` seconds."""

    lifetime: int
    method: ClassVar[int] = Method.REFRESH

    def attributes(self) -> Attributes:
        return ((AttrType.LIFETIME, self.lifetime),)


@dataclass(frozen=True, slots=True)
class CloseRequest:
    """A Refresh with LIFETIME 0: release the allocation."""

    method: ClassVar[int] = Method.REFRESH

    def attributes(self) -> Attributes:
        return ((AttrType.LIFETIME, 0),)


@dataclass(frozen=True, slots=True)
class PermissionRequest:
    """RFC 8656 section 9: let the peer's IP in (ports do not matter)."""

    ip: str
    method: ClassVar[int] = Method.CREATE_PERMISSION

    def attributes(self) -> Attributes:
        return ((AttrType.XOR_PEER_ADDRESS, (self.ip, 0)),)


@dataclass(frozen=True, slots=True)
class ChannelRequest:
    """RFC 8656 section 11: bind channel ``number`` to the peer's address."""

    peer: Address
    number: int
    method: ClassVar[int] = Method.CHANNEL_BIND

    def attributes(self) -> Attributes:
        return ((AttrType.CHANNEL_NUMBER, self.number), (AttrType.XOR_PEER_ADDRESS, self.peer))


TurnRequest = AllocateRequest | RefreshRequest | CloseRequest | PermissionRequest | ChannelRequest
LeaseRequest = PermissionRequest | ChannelRequest


@dataclass(slots=True)
class Transaction:
    """One request in flight (an authentication retry is a new transaction with the same
    request, ``first_sent`` and one more ``auth_tries``)."""

    request: TurnRequest
    key: bytes | None  # the integrity key it was signed with
    first_sent: float  # the server's timers started no earlier than this
    auth_tries: int = 0
