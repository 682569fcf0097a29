"""Tunnels in the NAT lab: ``peer forward`` beside OpenSSH's ``ssh -L`` and plain TCP.

Each path is one fresh lab: two port-restricted cone NATs (direct) or two symmetric NATs
(relay), the rendezvous on the server host with its relay's quota lifted. bob (host b)
runs ``peer expose sink=127.0.0.1:5201 echo=127.0.0.1:7000 --allow alice``; alice (host a)
runs ``peer forward`` to one of them. Rows:

throughput   one TCP connection of --mb megabytes from alice to a sink on bob's host
             (natlab.bulk's tcp-sender and tcp-receiver: the sink answers with the
             SHA-256; MB/s from the first byte to that answer):
               forward      through ``peer forward 9001 bob:sink``;
               data plane   the peers' own bulk rate, a stream between two Peer objects
                            (bench/bulk.py's lab row, measured here on the same NATs);
               ssh -L       (direct only) ``ssh -L 9003:127.0.0.1:5201`` to an sshd on
                            bob's host, reached through a TCP port forward (DNAT) on bob's
                            NAT: the same hosts, NATs and wires as the direct peer path,
                            over TCP; OpenSSH's default cipher (chacha20-poly1305, as our
                            channel);
               plain TCP    (direct only) the same port forward straight to the sink: the
                            ceiling of that path.
first byte   median of --connections new connections, one after another, on an existing
             tunnel: connect, one byte, its echo; beside the path's round trip (a plain TCP
             connect through bob's port forward: SYN to SYN-ACK) and the same through
             plain TCP and ssh -L (a new TCP connection costs two round trips to its first
             echoed byte, a new stream on a tunnel should cost one).
concurrency  --concurrent connections at once through one forward, each 1,000 bytes and
             its end, echoed back to the end: how many complete and the total time.
publish      (direct lab) ``peer publish`` of bob's sink and echo on the server's public
             ports (rendezvous --publish-ports), reached by plain TCP from alice's host:
             throughput, first byte, concurrency as above (a note if it does not exist).

sudo .venv/bin/python bench/tunnel.py                  # 200 MB, about 2 minutes
sudo .venv/bin/python bench/tunnel.py --mb 500 --paths direct
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SINK_PORT, ECHO_PORT, SSH_PORT = 5201, 7000, 22
# On bob's NAT's public address: a TCP port forward to bob's host, for ssh and plain TCP.
NAT_SSH, NAT_SINK, NAT_ECHO = 2222, 5202, 7001
FORWARD_SINK, FORWARD_ECHO, SSH_SINK, SSH_ECHO = 9001, 9002, 9003, 9004
PUBLIC_SINK, PUBLIC_ECHO = 20001, 20002  # peer publish, on the server's address
PUBLISHING = ["--publish-ports", f"{PUBLIC_SINK}-{PUBLIC_ECHO}", "--publish-allow", "bobpub"]
MB = 1024 * 1024


@dataclass
class PathFigures:
    path: str
    mb_per_s: dict[str, float] = field(default_factory=dict)
    first_byte_ms: dict[str, float] = field(default_factory=dict)
    rtt_ms: float | None = None
    concurrent: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _progress(text: str) -> None:
    print(f"  {text} ...", file=sys.stderr, flush=True)


def throughput(lab: Any, ip: str, port: int, megabytes: int, timeout: float) -> float:
    """MB/s of one TCP connection from host a to ``ip:port`` ending at a sink on host b."""
    from natlab.bulk_driver import run_pair

    receiver = ["--role=tcp-receiver", f"--port={SINK_PORT}", f"--timeout={timeout:g}"]
    sender = ["--role=tcp-sender", f"--server={ip}", f"--port={port}", f"--mb={megabytes}"]
    sender.append(f"--timeout={timeout:g}")
    sent, got = run_pair(lab, ("b", receiver), ("a", sender), timeout)
    if not sent.get("intact") or got.get("bytes") != megabytes * MB:
        raise SystemExit(f"transfer to {ip}:{port} not whole: {sent} {got}")
    return megabytes * MB / float(sent["seconds"]) / 1e6


def first_bytes(lab: Any, ip: str, port: int, count: int) -> dict[str, Any]:
    from natlab.tunnel_driver import tool

    with tool(lab.hosts["a"], "ttfb", ip, str(port), "--count", "1", "--timeout", "30") as (
        _,
        warm,
    ):
        warm.next("result", timeout=60)  # the tunnel (or the ssh channel) is up now
    with tool(lab.hosts["a"], "ttfb", ip, str(port), "--count", str(count)) as (_, out):
        return out.next("result", timeout=120)


def concurrent(lab: Any, port: int, count: int, ip: str = "127.0.0.1") -> dict[str, Any]:
    from natlab.tunnel_driver import tool

    args = ("many", ip, str(port), "--count", str(count), "--timeout", "60")
    with tool(lab.hosts["a"], *args) as (_, out):
        return out.next("result", timeout=180)


def data_plane(lab: Any, keys: Path, megabytes: int, timeout: float) -> float:
    from natlab.bulk_driver import peer_pair

    sent, got = peer_pair(lab, keys, [f"--mb={megabytes}"], timeout)
    if not sent.get("intact"):
        raise SystemExit(f"data plane transfer not whole: {sent} {got}")
    return megabytes * MB / float(sent["seconds"]) / 1e6


def port_forward(lab: Any, rules: dict[int, int]) -> None:
    """TCP ports of bob's NAT's public address forwarded to bob's host (DNAT)."""
    router = lab.routers["nat_b"]
    inside = lab.hosts["b"].ip
    for outside, port in rules.items():
        router.run(
            [
                *("nft", "add", "rule", "ip", "natlab", "pre_nat", "iifname", router.wan_if),
                *("ip", "daddr", router.public_ip, "tcp", "dport", str(outside)),
                *("dnat", "ip", "to", f"{inside}:{port}"),
            ]
        )


