#!/usr/bin/env python3
"""TURN relay throughput and added latency on loopback: our embedded relay vs coturn.

    python bench/relay_throughput.py [--duration 3] [--runs 3] [--window 64] [--size 1200]

Compiles ``bench/relayload.c`` with gcc into a temporary directory and starts every relay on
127.0.0.1 (a free port and relay port range each, checked ready with a STUN request). For each
relay our sans-I/O TURN client (``peer.turn_client``) allocates with TURN REST credentials and
binds a channel to a peer socket on 127.0.0.2; the two sockets are then handed to the load
generator, which pushes ``--size``-byte payloads as ChannelData through the relay:

  up     client -> relay -> peer      (WINDOW datagrams outstanding, counted at the peer)
  down   peer -> relay -> client      (counted at the client)
  echo   client -> relay -> peer -> relay -> client (round trips; only with --modes ...,echo)
  ping   one datagram at a time through the same echo path, one every --ping-interval-us:
         round-trip time, compared with the same ping sent straight to the peer

A ``direct`` row sends the same traffic between the two sockets with no relay: the load
generator's ceiling for the throughput columns and the baseline for "added latency".

All relays are started first, then measured round by round (every relay once per round, a
warm-up run each before the first), and the table shows medians over rounds. With ``taskset``
and two CPUs, the relays run on the first CPU and the load generator on the second, so every
relay, coturn included, has one core. Every process is killed at the end, also on error.

Relays:
  rendezvous-uvloop    python -m rendezvous --turn-secret ... --event-loop uvloop (the default
                       install's loop)
  rendezvous-asyncio   the same with --event-loop asyncio
  coturn-mN            turnserver --relay-threads N (0 = single-threaded mode)
  coturn-auto          turnserver without --relay-threads (coturn's default)
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from benchlib import (  # noqa: E402
    HOST,
    build_c,
    cpu_seconds,
    free_port,
    pin,
    start_server,
    stop_process,
)

from peer.events import Allocated, AllocationFailed, ChannelBindFailed, ChannelBound  # noqa: E402
from peer.turn_client import TurnClient, TurnClientConfig  # noqa: E402
from rendezvous.turn_auth import rest_credentials  # noqa: E402
from stunproto.channel_data import encode_channel_data  # noqa: E402
from stunproto.client import RetransmitPolicy  # noqa: E402

PEER_HOST = "127.0.0.2"
SECRET = "relay bench secret"
REALM = "relaybench"
RELAY_PORTS = 16  # relay port range per server (the bench needs one allocation each)
SOCK_BUF = 4 << 20


@dataclass
class Relay:
    name: str
    argv: list[str] | None  # None: the direct baseline (no server)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    client: socket.socket | None = None
    peer: socket.socket | None = None
    relayed: tuple[str, int] | None = None
    channel: int = 0
    # mode -> per-round results
    rate: dict[str, list[float]] = field(default_factory=dict)
    loss: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)
    rtt_med: list[float] = field(default_factory=list)
    rtt_p99: list[float] = field(default_factory=list)
    ping_lost: list[int] = field(default_factory=list)


# ---------------------------------------------------------------------- ports and processes


def free_range(span: int, taken: set[int]) -> int:
    """First port of a UDP range of ``span`` ports free on HOST (bind-tested, then released),
    outside the ephemeral range that free_port draws from and away from ``taken``."""
    rng = random.Random()
    for _ in range(200):
        low = rng.randrange(20000, 32000 - span)
        if any(p in taken for p in range(low, low + span)):
            continue
        held: list[socket.socket] = []
        try:
            for port in range(low, low + span):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                held.append(s)
                s.bind((HOST, port))
            taken.update(range(low, low + span))
            return low
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError("no free relay port range found")


def stop(relay: Relay) -> None:
    for sock in (relay.client, relay.peer):
        if sock is not None:
            sock.close()
    stop_process(relay.proc)


# ---------------------------------------------------------------------- TURN setup


def udp_socket(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCK_BUF)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCK_BUF)
    sock.bind((host, 0))
    return sock


def setup_channel(relay: Relay, timeout: float = 10.0) -> None:
    """Allocate on relay.client and bind a channel to relay.peer, driving the sans-I/O
    client over the blocking socket; then check one ChannelData round trip."""
    assert relay.client is not None and relay.peer is not None
    username, password = rest_credentials(SECRET.encode(), "bench", int(time.time()) + 7200)
    client = TurnClient(
        TurnClientConfig(
            server=(HOST, relay.port),
            username=username,
            password=password,
            lifetime=3600,  # outlives the bench: no refresh needed while it runs
            policy=RetransmitPolicy(rto=0.1, max_sends=7, rto_max=0.8, final_wait=2),
        )
    )
    sock, now = relay.client, time.monotonic
    peer = relay.peer.getsockname()
    peer = (str(peer[0]), int(peer[1]))
    end = now() + timeout
    client.allocate(now())
    while True:
        for data, destination in client.datagrams_to_send(now()):
            sock.sendto(data, destination)
        progressed = False
        while (event := client.next_event()) is not None:
            if isinstance(event, Allocated):
                relay.relayed = (str(event.relayed[0]), int(event.relayed[1]))
                client.bind_channel(peer, now())
                progressed = True
            elif isinstance(event, ChannelBound):
                relay.channel = event.channel
                break
            elif isinstance(event, (AllocationFailed, ChannelBindFailed)):
                raise RuntimeError(f"{relay.name}: TURN setup failed: {event}")
        if relay.channel:
            break
        if progressed:
            continue  # send the ChannelBind now
        if now() > end:
            raise RuntimeError(f"{relay.name}: TURN setup timed out")
        timer = client.get_timer()
        wait = end - now() if timer is None else min(timer, end) - now()
        sock.settimeout(max(wait, 0.001))
        try:
            data, source = sock.recvfrom(65535)
        except TimeoutError:
            client.handle_timer(now())
            continue
        client.receive_datagram(data, (str(source[0]), int(source[1])), now())
    # The data path works before we measure it: one datagram each way.
    assert relay.relayed is not None
    probe = os.urandom(32)
    relay.peer.settimeout(2.0)
    sock.settimeout(2.0)
    sock.sendto(encode_channel_data(relay.channel, probe), (HOST, relay.port))
    data, source = relay.peer.recvfrom(65535)
    if data != probe or source[0] != relay.relayed[0]:
        raise RuntimeError(f"{relay.name}: ChannelData did not reach the peer intact")
    relay.peer.sendto(probe, relay.relayed)
    data, _ = sock.recvfrom(65535)
    if data[4 : 4 + len(probe)] != probe:
        raise RuntimeError(f"{relay.name}: data from the peer did not come back")
    sock.setblocking(False)
    relay.peer.setblocking(False)


# ---------------------------------------------------------------------- load runs


def loadgen_argv(loadgen: Path, relay: Relay, mode: str) -> list[str]:
    assert relay.client is not None and relay.peer is not None
    if relay.argv is None:  # direct: the two sockets talk to each other
        client_dst = "{}:{}".format(*relay.peer.getsockname())
        peer_dst = "{}:{}".format(*relay.client.getsockname())
    else:
        assert relay.relayed is not None
        client_dst = f"{HOST}:{relay.port}"
        peer_dst = "{}:{}".format(*relay.relayed)
    return [
        str(loadgen), mode,
        "-c", str(relay.client.fileno()), "-p", str(relay.peer.fileno()),
        "-C", client_dst, "-P", peer_dst, "-k", str(relay.channel),
    ]  # fmt: skip


def run_load(
    loadgen: Path,
    relay: Relay,
    mode: str,
    args: argparse.Namespace,
    cpu: int | None,
    duration: float,
) -> dict[str, float]:
    """One run of relayload; its key=value line, plus the relay's CPU share ('cpu')."""
    assert relay.client is not None and relay.peer is not None
    argv = pin(cpu) + loadgen_argv(loadgen, relay, mode)
    if mode == "ping":
        argv += ["-n", str(args.pings), "-i", str(args.ping_interval_us)]
        limit = args.pings * args.ping_interval_us / 1e6 + 30
    else:
        argv += ["-d", str(duration), "-w", str(args.window), "-b", str(args.batch)]
        limit = duration + 30
    argv += ["-s", str(args.size)]
    pid = relay.proc.pid if relay.proc is not None else None
    before, t0 = (cpu_seconds(pid) if pid else 0.0), time.monotonic()
    out = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=limit,
        pass_fds=(relay.client.fileno(), relay.peer.fileno()),
    )
    if out.returncode not in (0, 3):
        raise RuntimeError(f"relayload {mode} failed ({out.returncode}): {out.stderr.strip()}")
    stats = {k: float(v) for k, v in (item.split("=", 1) for item in out.stdout.split())}
    stats["cpu"] = (cpu_seconds(pid) - before) / (time.monotonic() - t0) if pid else 0.0
    return stats


