"""The single error the STUN codec raises for malformed input."""


class StunDecodeError(ValueError):
    """Bytes that are not a well-formed STUN message (or attribute value)."""
