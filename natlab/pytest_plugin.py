"""pytest integration: the `lab_factory` fixture and root/netns skip logic.

Enable with `pytest_plugins = ["natlab.pytest_plugin"]` in a conftest.py.
Without root or namespace support, lab tests are skipped with a reason --
except under CI (`CI=true`), where a skipped lab test would silently hide a
broken rig, so they fail instead.
"""

from __future__ import annotations

import functools
import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from natlab.lab import TOPOLOGIES, Lab
from natlab.netns import netns_supported

LabFactory = Callable[..., Lab]


def _exit_on_signal(signum: int, frame: object) -> None:
    # KeyboardInterrupt makes pytest stop the session but still run teardown.
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lab: needs root and network namespaces (the NAT lab)")
    # A run killed by SIGTERM/SIGHUP (CI cancel, closed terminal) would skip
    # fixture teardown and atexit, leaking namespaces; unwind instead.
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) is signal.SIG_DFL:
                signal.signal(sig, _exit_on_signal)


@functools.cache
def _support() -> tuple[bool, str]:
    return netns_supported()


def require_lab() -> None:
    """Skip (or fail under CI=true) when the NAT lab cannot run here."""
    ok, reason = _support()
    if ok:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"NAT lab unavailable in CI: {reason}", pytrace=False)
    pytest.skip(f"NAT lab unavailable: {reason}")


@pytest.fixture
def lab_factory() -> Iterator[LabFactory]:
    """Build labs: `lab_factory("two-nats", a=spec, b=spec)` or
    `lab_factory(Lab.same_lan, nat=spec)`. All are torn down after the test,
    whether it passed or not."""
    require_lab()
    labs: list[Lab] = []

    def make(topology: str | Callable[..., Lab], /, *args: Any, **kwargs: Any) -> Lab:
        builder = TOPOLOGIES[topology] if isinstance(topology, str) else topology
        lab = builder(*args, **kwargs)
        labs.append(lab)
        return lab

    try:
        yield make
    finally:
        for lab in labs:
            lab.close()