def build_relays(args: argparse.Namespace, tmp: Path) -> list[Relay]:
    py = sys.executable
    taken: set[int] = set()
    relays = [Relay("direct", None)] if args.baseline else []
    for name, extra in (
        ("rendezvous-uvloop", ["--event-loop", "uvloop"]),
        ("rendezvous-asyncio", ["--event-loop", "asyncio"]),
    ):
        port, low = free_port(), free_range(RELAY_PORTS, taken)
        argv = [
            py, "-m", "rendezvous", "--listen", f"{HOST}:{port}", "--db", ":memory:",
            "--rate", "1e9", "--burst", "1e9",  # per-source STUN limit: not what we measure
            "--turn-secret", SECRET, "--turn-realm", REALM, "--turn-relay-ip", HOST,
            "--turn-allow-private-peers",
            "--turn-ports", f"{low}-{low + RELAY_PORTS - 1}",
            "--turn-bandwidth", "1e12",  # the 1 MB/s per-allocation default would cap us
            *extra,
        ]  # fmt: skip
        relays.append(Relay(name, argv, port))
    turnserver = shutil.which("turnserver")
    if turnserver is None:
        print("turnserver (coturn) not found: skipping it", file=sys.stderr)
    else:
        for threads in args.coturn_threads:
            port, low = free_port(), free_range(RELAY_PORTS, taken)
            name = f"coturn-m{threads}" if threads != "auto" else "coturn-auto"
            argv = [
                turnserver, "-n",
                "-L", HOST, "--listening-port", str(port),
                "--relay-ip", HOST,
                "--min-port", str(low), "--max-port", str(low + RELAY_PORTS - 1),
                "--use-auth-secret", "--static-auth-secret", SECRET, "--realm", REALM,
                "--allow-loopback-peers",
                "--no-tls", "--no-dtls", "--no-tcp", "--no-cli",
                "--simple-log", "--log-file", "stdout",
                "--pidfile", str(tmp / f"{name}.pid"),
                "--userdb", str(tmp / f"{name}.db"),
            ]  # fmt: skip
            if threads != "auto":
                argv += ["--relay-threads", threads]
            relays.append(Relay(name, argv, port))
    return relays


