"""The rendezvous command line: settings that cannot work are one-line errors (exit 2), and
the event loop is chosen with --event-loop (--no-uvloop kept)."""

from __future__ import annotations

import asyncio
import importlib.util
import resource
import subprocess
import sys

import pytest

from rendezvous.cli import _loop_factory, build_parser, configs_from, main
from rendezvous.errors import ConfigError, LocalProtocolError, RendezvousError
from rendezvous.fd_limit import raise_fd_limit
from rendezvous.turn_config import TurnConfig


def _configs(*argv: str) -> object:
    return configs_from(build_parser().parse_args(list(argv)))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--alt-ip", "192.0.2.2"], "--alt-ip needs a concrete --listen IP"),
        (["--turn-secret", "s"], "needs --turn-relay-ip"),
        (["--listen", "192.0.2.1:3478", "--turn-secret", "s", "--turn-ports", "9-1"], "relay"),
        (["--rate", "0"], "rate"),
    ],
)
def test_bad_settings_are_config_errors(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _configs(*argv)


def test_bad_settings_exit_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--rate", "0", "--db", ":memory:"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rendezvous: bad rate limit") and "\n" not in err


def test_config_errors_are_value_errors_of_the_package() -> None:
    # Callers that caught ValueError keep working; the package's base catches all.
    assert issubclass(ConfigError, ValueError)
    assert issubclass(ConfigError, LocalProtocolError)
    assert issubclass(LocalProtocolError, RendezvousError)


def test_event_loop_choice() -> None:
    parser = build_parser()
    assert parser.parse_args([]).event_loop == "auto"
    assert parser.parse_args(["--no-uvloop"]).event_loop == "asyncio"
    assert parser.parse_args(["--event-loop", "uvloop"]).event_loop == "uvloop"
    assert _loop_factory("asyncio") is None
    if importlib.util.find_spec("uvloop") is None:
        assert _loop_factory("auto") is None
        with pytest.raises(ImportError):
            _loop_factory("uvloop")
    else:
        import uvloop

        assert _loop_factory("auto") is uvloop.new_event_loop
        assert _loop_factory("uvloop") is uvloop.new_event_loop
        loop = _loop_factory("auto")()  # type: ignore[misc]
        assert isinstance(loop, asyncio.AbstractEventLoop)
        loop.close()


def test_the_open_file_limit_is_raised_to_what_the_relay_needs() -> None:
    turn = TurnConfig(realm="r", shared_secret=b"s", relay_ip="127.0.0.1", max_allocations=500)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2000:
        pytest.skip(f"hard limit {hard} too low to test raising")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        assert raise_fd_limit(turn) == turn
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == 1000 + 500 + 64
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_hard_limit_too_low_caps_the_relay_or_is_one_line() -> None:
    # (In a child: a lowered hard limit cannot be raised again.)
    code = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, ({0}, {0})); "
        "from rendezvous.fd_limit import raise_fd_limit; from rendezvous.turn_config import "
        "TurnConfig; turn = TurnConfig(realm='r', shared_secret=b's', relay_ip='127.0.0.1'); "
        "print(raise_fd_limit(turn).max_allocations)"
    )
    capped = subprocess.run(
        [sys.executable, "-c", code.format(1200)], capture_output=True, text=True, timeout=60
    )
    assert capped.returncode == 0, capped.stderr
    assert capped.stdout.splitlines()[-1] == str(1200 - 1000 - 64)
    assert "relay_allocations_capped" in capped.stdout  # (said, not silent)
    refused = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200)); "
        "from rendezvous.cli import main; "
        "sys.exit(main(['--listen', '127.0.0.1:0', '--db', ':memory:', '--turn-secret', 's']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", refused], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("rendezvous: the open-file limit (200) is below")
    assert result.stderr.count("\n") == 1