@contextlib.contextmanager
def sshd(lab: Any, state: Path) -> Iterator[Path]:
    """An sshd on bob's host (port 22, a key made for this run); yields the client key."""
    from natlab.services import _end, wait_for_line

    for key in ("host", "client"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(state / key)], check=True
        )
    (state / "authorized_keys").write_text((state / "client.pub").read_text())
    os.chmod(state / "authorized_keys", 0o600)
    config = state / "sshd_config"
    config.write_text(
        f"ListenAddress 0.0.0.0:{SSH_PORT}\nHostKey {state / 'host'}\n"
        f"AuthorizedKeysFile {state / 'authorized_keys'}\nPermitRootLogin yes\n"
        "StrictModes no\nUsePAM no\nPasswordAuthentication no\nAllowTcpForwarding yes\n"
        "PidFile none\nMaxStartups 2000\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # its privilege separation directory
    sshd_bin = shutil.which("sshd") or "/usr/sbin/sshd"
    process = lab.hosts["b"].popen(
        [sshd_bin, "-D", "-e", "-f", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_line(process, lambda line: "listening on" in line.lower(), 15)
        yield state / "client"
    finally:
        _end(process)


@contextlib.contextmanager
def ssh_forward(lab: Any, key: Path, forwards: dict[int, int]) -> Iterator[None]:
    """``ssh -N -L`` from host a to bob's sshd through bob's NAT's port forward."""
    from natlab.services import _end, wait_for_line

    args = ["ssh", "-v", "-N", "-i", str(key), "-p", str(NAT_SSH)]
    args += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
    args += ["-o", "ExitOnForwardFailure=yes", "-o", "BatchMode=yes"]
    for local, remote in forwards.items():
        args += ["-L", f"127.0.0.1:{local}:127.0.0.1:{remote}"]
    process = lab.hosts["a"].popen(
        [*args, f"root@{lab.routers['nat_b'].public_ip}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_line(process, lambda line: "Entering interactive session" in line, 20)
        # -v logs every channel opened: read on, or a full pipe would stall ssh.
        threading.Thread(target=_drain, args=(process.stderr,), daemon=True).start()
        yield
    finally:
        _end(process)


def keep_reading(process: subprocess.Popen[bytes]) -> None:
    """Read a tunnel command's status lines from here on and drop them: one pair per
    connection fills a pipe nobody reads in a few hundred connections, and the command
    then blocks writing its next line, the whole peer with it."""
    assert process.stdout is not None
    threading.Thread(target=_drain, args=(process.stdout,), daemon=True).start()


def _drain(stream: IO[bytes]) -> None:
    with contextlib.suppress(OSError, ValueError):
        while stream.read(65536):
            pass


def measure(kind: str, megabytes: int, connections: int, many: int) -> PathFigures:
    from natlab import Lab, NatKind, NatSpec
    from natlab.bulk_driver import server_args
    from natlab.services import rendezvous_process
    from natlab.tunnel_driver import tool, tunnel_process

    path = "direct" if kind == "port-restricted-cone" else "relay"
    figures = PathFigures(path)
    spec = NatSpec(kind=NatKind(kind))
    timeout = 600.0
    with (
        tempfile.TemporaryDirectory() as directory,
        Lab.two_nats(a=spec, b=spec) as lab,
        rendezvous_process(
            [*server_args("bench tunnel secret"), *PUBLISHING], lab.server.exec_prefix
        ),
    ):
        state = Path(directory)
        _progress(f"{path}: data plane, {megabytes} MB")
        figures.mb_per_s["data plane"] = data_plane(lab, state, megabytes, timeout)
        b, a = lab.hosts["b"], lab.hosts["a"]
        services = [f"sink=127.0.0.1:{SINK_PORT}", f"echo=127.0.0.1:{ECHO_PORT}"]
        with (
            tool(b, "tcp-echo", "--ip", "0.0.0.0", "--port", str(ECHO_PORT)) as (_, echo),
            tunnel_process(
                b, "expose", state, "bob", *services, "--allow", "alice", "--no-probe"
            ) as (_, bob),
        ):
            echo.next("ready", timeout=15)
            bob.next("exposing", timeout=30)
            keep_reading(bob.process)
            _progress(f"{path}: peer forward, {megabytes} MB")
            with tunnel_process(
                a, "forward", state, "alice", str(FORWARD_SINK), "bob:sink", "--no-probe"
            ) as (_, alice):
                alice.next("listening", timeout=30)
                figures.mb_per_s["peer forward"] = throughput(
                    lab, "127.0.0.1", FORWARD_SINK, megabytes, timeout
                )
            _progress(f"{path}: first bytes and {many} connections through peer forward")
            with tunnel_process(
                a, "forward", state, "alice", str(FORWARD_ECHO), "bob:echo", "--no-probe"
            ) as (_, alice):
                alice.next("listening", timeout=30)
                keep_reading(alice.process)
                result = first_bytes(lab, "127.0.0.1", FORWARD_ECHO, connections)
                figures.first_byte_ms["peer forward"] = float(result["median_ms"])
                figures.concurrent["peer forward"] = concurrent(lab, FORWARD_ECHO, many)
            if path == "direct":
                port_forward(lab, {NAT_SSH: SSH_PORT, NAT_SINK: SINK_PORT, NAT_ECHO: ECHO_PORT})
                nat_b = lab.routers["nat_b"].public_ip
                _progress(f"{path}: plain TCP, {megabytes} MB")
                figures.mb_per_s["plain TCP"] = throughput(lab, nat_b, NAT_SINK, megabytes, timeout)
                result = first_bytes(lab, nat_b, NAT_ECHO, connections)
                figures.first_byte_ms["plain TCP"] = float(result["median_ms"])
                figures.rtt_ms = statistics.median(result["connect_ms"])
                _progress(f"{path}: ssh -L, {megabytes} MB")
                with (
                    sshd(lab, state) as key,
                    ssh_forward(lab, key, {SSH_SINK: SINK_PORT, SSH_ECHO: ECHO_PORT}),
                ):
                    figures.mb_per_s["ssh -L"] = throughput(
                        lab, "127.0.0.1", SSH_SINK, megabytes, timeout
                    )
                    result = first_bytes(lab, "127.0.0.1", SSH_ECHO, connections)
                    figures.first_byte_ms["ssh -L"] = float(result["median_ms"])
                    figures.concurrent["ssh -L"] = concurrent(lab, SSH_ECHO, many)
                if publishing():
                    _progress(f"{path}: peer publish, {megabytes} MB")
                    publish(lab, state, figures, megabytes, connections, many, timeout)
    return figures


def publishing() -> bool:
    """Whether ``peer publish`` exists here (it came after ``peer forward``)."""
    help_text = subprocess.run(
        [sys.executable, "-m", "peer", "--help"], capture_output=True, text=True, check=False
    ).stdout
    return "publish" in help_text


def publish(
    lab: Any,
    state: Path,
    figures: PathFigures,
    megabytes: int,
    connections: int,
    many: int,
    timeout: float,
) -> None:
    """``peer publish`` of the sink and the echo on the server's public ports, reached by
    plain TCP from host a: a -> a's NAT -> the server's gateway -> bob's NAT -> bob."""
    from natlab.bulk_driver import SERVER
    from natlab.tunnel_driver import tunnel_process

    services = [f"sink=127.0.0.1:{SINK_PORT}", f"echo=127.0.0.1:{ECHO_PORT}"]
    ports = ["--public-port", str(PUBLIC_SINK), "--public-port", str(PUBLIC_ECHO)]
    with tunnel_process(
        lab.hosts["b"], "publish", state, "bobpub", *services, *ports, "--no-probe"
    ) as (_, bob):
        bob.collect("published", 2, timeout=30)
        keep_reading(bob.process)
        figures.mb_per_s["peer publish"] = throughput(lab, SERVER, PUBLIC_SINK, megabytes, timeout)
        result = first_bytes(lab, SERVER, PUBLIC_ECHO, connections)
        figures.first_byte_ms["peer publish"] = float(result["median_ms"])
        figures.concurrent["peer publish"] = concurrent(lab, PUBLIC_ECHO, many, SERVER)


def report(rows: list[PathFigures], megabytes: int, connections: int, many: int) -> None:
    print(
        f"tunnels in the lab: {megabytes} MB over one TCP connection, alice (host a) to a sink"
        " on bob's host; direct = two port-restricted cone NATs, relay = two symmetric NATs"
    )
    print("  ssh -L and plain TCP: through a TCP port forward on bob's NAT (same hosts,")
    print("  NATs and wires as the direct peer path); OpenSSH's default cipher")
    print(f"  {'path':7} {'how':14} {'MB/s':>8}")
    for row in rows:
        for how, rate in row.mb_per_s.items():
            print(f"  {row.path:7} {how:14} {rate:8.1f}")
    print(f"first byte of a new connection on an open tunnel, median of {connections}:")
    for row in rows:
        rtt = f"; path RTT {row.rtt_ms:.2f} ms (TCP connect)" if row.rtt_ms is not None else ""
        figures = ", ".join(f"{how} {ms:.2f} ms" for how, ms in row.first_byte_ms.items())
        print(f"  {row.path:7} {figures}{rtt}")
    print(f"{many} concurrent connections (1,000 B each way):")
    for row in rows:
        for how, result in row.concurrent.items():
            errors = f", errors {result['errors']}" if result["errors"] else ""
            print(
                f"  {row.path:7} {how:14} {result['ok']}/{many} complete in"
                f" {result['seconds']:.2f} s{errors}"
            )
    if not publishing():
        print("publish: skipped, `peer publish` does not exist here")
    for row in rows:
        forward, plane = row.mb_per_s.get("peer forward"), row.mb_per_s.get("data plane")
        if forward and plane:
            print(
                f"goal ({row.path}): peer forward at {forward / plane:.0%} of the data plane's"
                f" own bulk rate ({forward:.1f} of {plane:.1f} MB/s)"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=int, default=200, help="megabytes per transfer")
    parser.add_argument("--connections", type=int, default=50, help="first-byte samples")
    parser.add_argument("--concurrent", type=int, default=1000)
    parser.add_argument("--paths", default="direct,relay", help="direct, relay or both")
    args = parser.parse_args(argv)
    kinds = {"direct": "port-restricted-cone", "relay": "symmetric"}
    rows = [
        measure(kinds[path], args.mb, args.connections, args.concurrent)
        for path in args.paths.split(",")
    ]
    report(rows, args.mb, args.connections, args.concurrent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
