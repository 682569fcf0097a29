#!/usr/bin/env python3
"""STUN Binding throughput on loopback: our rendezvous (as installed, and on plain asyncio) vs
coturn.

    python bench/stun_throughput.py [--duration 3] [--runs 3] [--window 128]

Compiles ``bench/stunload.c`` with gcc into a temporary directory, starts each server on
127.0.0.1 (a free port each, one after another, each checked ready with a STUN request),
then runs the load generator against them in rounds (a warm-up run each, then ``--runs``
measured rounds; interleaving the servers round by round keeps background load on a shared
machine from favouring one of them) and prints the median responses/s of each plus the ratio
of ours to coturn. With ``taskset`` and two or more CPUs, the servers are pinned to one CPU and
the load generator to another. Every server is killed at the end, also on error.

Servers:
  rendezvous-default   python -m rendezvous: the event loop a default install runs (uvloop,
                       a default dependency where it exists; --event-loop auto)
  rendezvous-nobatch   rendezvous-default with IOKIT_UDP_MMSG=0: one recvfrom_into and one
                       sendto per datagram instead of recvmmsg/sendmmsg batches
  rendezvous-asyncio   python -m rendezvous --event-loop asyncio (plain asyncio)
  bare-uvloop/-asyncio a minimal DatagramProtocol answering plain Binding requests (the ceiling
                       of a Python responder; --no-baseline to skip)
  coturn-mN            turnserver -m N (N relay threads; 0 = single-threaded mode)
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchlib import HOST, build_c, cpu_seconds, free_port, pin, start_server, stop_process

# A bare responder: what a Python asyncio server costs with (almost) no per-datagram logic.
BARE_RESPONDER = r"""
import asyncio, socket, struct, sys
port, use_uvloop = int(sys.argv[1]), sys.argv[2] == "1"
MAGIC = 0x2112A442
class P(asyncio.DatagramProtocol):
    def connection_made(self, t):
        self.t = t
    def datagram_received(self, d, a):
        if len(d) != 20 or d[:2] != b"\x00\x01":
            return
        ip = int.from_bytes(socket.inet_aton(a[0]), "big") ^ MAGIC
        xma = struct.pack("!HHBBHI", 0x20, 8, 0, 1, a[1] ^ 0x2112, ip)
        self.t.sendto(b"\x01\x01\x00\x0c" + d[4:20] + xma, a)
async def main():
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(P, local_addr=("127.0.0.1", port))
    print("listening", file=sys.stderr, flush=True)
    await asyncio.Event().wait()
if use_uvloop:
    import uvloop
    uvloop.run(main())
else:
    asyncio.run(main())