# ---------------------------------------------------------------------- report


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def per_cpu_rates(relay: Relay, mode: str) -> list[float]:
    pairs = zip(relay.rate.get(mode, []), relay.cpu.get(mode, []), strict=True)
    return [rate / cpu for rate, cpu in pairs if cpu > 0]


def report(relays: list[Relay], args: argparse.Namespace, pinning: str) -> None:
    modes = [m for m in args.modes if m != "ping"]
    mbit = args.size * 8 / 1e6
    print(
        f"\nTURN relay on loopback, {args.size}-byte payloads over one channel: {args.runs} x "
        f"{args.duration:g} s per direction, window {args.window}, batch {args.batch}; "
        f"{args.pings} pings at {1e6 / args.ping_interval_us:g}/s; {pinning}"
    )
    head = f"{'relay':20}"
    for mode in modes:
        unit = "rt/s" if mode == "echo" else "pkt/s"
        head += f"{mode + ' ' + unit:>13}{'Mbit/s':>8}{'loss':>7}{'cpu':>6}{'/cpu-s':>10}"
    if "ping" in args.modes:
        head += f"{'rtt med':>9}{'p99':>8}{'+med':>8}{'+p99':>8}"
    print(head)
    direct = next((r for r in relays if r.argv is None), None)
    for r in relays:
        line = f"{r.name:20}"
        for mode in modes:
            rate = med(r.rate.get(mode, []))
            cpu = per_cpu = ""
            if r.argv is not None:
                cpu = f"{med(r.cpu.get(mode, [])):.0%}"
                per_cpu = f"{med(per_cpu_rates(r, mode)):,.0f}"
            line += (
                f"{rate:13,.0f}{rate * mbit:8,.0f}{med(r.loss.get(mode, [])):7.2%}{cpu:>6}"
                f"{per_cpu:>10}"
            )
        if "ping" in args.modes:
            m, p = med(r.rtt_med), med(r.rtt_p99)
            line += f"{m:9.1f}{p:8.1f}"
            if direct is not None and r is not direct:
                line += f"{m - med(direct.rtt_med):8.1f}{p - med(direct.rtt_p99):8.1f}"
            if sum(r.ping_lost):
                line += f"  ({sum(r.ping_lost)} pings lost)"
        print(line)
    print(
        "(pkt/s: datagrams delivered per second, median over rounds; Mbit/s: payload only; "
        "cpu: the relay's CPU time over the run, 100% = one core, below ~95% it was "
        "starved; "
        "/cpu-s: datagrams per CPU-second of the relay, steadier on a noisy machine; "
        "rtt: ping round trip in us, "
        "median and p99; +med/+p99: minus the direct row, i.e. what the relay adds)"
    )
    by_name = {r.name: r for r in relays}
    ref: Relay | None = next((r for r in relays if r.name.startswith("coturn")), None)
    if ref is None:
        return
    for ours in ("rendezvous-uvloop", "rendezvous-asyncio"):
        mine = by_name.get(ours)
        if mine is None:
            continue
        r = mine
        parts = [
            f"{mode} {med(r.rate[mode]) / med(ref.rate[mode]):.2f} "
            f"(per CPU-s {med(per_cpu_rates(r, mode)) / med(per_cpu_rates(ref, mode)):.2f})"
            for mode in modes
        ]
        if "ping" in args.modes and direct is not None:
            added = med(r.rtt_med) - med(direct.rtt_med)
            ref_added = med(ref.rtt_med) - med(direct.rtt_med)
            if ref_added > 0:
                parts.append(f"added latency (median) {added / ref_added:.2f}")
        print(f"{ours} / {ref.name}: " + ", ".join(parts))


