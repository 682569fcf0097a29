"""The public rendezvous service: STUN (RFC 8489, RFC 3489 compatible, RFC 5780)."""
