"""Two peer sessions introduced to each other directly (no agent, no network): alice the
initiator, bob the responder, both behind full cones at fixed public endpoints."""

from __future__ import annotations

import random

from peer.identity import Identity
from peer.session import PeerSession, SessionConfig
from rvproto.messages import Introduction, Role

ALICE_PUBLIC = ("198.51.100.1", 40001)
BOB_PUBLIC = ("198.51.100.2", 40002)


def session_pair(
    config: SessionConfig | None = None, identities: tuple[Identity, Identity] | None = None
) -> tuple[PeerSession, PeerSession]:
    """(alice's session with bob, bob's session with alice), both at time 0; new
    identities unless ``identities`` (alice's, bob's) are given."""
    alice, bob = identities or (Identity.generate(), Identity.generate())
    token = bytes(range(16))
    sessions = []
    for peer, me, public, role, seed in (
        ("bob", alice, BOB_PUBLIC, Role.INITIATOR, 1),
        ("alice", bob, ALICE_PUBLIC, Role.RESPONDER, 2),
    ):
        other = bob if me is alice else alice
        introduction = Introduction(
            name=peer,
            public_key=other.public_key,
            public_endpoint=public,
            private_endpoints=(),
            role=role,
            token=token,
            punch_delay=0.0,
            nat_type="full-cone",
        )
        sessions.append(
            PeerSession(
                introduction, me.x25519_private, 0.0, config=config, rng=random.Random(seed)
            )
        )
    return sessions[0], sessions[1]
