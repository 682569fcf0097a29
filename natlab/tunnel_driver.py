"""Tunnels in the lab (``peer expose`` / ``peer forward`` in the hosts' namespaces): the
lab's tunnel tests and bench/tunnel.py start the peers, the services and the clients this
way.

Imported, it starts things: ``tunnel_process`` (a ``peer expose|forward --json`` with its
JSON lines), ``http_server`` (``python -m http.server`` serving a directory),
``make_blob`` (a file of seeded random bytes and its SHA-256, written a megabyte at a
time), ``tool`` (this module run as a program in a namespace), ``cut_off`` / ``restore``
(a router loses its route to one internet address, both ways) and ``rx_bytes`` (what a
node's interface has received, to see which path carried a transfer).

Run as a program inside a namespace (``python -m natlab.tunnel_driver ...``), one JSON
object per line on stdout, every wait with a deadline:

  fetch URL            an HTTP GET, hashed as it arrives: {"event": "progress", "bytes"}
                       each megabyte, then {"event": "result", "status", "bytes",
                       "sha256", "seconds"}. ``--rate MB/s`` paces the reads (the
                       sender is held back by TCP's flow control); a line ``rate X`` on
                       stdin changes the pace (0: as fast as it comes). ``--socks
                       HOST:PORT`` goes through a SOCKS5 server (CONNECT, no
                       authentication): {"event": "refused", "reply"} when it refuses.
  udp-echo             answers each datagram with b"echo:" + the datagram.
  udp-ask IP PORT      sends datagrams of ``--sizes`` bytes one by one, each answered
                       before the next (retried after a second, three times at most):
                       {"event": "result", "answered", "intact", "retries", "ms"}.
  tcp-echo             echoes every connection's bytes until its end, then closes.
  ttfb IP PORT         ``--count`` connections one after the other: connect, send one
                       byte, wait for the echo; {"event": "result", "connect_ms",
                       "first_byte_ms"} (per connection).
  many IP PORT         ``--count`` connections at once, each sends ``--bytes`` and its end,
                       reads the echo to its end (``--timeout`` each); {"event": "result",
                       "ok", "failed", "errors", "seconds"}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import http.client
import json
import os
import random
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from natlab.lab import Lab
from natlab.netns import Node
from natlab.services import JsonLines, _end, wait_for_line

SERVER = "203.0.113.10"
MB = 1024 * 1024


# ------------------------------------------------------------------ the controller side


def tunnel_args(state: Path, name: str, *extra: str, server: str = SERVER) -> list[str]:
    """Common ``peer`` arguments for ``name``, its key and pins kept under ``state``."""
    return [
        *("--server", server, "--name", name),
        *("--identity", str(state / f"{name}.pem")),
        *("--known-peers", str(state / f"{name}.known")),
        *extra,
    ]


@contextlib.contextmanager
def tunnel_process(
    node: Node, command: str, state: Path, name: str, *args: str
) -> Iterator[tuple[subprocess.Popen[bytes], JsonLines]]:
    """``peer COMMAND ARGS --json`` as ``name`` inside ``node``; its stderr goes to
    ``state/NAME-COMMAND.log`` (read it when a test fails). Stopped (SIGTERM) after."""
    with (state / f"{name}-{command}.log").open("wb") as log:
        process = node.popen(
            [sys.executable, "-m", "peer", command, "--json", *args, *tunnel_args(state, name)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
        )
    try:
        yield process, JsonLines(process)
    finally:
        _end(process)


def make_blob(path: Path, megabytes: int, seed: int = 0) -> str:
    """Write ``megabytes`` of seeded random bytes to ``path``; their SHA-256 (hex)."""
    generator = random.Random(seed)
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for _ in range(megabytes):
            block = generator.randbytes(MB)
            digest.update(block)
            out.write(block)
    return digest.hexdigest()


@contextlib.contextmanager
def http_server(node: Node, directory: Path, port: int, ip: str = "127.0.0.1") -> Iterator[None]:
    """``python -m http.server`` inside ``node`` serving ``directory`` on ``ip:port``,
    for the duration of the block (returns once it says it serves)."""
    process = node.popen(
        [sys.executable, "-u", "-m", "http.server", "-b", ip, "-d", str(directory), str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_line(process, lambda line: "Serving HTTP" in line, 15, stream="stdout")
        yield
    finally:
        _end(process)


@contextlib.contextmanager
def tool(node: Node, *args: str) -> Iterator[tuple[subprocess.Popen[bytes], JsonLines]]:
    """``python -m natlab.tunnel_driver ARGS`` inside ``node`` (stdin a pipe), killed
    after; yields the process and its JSON lines."""
    process = node.popen(
        [sys.executable, "-m", "natlab.tunnel_driver", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield process, JsonLines(process)
    finally:
        _end(process)


def tell(process: subprocess.Popen[bytes], line: str) -> None:
    """One line on a tool's stdin (``rate X`` for ``fetch``)."""
    assert process.stdin is not None
    process.stdin.write(line.encode() + b"\n")
    process.stdin.flush()


