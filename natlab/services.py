"""Run the project's long-lived tools (the rendezvous server) inside lab namespaces and
wait for readiness by reading their structured logs with a deadline, never by sleeping."""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path


def wait_for_line(
    process: subprocess.Popen[bytes],
    predicate: Callable[[str], bool],
    timeout: float = 10.0,
    *,
    stream: str = "stderr",
) -> str:
    """Read ``process.stderr`` (or ``stdout``) until a line satisfies ``predicate``; raise
    with everything read so far if the deadline passes or the process closes the stream.
    Reads the pipe's descriptor directly: lines after the match may be consumed."""
    pipe = process.stderr if stream == "stderr" else process.stdout
    assert pipe is not None
    selector = selectors.DefaultSelector()
    selector.register(pipe, selectors.EVENT_READ)
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    buffer = b""
    try:
        while (remaining := deadline - time.monotonic()) > 0:
            if not selector.select(remaining):
                continue
            chunk = os.read(pipe.fileno(), 65536)
            if not chunk:
                break
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace")
                seen.append(line)
                if predicate(line):
                    return line
    finally:
        selector.close()
    raise TimeoutError(f"no matching line within {timeout}s; output so far: {seen}")


def is_listening(line: str) -> bool:
    try:
        return bool(json.loads(line).get("event") == "listening")
    except ValueError:
        return False


@functools.cache
def _run_key_file() -> Path:
    directory = Path(tempfile.mkdtemp(prefix="holepunch-key-"))
    atexit.register(shutil.rmtree, directory, True)
    return directory / "server_key.pem"


@contextlib.contextmanager
def rendezvous_process(
    args: Sequence[str], prefix: Sequence[str] = (), timeout: float = 15.0
) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m rendezvous ARGS`` (inside a namespace with ``prefix``) for the duration
    of the block; yields once it has logged that it listens."""
    # Tests and demos keep name ownership in memory unless they ask otherwise.
    storage = [] if "--db" in args else ["--db", ":memory:"]
    # ... and one server key per test run (a restarted server keeps it, as a real one does).
    if "--key-file" not in args:
        storage += ["--key-file", str(_run_key_file())]
    process = subprocess.Popen(
        [*prefix, sys.executable, "-m", "rendezvous", "--json-logs", *storage, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_line(process, is_listening, timeout)
        # Nobody reads stderr after start-up: at info level the server logs a line per
        # login or exchange, far too little to fill the pipe during a test.
        yield process
    finally:
        _end(process)


class JsonLines:
    """Reads a process's stdout as JSON lines with deadlines (no sleeps)."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        self.process = process
        self.seen: list[dict[str, object]] = []
        self._buffer = b""
        self._cursor = 0

    def _read(self, deadline: float) -> bool:
        assert self.process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                return False
        chunk = os.read(self.process.stdout.fileno(), 65536)
        if not chunk:
            return False
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            try:
                self.seen.append(json.loads(line))
            except ValueError:
                self.seen.append({"event": "garbage", "text": line.decode(errors="replace")})
        return True

    def next(self, event: str | None = None, timeout: float = 30.0) -> dict[str, object]:
        """The next unread object (with ``event`` == the given name, skipping others)."""
        deadline = time.monotonic() + timeout
        while True:
            while self._cursor < len(self.seen):
                item = self.seen[self._cursor]
                self._cursor += 1
                if event is None or item.get("event") == event:
                    return item
            if not self._read(deadline):
                raise TimeoutError(
                    f"no {event or 'output'} within {timeout}s; seen {self.seen}; "
                    f"exit code {self.process.poll()}"
                )

    def collect(self, event: str, count: int, timeout: float = 30.0) -> list[dict[str, object]]:
        deadline = time.monotonic() + timeout
        return [self.next(event, max(0.0, deadline - time.monotonic())) for _ in range(count)]


@contextlib.contextmanager
def chat_process(
    prefix: Sequence[str], args: Sequence[str]
) -> Iterator[tuple[subprocess.Popen[bytes], JsonLines]]:
    """``peer chat --json ARGS`` inside a namespace; stdin is a pipe for messages."""
    process = subprocess.Popen(
        [*prefix, sys.executable, "-m", "peer", "chat", "--json", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        yield process, JsonLines(process)
    finally:
        _end(process)


def chat_args(server: str, state: Path, name: str, *extra: str) -> list[str]:
    """``peer chat`` arguments for ``name``, its key and pinned peers kept under ``state``."""
    return [
        "--server",
        server,
        "--name",
        name,
        "--identity",
        str(state / f"{name}.pem"),
        "--known-peers",
        str(state / f"{name}.known"),
        *extra,
    ]


def _end(process: subprocess.Popen[bytes]) -> None:
    """Terminate (then kill) a process we started and close its pipes."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            stream.close()
