"""``rendezvous``: the public service: STUN (with RFC 5780 support), the rendezvous protocol
(login, registration, introductions with a punch schedule) and an embedded TURN relay, on one
socket (and over TCP for networks that block UDP).

Sans-I/O at the top (``core`` routes every datagram; ``binding``, ``introductions`` with
``login``, ``turn_server`` with ``turn_requests``, ``turn_allocations``, ``turn_auth`` and
``turn_config`` serve them; ``routes`` names the sockets), asyncio in ``adapters`` (``server``
is the ``async with RendezvousServer(...)`` API), the command line in ``cli``."""
