"""Every benchmark script still imports and parses its arguments (they are not run in CI:
their figures come from the machine they run on, not from a test)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


SCRIPTS = sorted(p for p in BENCH.glob("*.py") if '__name__ == "__main__"' in p.read_text())


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bench_script_help(script: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr.decode()
    assert b"usage" in result.stdout.lower()


def test_a_short_fuzz_run_finds_no_crash() -> None:
    # bench/fuzz.py's short version (the bench runs a million inputs per target): every
    # parser and handler that takes network bytes, random and mutated inputs re-sealed
    # with valid integrity; exit status 1 (and tracebacks on stderr) on any crash.
    result = subprocess.run(
        [sys.executable, str(BENCH / "fuzz.py"), "--count", "4000", "--seed", "11"],
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert result.stdout.decode().count("crashes: 0") == 10