# ---------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    parser.add_argument("--runs", type=int, default=3, help="measured rounds")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per relay")
    parser.add_argument("--window", type=int, default=64, help="datagrams outstanding")
    parser.add_argument("--batch", type=int, default=32, help="sendmmsg/recvmmsg batch size")
    parser.add_argument("--size", type=int, default=1200, help="payload bytes per datagram")
    parser.add_argument("--pings", type=int, default=2000, help="pings per relay per round")
    parser.add_argument(
        "--ping-interval-us", type=int, default=1000, help="gap between pings (default 1000)"
    )
    parser.add_argument(
        "--modes",
        type=lambda s: s.split(","),
        default=["up", "down", "ping"],
        help="comma-separated of up, down, echo, ping (default up,down,ping)",
    )
    parser.add_argument(
        "--coturn-threads",
        type=lambda s: s.split(","),
        default=["0", "auto"],
        metavar="N[,N...]",
        help="coturn --relay-threads values ('auto': coturn's default; default 0,auto)",
    )
    parser.add_argument("--no-baseline", dest="baseline", action="store_false",
                        help="skip the direct (no relay) row")  # fmt: skip
    parser.add_argument("--only", help="comma-separated relay names to run")
    args = parser.parse_args()
    bad = set(args.modes) - {"up", "down", "echo", "ping"}
    if bad:
        parser.error(f"unknown modes: {', '.join(sorted(bad))}")
    # SIGTERM unwinds like Ctrl-C, so the finally below still stops the relays.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    server_cpu = client_cpu = None
    if shutil.which("taskset") and len(os.sched_getaffinity(0)) >= 2:
        server_cpu, client_cpu = sorted(os.sched_getaffinity(0))[:2]

    with tempfile.TemporaryDirectory(prefix="relaybench-") as tmp_name:
        tmp = Path(tmp_name)
        loadgen = build_c("relayload", tmp)
        relays = build_relays(args, tmp)
        if args.only:
            wanted = set(args.only.split(","))
            relays = [r for r in relays if r.name in wanted]
        try:
            for relay in relays:
                relay.client, relay.peer = udp_socket(HOST), udp_socket(PEER_HOST)
                if relay.argv is not None:
                    relay.proc = start_server(relay.name, relay.argv, relay.port, server_cpu, tmp)
                    setup_channel(relay)
                    print(
                        f"started {relay.name} on {HOST}:{relay.port}, relayed "
                        f"{relay.relayed[0]}:{relay.relayed[1]}, channel {relay.channel:#x}",  # type: ignore[index]
                        file=sys.stderr,
                    )
            throughput = [m for m in args.modes if m != "ping"]
            for relay in relays:
                for mode in throughput:
                    run_load(loadgen, relay, mode, args, client_cpu, args.warmup)
            for round_no in range(args.runs):
                for relay in relays:
                    for mode in throughput:
                        stats = run_load(loadgen, relay, mode, args, client_cpu, args.duration)
                        relay.rate.setdefault(mode, []).append(stats["rate"])
                        relay.loss.setdefault(mode, []).append(stats["loss"])
                        relay.cpu.setdefault(mode, []).append(stats["cpu"])
                        print(
                            f"round {round_no + 1}: {relay.name:20} {mode:5} "
                            f"{stats['rate']:10.0f}/s loss {stats['loss']:.2%} "
                            f"relay cpu {stats['cpu']:.0%}",
                            file=sys.stderr,
                        )
                    if "ping" in args.modes:
                        stats = run_load(loadgen, relay, "ping", args, client_cpu, 0)
                        relay.rtt_med.append(stats["rtt_med_us"])
                        relay.rtt_p99.append(stats["rtt_p99_us"])
                        relay.ping_lost.append(int(stats["lost"]))
                        print(
                            f"round {round_no + 1}: {relay.name:20} ping  "
                            f"median {stats['rtt_med_us']:.1f} us p99 "
                            f"{stats['rtt_p99_us']:.1f} us lost {int(stats['lost'])}",
                            file=sys.stderr,
                        )
        except BaseException:
            for relay in relays:
                path = tmp / f"{relay.name}.log"
                if relay.argv is not None and path.exists():
                    log = path.read_text(errors="replace")
                    print(f"--- {relay.name} log:\n{log[-2000:]}", file=sys.stderr)
            raise
        finally:
            for relay in relays:
                stop(relay)

    pinning = "unpinned"
    if server_cpu is not None:
        pinning = f"relay CPU {server_cpu}, load CPU {client_cpu}"
    report(relays, args, pinning)
    return 0


if __name__ == "__main__":
    sys.exit(main())
