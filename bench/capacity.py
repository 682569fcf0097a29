"""Rendezvous capacity through the real service objects, in process (no sockets): logins
per CPU-second of the server, full and resumed, introductions per second, memory per
online peer.

Each login is the real exchange: a RendezvousClient asks, the RendezvousCore challenges,
the client sends Noise IK message 1, the core checks the challenge, the key (rvproto.keys)
and the handshake, claims the name in the registry and answers message 2 with a ticket.
Then each peer logs in again (a returning peer) with that ticket: no Diffie-Hellman. Only
the core's time counts (the clients' is theirs). Beside it, one run of the key check the
server used before (the full X25519 conversion, two modular powers) and of the one it uses
now.

python bench/capacity.py                 # 10,000 then 100,000 online peers
python bench/capacity.py --peers 20000 --db /tmp/names.sqlite
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import time
import timeit
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import structlog

from peer.identity import Identity
from peer.rendezvous_client import RendezvousClient, RendezvousClientConfig
from rendezvous.binding import StunServiceConfig
from rendezvous.core import RendezvousCore
from rendezvous.introductions import RendezvousConfig
from rendezvous.registry import NameRegistry
from rendezvous.routes import UdpSocket
from rvproto.keys import check_public_key, ed25519_to_x25519_public

SERVER = ("203.0.113.10", 3478)
VIA = UdpSocket(SERVER)


def _address(index: int) -> tuple[str, int]:
    return (f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}", 40000)


class Bench:
    def __init__(self, db: str) -> None:
        config = RendezvousConfig(stun=StunServiceConfig(primary=SERVER))
        self.registry = NameRegistry(db)  # (with a file: its writes on their own thread)
        self.core = RendezvousCore(config, self.registry)
        self.server_seconds = 0.0
        self.now = 0.0

    def _to_server(self, client: RendezvousClient, at: tuple[str, int]) -> None:
        core = self.core
        for data, _ in client.datagrams_to_send(self.now):
            started = time.perf_counter()
            core.receive_datagram(data, at, VIA, self.now)
            replies = core.datagrams_to_send(self.now)
            self.server_seconds += time.perf_counter() - started
            for reply in replies:
                if reply.destination == at:
                    client.receive_datagram(reply.data, SERVER, self.now)

    def login(
        self, identity: Identity, index: int, client: RendezvousClient | None = None
    ) -> RendezvousClient:
        """A login of peer ``index``: a full one, or with ``client`` a resumed one (its
        ticket from the last)."""
        at = _address(index)
        if client is None:
            config = RendezvousClientConfig(
                server=SERVER, name=f"peer{index}", public_key=identity.public_key
            )
            client = RendezvousClient(config, identity.x25519_private)
        resuming = client.ticket is not None
        client.login(self.now)
        for _ in range(3):  # request, challenge; signed request, answer
            self._to_server(client, at)
        while (event := client.next_event()) is not None:
            if type(event).__name__ == "LoggedIn" and client.resumed == resuming:
                return client
        raise SystemExit(f"login {index} failed")


def _progress(label: str, done: int, total: int) -> None:
    if done % max(total // 20, 1) == 0 or done == total:
        print(f"\r  {label}: {done * 100 // total:3d}%", end="", file=sys.stderr, flush=True)
        if done == total:
            print(file=sys.stderr)


def run(peers: int, db: str) -> None:
    print(f"  making {peers:,} identities ...", file=sys.stderr, flush=True)
    identities = [Identity.generate() for _ in range(peers)]
    # Memory: every peer logs in and its client is dropped at once, so that what is left
    # is the server's (tracemalloc sees Python's allocations; SQLite's own are not counted).
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    bench = Bench(db)
    for index, identity in enumerate(identities):
        bench.login(identity, index)
        _progress(f"{peers:,} logins", index + 1, peers)
    gc.collect()
    memory = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    bench.registry.close()
    del bench
    # Speed without tracemalloc (it slows Python down): a fresh server, up to 10,000 logins,
    # then an introduction from each even peer to the next.
    timed = Bench(db if db == ":memory:" else db + ".timed")
    count = min(peers, 10_000)
    clients = [timed.login(identities[index], index) for index in range(count)]
    logins_per_s = count / timed.server_seconds
    timed.server_seconds = 0.0
    timed.now += 1.0  # (a later login: a new challenge)
    for index, client in enumerate(clients):
        timed.login(identities[index], index, client)
    resumed_per_s = count / timed.server_seconds
    timed.server_seconds = 0.0
    pairs = count // 2
    for index in range(pairs):
        client = clients[2 * index]
        client.connect(f"peer{2 * index + 1}", timed.now)
        timed._to_server(client, _address(2 * index))
    introductions_per_s = pairs / timed.server_seconds
    timed.registry.close()
    print(
        f"  {peers:>7,} online: {logins_per_s:8,.0f} full logins per server CPU-second, "
        f"{resumed_per_s:8,.0f} resumed, {introductions_per_s:8,.0f} introductions/s, "
        f"{memory / 1e6:6.1f} MB in the server ({memory / peers:,.0f} B per online peer)"
    )


def key_checks() -> None:
    key = Identity.generate().public_key
    full = timeit.timeit(lambda: ed25519_to_x25519_public(key), number=2000) / 2000
    check = timeit.timeit(lambda: check_public_key(key), number=20000) / 20000
    print(
        f"  key check per login: full X25519 conversion (the old check) {full * 1e6:6.1f} us,"
        f" encoding and small-order blocklist (now) {check * 1e6:6.2f} us"
    )


def registry_claims(db: str) -> None:
    """The event loop's share of a login in the names registry (with a file, the writes are
    the writer thread's): a new name (known, then claim), and a returning one after a
    restart (its first login reads the disk)."""
    names = [f"name{index}" for index in range(20_000)]
    key = Identity.generate().public_key
    path = db if db == ":memory:" else db + ".claims"
    if path != ":memory:":  # (a fresh file: every name new)
        for stale in (path, path + "-wal", path + "-shm"):
            Path(stale).unlink(missing_ok=True)
    timings = []
    for _ in range(1 if path == ":memory:" else 2):
        registry = NameRegistry(path)
        started = time.perf_counter()
        for name in names:
            registry.known(name)
            registry.claim(name, key)
        timings.append((time.perf_counter() - started) / len(names) * 1e6)
        registry.close()
    returning = f", returning after a restart {timings[1]:5.1f} us" if len(timings) > 1 else ""
    print(f"  names registry ({db}): new name {timings[0]:5.1f} us{returning}, on the loop")


def main(argv: list[str] | None = None) -> int:
    # The server logs every login and introduction at info: not what is measured here.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", type=int, action="append", help="online peers (repeatable)")
    parser.add_argument("--db", default=":memory:", help="the names database (default: memory)")
    args = parser.parse_args(argv)
    if any(peers < 2 for peers in args.peers or []):
        parser.error("--peers must be at least 2")
    print("rendezvous capacity, in process, one core:")
    key_checks()
    registry_claims(args.db)
    for peers in args.peers or [10_000, 100_000]:
        run(peers, args.db)
    print("  goals: 5,000 (returning peers') logins per CPU-second; 100,000 online peers in 200 MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
