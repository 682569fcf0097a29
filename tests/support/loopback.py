"""Helpers for tests that run our server on loopback (127.0.0.1 and 127.0.0.2 are both
local on Linux, which gives the RFC 5780 server its two addresses without namespaces)."""

from __future__ import annotations

import random
import socket


def free_port_pair(host: str = "127.0.0.1", alt_host: str = "127.0.0.2") -> int:
    """A port P with P and P+1 free on both hosts (bound and released)."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 60000)
        sockets: list[socket.socket] = []
        try:
            for ip in (host, alt_host):
                for candidate in (port, port + 1):
                    # UDP for STUN and the relay; TCP because the rendezvous listens there too.
                    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                        sock = socket.socket(socket.AF_INET, kind)
                        sockets.append(sock)
                        sock.bind((ip, candidate))
            return port
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no free port pair")