def cut_off(lab: Lab, router: str, address: str) -> None:
    """Cut ``router`` off from one internet address, both ways, nothing else: the direct
    path between two peers dies, the relay (on the server's address) keeps working."""
    script = (
        "add chain ip natlab outage { type filter hook forward priority -10 ; }\n"
        f"add rule ip natlab outage ip saddr {address} drop\n"
        f"add rule ip natlab outage ip daddr {address} drop\n"
    )
    lab.routers[router].run(["sh", "-c", f"printf '%s' '{script}' | nft -f -"])


def restore(lab: Lab, router: str) -> None:
    """Undo ``cut_off``."""
    lab.routers[router].run(["nft", "flush", "chain", "ip", "natlab", "outage"])


def rx_bytes(node: Node, interface: str = "eth0") -> int:
    """Bytes ``interface`` of ``node`` has received so far."""
    return int(node.run(["cat", f"/sys/class/net/{interface}/statistics/rx_bytes"]).stdout)


# ------------------------------------------------------------ the tools (in a namespace)


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


class Pace:
    """The reading rate, in bytes per second (0: unpaced), changed by ``rate X`` lines on
    stdin (read on a thread)."""

    def __init__(self, mb_per_s: float) -> None:
        self.rate = mb_per_s * MB
        threading.Thread(target=self._listen, daemon=True).start()

    def _listen(self) -> None:
        for line in sys.stdin:
            words = line.split()
            if len(words) == 2 and words[0] == "rate":
                self.rate = float(words[1]) * MB


def socks_connect(proxy: str, host: str, port: int, timeout: float) -> socket.socket | str:
    """A connection to ``host:port`` through the SOCKS5 server at ``proxy`` (HOST:PORT,
    no authentication), or the name of the reply code that refused it."""
    from peer.tunnel import socks5

    proxy_host, _, proxy_port = proxy.rpartition(":")
    sock = socket.create_connection((proxy_host, int(proxy_port)), timeout=timeout)
    sock.sendall(socks5.encode_greeting([socks5.AuthMethod.NO_AUTHENTICATION]))
    if _receive(sock, 2) != bytes((5, socks5.AuthMethod.NO_AUTHENTICATION)):
        raise OSError("the SOCKS server wants authentication")
    sock.sendall(socks5.encode_connect(host, port))
    code, _, _ = socks5.parse_reply(_receive(sock, 10))  # (IPv4 bound address: 10 bytes)
    if code is not socks5.ReplyCode.SUCCEEDED:
        sock.close()
        return code.name
    return sock


