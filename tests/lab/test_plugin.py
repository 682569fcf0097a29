"""Lab tests skip without root/netns support, but fail under CI=true."""

from __future__ import annotations

import pytest

from natlab import pytest_plugin

pytestmark = pytest.mark.lab


def _unsupported() -> tuple[bool, str]:
    return False, "the NAT lab needs root"


def test_skips_when_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pytest_plugin, "_support", _unsupported)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs root"):
        pytest_plugin.require_lab()


def test_fails_in_ci_when_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pytest_plugin, "_support", _unsupported)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI"):
        pytest_plugin.require_lab()
