"""Sans-I/O STUN: message codec (RFC 8489/5389 with RFC 3489 compatibility and RFC 5780
attributes) and client transactions with RFC retransmission."""

from stunproto.attributes import (
    AttrType,
    ChangeRequest,
    ErrorCode,
)
from stunproto.errors import FramingError, StunDecodeError, StunEncodeError, StunError
from stunproto.message import (
    MAGIC_COOKIE,
    MessageClass,
    Method,
    StunMessage,
    is_stun,
    long_term_key,
    new_transaction_id,
)

__all__ = [
    "MAGIC_COOKIE",
    "AttrType",
    "ChangeRequest",
    "ErrorCode",
    "FramingError",
    "MessageClass",
    "Method",
    "StunDecodeError",
    "StunEncodeError",
    "StunError",
    "StunMessage",
    "is_stun",
    "long_term_key",
    "new_transaction_id",
]