def _receive(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count and (chunk := sock.recv(count - len(data))):
        data += chunk
    return data


def fetch(url: str, rate: float, timeout: float, socks: str | None = None) -> None:
    parts = urllib.parse.urlsplit(url)
    pace = Pace(rate)
    started = time.monotonic()
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    if socks is not None:
        through = socks_connect(socks, parts.hostname or "", parts.port or 80, timeout)
        if isinstance(through, str):
            emit("refused", reply=through)
            return
        connection.sock = through  # (http.client connects only without one)
    connection.request("GET", parts.path or "/")
    response = connection.getresponse()
    digest, total, shown = hashlib.sha256(), 0, 0
    window_start, window_bytes = time.monotonic(), 0
    while chunk := response.read(65536):
        digest.update(chunk)
        total += len(chunk)
        if total // MB > shown:
            shown = total // MB
            emit("progress", bytes=total)
        if pace.rate:
            window_bytes += len(chunk)
            ahead = window_bytes / pace.rate - (time.monotonic() - window_start)
            if ahead > 0:
                time.sleep(ahead)  # pacing the reads, not waiting for an event
        else:
            window_start, window_bytes = time.monotonic(), 0
    connection.close()
    emit(
        "result",
        status=response.status,
        bytes=total,
        sha256=digest.hexdigest(),
        seconds=time.monotonic() - started,
    )


def udp_echo(ip: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((ip, port))
        emit("ready", address=list(sock.getsockname()))
        while True:
            data, source = sock.recvfrom(65535)
            sock.sendto(b"echo:" + data, source)


def udp_ask(ip: str, port: int, sizes: Sequence[int], timeout: float) -> None:
    answered = retries = 0
    intact = True
    times: list[float] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1.0)
        deadline = time.monotonic() + timeout
        for size in sizes:
            payload = os.urandom(size)
            for _attempt in range(4):
                started = time.monotonic()
                sock.sendto(payload, (ip, port))
                try:
                    reply = sock.recv(65535)
                except TimeoutError:
                    retries += 1
                    if time.monotonic() > deadline:
                        break
                    continue
                times.append((time.monotonic() - started) * 1000)
                answered += 1
                intact = intact and reply == b"echo:" + payload
                break
    emit("result", answered=answered, intact=intact, retries=retries, ms=times)


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


async def tcp_echo(ip: str, port: int) -> None:
    server = await asyncio.start_server(_echo, ip, port, backlog=4096)
    emit("ready", address=list(server.sockets[0].getsockname()[:2]))
    await server.serve_forever()


def ttfb(ip: str, port: int, count: int, timeout: float) -> None:
    connects: list[float] = []
    firsts: list[float] = []
    for _ in range(count):
        started = time.perf_counter()
        with socket.create_connection((ip, port), timeout=timeout) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connected = time.perf_counter()
            sock.sendall(b"x")
            if sock.recv(1) != b"x":
                raise OSError("no echo")
            done = time.perf_counter()
        connects.append((connected - started) * 1000)
        firsts.append((done - started) * 1000)
    emit(
        "result",
        connect_ms=connects,
        first_byte_ms=firsts,
        median_ms=statistics.median(firsts),
    )


async def many(ip: str, port: int, count: int, size: int, timeout: float) -> None:
    payload = os.urandom(size)
    errors: dict[str, int] = {}

    async def one() -> bool:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(ip, port)
                writer.write(payload)
                writer.write_eof()
                echoed = await reader.read(-1)
                writer.close()
                return echoed == payload
        except (OSError, TimeoutError) as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            return False

    started = time.monotonic()
    results = await asyncio.gather(*(one() for _ in range(count)))
    ok = sum(results)
    emit("result", ok=ok, failed=count - ok, errors=errors, seconds=time.monotonic() - started)


def _more_files() -> None:
    """Up to the hard limit of open files: ``many`` holds a thousand sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    tools = parser.add_subparsers(dest="tool", required=True)
    get = tools.add_parser("fetch")
    get.add_argument("url")
    get.add_argument("--rate", type=float, default=0.0, help="MB/s (0: unpaced)")
    get.add_argument("--socks", metavar="HOST:PORT", help="through this SOCKS5 server")
    for name in ("udp-echo", "tcp-echo"):
        server = tools.add_parser(name)
        server.add_argument("--ip", default="127.0.0.1")
        server.add_argument("--port", type=int, required=True)
    ask = tools.add_parser("udp-ask")
    ask.add_argument("--sizes", default="1,100,1200,3000")
    for name in ("udp-ask", "ttfb", "many"):
        client = ask if name == "udp-ask" else tools.add_parser(name)
        client.add_argument("ip")
        client.add_argument("port", type=int)
        client.add_argument("--count", type=int, default=20)
        client.add_argument("--bytes", type=int, default=1000)
    for sub in tools.choices.values():
        sub.add_argument("--timeout", type=float, default=60.0, help="deadline of each wait")
    args = parser.parse_args(argv)
    _more_files()
    try:
        if args.tool == "fetch":
            fetch(args.url, args.rate, args.timeout, args.socks)
        elif args.tool == "udp-echo":
            udp_echo(args.ip, args.port)
        elif args.tool == "udp-ask":
            sizes = [int(size) for size in args.sizes.split(",")]
            udp_ask(args.ip, args.port, sizes, args.timeout)
        elif args.tool == "tcp-echo":
            asyncio.run(tcp_echo(args.ip, args.port))
        elif args.tool == "ttfb":
            ttfb(args.ip, args.port, args.count, args.timeout)
        else:
            asyncio.run(many(args.ip, args.port, args.count, args.bytes, args.timeout))
    except (OSError, TimeoutError, http.client.HTTPException, ValueError) as exc:
        emit("error", reason=f"{type(exc).__name__}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
