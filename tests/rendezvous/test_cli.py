"""The rendezvous command line: settings that cannot work are one-line errors (exit 2), and
the event loop is chosen with --event-loop (--no-uvloop kept)."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from rendezvous.cli import _loop_factory, build_parser, configs_from, main
from rendezvous.errors import ConfigError, LocalProtocolError, RendezvousError


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
