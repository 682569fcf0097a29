"""The rendezvous wire protocol, shared by the server (``rendezvous``) and the peer
(``peer``): STUN-framed messages with their own attribute table, and the key conversion
both sides apply to the keys the server vouches for. It depends on ``stunproto`` only."""

from rvproto.keys import PublicKeyError, ed25519_to_x25519_public
from rvproto.messages import (
    RV_CODECS,
    RV_METHODS,
    ErrorCodes,
    Introduction,
    Role,
    RvAttr,
    RvMethod,
    encode_signed,
    is_rv_datagram,
    parse_rv,
    rv_message,
    signature_input,
)

__all__ = [
    "RV_CODECS",
    "RV_METHODS",
    "ErrorCodes",
    "Introduction",
    "PublicKeyError",
    "Role",
    "RvAttr",
    "RvMethod",
    "ed25519_to_x25519_public",
    "encode_signed",
    "is_rv_datagram",
    "parse_rv",
    "rv_message",
    "signature_input",
]
