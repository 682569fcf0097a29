"""What the server benchmarks share: free ports on loopback, STUN readiness pings, servers
started in their own process group (pinned to a CPU) and stopped for sure, CPU accounting
from /proc, and building the C load generators."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
HOST = "127.0.0.1"
MAGIC = bytes.fromhex("2112a442")


def free_port() -> int:
    """A port free for UDP and TCP on HOST, with port + 1 free too (coturn's alt port)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((HOST, 0))
            port = int(probe.getsockname()[1])
        if port >= 65535:
            continue
        held: list[socket.socket] = []
        try:
            for p in (port, port + 1):
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    s = socket.socket(socket.AF_INET, kind)
                    held.append(s)
                    s.bind((HOST, p))
            return port
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError("no free port pair found")


def stun_ping(port: int, timeout: float = 0.2) -> bool:
    """One Binding request; True when a Binding success with our transaction id comes back."""
    tid = os.urandom(12)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(b"\x00\x01\x00\x00" + MAGIC + tid, (HOST, port))
            data = s.recv(2048)
        except OSError:  # timeout or ICMP port unreachable (not bound yet)
            return False
    return len(data) >= 20 and data[:2] == b"\x01\x01" and data[8:20] == tid


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all threads), from /proc; 0 where there is no /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pin(cpu: int | None) -> list[str]:
    return ["taskset", "-c", str(cpu)] if cpu is not None else []


def start_server(
    name: str,
    argv: list[str],
    port: int,
    cpu: int | None,
    log_dir: Path,
    deadline_s: float = 15.0,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` (pinned to ``cpu``; ``env`` added to the environment) and return once
    it answers STUN on ``port``."""
    with (log_dir / f"{name}.log").open("wb") as log:
        proc = subprocess.Popen(
            pin(cpu) + argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, **env} if env else None,
            start_new_session=True,  # own process group: we kill exactly what we started
        )
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode} at startup")
        if stun_ping(port):
            return proc
    stop_process(proc)
    raise RuntimeError(f"{name} did not answer STUN within {deadline_s:.0f} s")


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM the process group, SIGKILL if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
    except ProcessLookupError:
        pass


def build_c(name: str, tmp: Path) -> Path:
    """Compile ``bench/<name>.c`` into ``tmp`` with -O2; exit with a reason without gcc."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        sys.exit(f"needs gcc (or cc) to build bench/{name}.c")
    exe = tmp / name
    subprocess.run([gcc, "-O2", "-Wall", "-o", str(exe), str(HERE / f"{name}.c")], check=True)
    return exe