"""


def default_loop() -> str:
    """What ``rendezvous --event-loop auto`` picks in this interpreter."""
    return "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio (no uvloop)"


@dataclass
class Server:
    name: str
    argv: list[str]
    port: int
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    results: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)


def run_load(
    loadgen: Path, server: Server, args: argparse.Namespace, cpu: int | None
) -> tuple[float, float, float]:
    """One load run: (responses/s, loss fraction, server CPU share of one core)."""
    assert server.proc is not None
    before, t0 = cpu_seconds(server.proc.pid), time.monotonic()
    out = subprocess.run(
        [
            *pin(cpu),
            str(loadgen),
            HOST,
            str(server.port),
            str(args.duration),
            str(args.window),
            str(args.batch),
        ],
        capture_output=True,
        text=True,
        timeout=args.duration + 30,
    )
    share = (cpu_seconds(server.proc.pid) - before) / (time.monotonic() - t0)
    if out.returncode not in (0, 3):
        raise RuntimeError(f"stunload failed ({out.returncode}): {out.stderr.strip()}")
    stats = dict(item.split("=", 1) for item in out.stdout.split())
    return float(stats["responses_per_s"]), float(stats["loss"]), share


def build_servers(args: argparse.Namespace, tmp: Path) -> list[Server]:
    py = sys.executable
    limits = ["--rate", "1e9", "--burst", "1e9"]  # the per-source limit would cap the bench
    servers = []
    for name, extra, env in (
        ("rendezvous-default", ["--event-loop", "auto"], {}),
        ("rendezvous-nobatch", ["--event-loop", "auto"], {"IOKIT_UDP_MMSG": "0"}),
        ("rendezvous-asyncio", ["--event-loop", "asyncio"], {}),
    ):
        port = free_port()
        argv = [py, "-m", "rendezvous", "--listen", f"{HOST}:{port}", *limits, *extra]
        servers.append(Server(name, argv, port, env=env))
    if args.baseline:
        for name, flag in (("bare-uvloop", "1"), ("bare-asyncio", "0")):
            port = free_port()
            servers.append(Server(name, [py, "-c", BARE_RESPONDER, str(port), flag], port))
    turnserver = shutil.which("turnserver")
    if turnserver is None:
        print("turnserver (coturn) not found: skipping it", file=sys.stderr)
    else:
        for threads in args.coturn_threads:
            port = free_port()
            argv = [
                turnserver,
                "-L", HOST,
                "--listening-port", str(port),
                "--no-tls", "--no-dtls", "--no-tcp", "--no-cli", "--no-auth",
                "--simple-log", "--log-file", "stdout",
                "--pidfile", str(tmp / f"coturn{threads}.pid"),
                "--userdb", str(tmp / f"coturn{threads}.db"),
                "--relay-threads", str(threads),
            ]  # fmt: skip
            servers.append(Server(f"coturn-m{threads}", argv, port))
    return servers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    parser.add_argument("--runs", type=int, default=3, help="measured runs per server")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per server")
    parser.add_argument("--window", type=int, default=128, help="outstanding requests")
    parser.add_argument("--batch", type=int, default=32, help="sendmmsg/recvmmsg batch size")
    parser.add_argument(
        "--coturn-threads",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[0],
        metavar="N[,N...]",
        help="coturn --relay-threads values to run (0 = single-threaded; default 0)",
    )
    parser.add_argument("--no-baseline", dest="baseline", action="store_false",
                        help="skip the bare Python responders")  # fmt: skip
    parser.add_argument("--only", help="comma-separated server names to run")
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the finally below still stops the servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    server_cpu = client_cpu = None
    if shutil.which("taskset") and len(os.sched_getaffinity(0)) >= 2:
        server_cpu, client_cpu = sorted(os.sched_getaffinity(0))[:2]

    with tempfile.TemporaryDirectory(prefix="stunbench-") as tmp_name:
        tmp = Path(tmp_name)
        loadgen = build_c("stunload", tmp)
        servers = build_servers(args, tmp)
        if args.only:
            wanted = set(args.only.split(","))
            servers = [s for s in servers if s.name in wanted]
        try:
            for server in servers:
                server.proc = start_server(
                    server.name, server.argv, server.port, server_cpu, tmp, env=server.env
                )
                print(f"started {server.name} on {HOST}:{server.port}", file=sys.stderr)
            warm = argparse.Namespace(**{**vars(args), "duration": args.warmup})
            for server in servers:
                run_load(loadgen, server, warm, client_cpu)
            for round_no in range(args.runs):
                for server in servers:
                    rps, loss, cpu = run_load(loadgen, server, args, client_cpu)
                    server.results.append(rps)
                    server.losses.append(loss)
                    server.cpu.append(cpu)
                    print(
                        f"round {round_no + 1}: {server.name:20} {rps:10.0f}/s "
                        f"loss {loss:.2%} server cpu {cpu:.0%}",
                        file=sys.stderr,
                    )
        except BaseException:
            for server in servers:
                if server.proc is not None and server.proc.poll() is not None:
                    log = (tmp / f"{server.name}.log").read_text(errors="replace")
                    print(f"--- {server.name} log:\n{log[-2000:]}", file=sys.stderr)
            raise
        finally:
            for server in servers:
                stop_process(server.proc)

    pinning = "unpinned"
    if server_cpu is not None:
        pinning = f"server CPU {server_cpu}, load CPU {client_cpu}"
    print(
        f"\nSTUN Binding on loopback: {args.runs} x {args.duration:g} s, window {args.window}, "
        f"batch {args.batch}, {pinning}; rendezvous-default runs on {default_loop()}"
    )
    print(
        f"{'server':22}{'median req/s':>14}{'min':>10}{'max':>10}{'loss':>9}{'srv cpu':>9}"
        f"{'req/cpu-s':>11}"
    )
    for s in servers:
        per_cpu = [r / c for r, c in zip(s.results, s.cpu, strict=True) if c > 0]
        print(
            f"{s.name:22}{statistics.median(s.results):14,.0f}{min(s.results):10,.0f}"
            f"{max(s.results):10,.0f}{statistics.median(s.losses):9.2%}"
            f"{statistics.median(s.cpu):9.0%}"
            f"{statistics.median(per_cpu) if per_cpu else float('nan'):11,.0f}"
        )
    by_name = {s.name: statistics.median(s.results) for s in servers}
    coturn = [n for n in by_name if n.startswith("coturn")]
    if coturn:
        ref = coturn[0]
        for ours in ("rendezvous-default", "rendezvous-nobatch", "rendezvous-asyncio"):
            if ours in by_name:
                ratio = by_name[ours] / by_name[ref]
                print(f"{ours} / {ref}: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
