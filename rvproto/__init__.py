"""The rendezvous wire protocol, shared by the server (``rendezvous``) and the peer
(``peer``): STUN-framed messages with their own attribute table, and the key conversion
both sides apply to the keys the server vouches for. It depends on ``stunproto`` only."""

from rvproto.keys import PublicKeyError, ed25519_to_x25519_public
from rvproto.login import LoginSecrets, login_prologue, session_key
from rvproto.messages import (
    RV_CODECS,
    RV_METHODS,
    ErrorCodes,
    Introduction,
    Role,
    RvAttr,
    RvMethod,
    is_rv_datagram,
    parse_rv,
    rv_message,
)

__all__ = [
    "RV_CODECS",
    "RV_METHODS",
    "ErrorCodes",
    "Introduction",
    "LoginSecrets",
    "PublicKeyError",
    "Role",
    "RvAttr",
    "RvMethod",
    "ed25519_to_x25519_public",
    "is_rv_datagram",
    "login_prologue",
    "parse_rv",
    "rv_message",
    "session_key",
]
