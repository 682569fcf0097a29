"""Run the project's long-lived tools (the rendezvous server) inside lab namespaces and
wait for readiness by reading their structured logs with a deadline, never by sleeping."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence


def wait_for_line(
    process: subprocess.Popen[bytes], predicate: Callable[[str], bool], timeout: float = 10.0
) -> str:
    """Read ``process.stderr`` until a line satisfies ``predicate``; raise with everything
    read so far if the deadline passes or the process closes its stderr."""
    assert process.stderr is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stderr, selectors.EVENT_READ)
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    buffer = b""
    try:
        while (remaining := deadline - time.monotonic()) > 0:
            if not selector.select(remaining):
                continue
            chunk = os.read(process.stderr.fileno(), 65536)
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


@contextlib.contextmanager
def rendezvous_process(
    args: Sequence[str], prefix: Sequence[str] = (), timeout: float = 15.0
) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m rendezvous ARGS`` (inside a namespace with ``prefix``) for the duration
    of the block; yields once it has logged that it listens."""
    process = subprocess.Popen(
        [*prefix, sys.executable, "-m", "rendezvous", "--json-logs", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_line(process, is_listening, timeout)
        # Keep draining nothing: logs after start-up are small (one line per error at most
        # at info level), so the pipe cannot fill during a test.
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        if process.stderr is not None:
            process.stderr.close()
