"""The peer's asyncio adapters: the only code in ``peer`` that touches sockets, tasks and
the clock. ``Peer``/``Connection`` drive the sans-I/O ``PeerAgent``; ``PunchSocket`` is
the one UDP socket that punching and STUN share."""
