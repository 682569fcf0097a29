from __future__ import annotations

import pytest

from natprobe import lifetime


def test_ladder_doubles_and_ends_at_the_maximum() -> None:
    assert lifetime.ladder(10) == [1, 2, 4, 8, 10]
    assert lifetime.ladder(8) == [1, 2, 4, 8]
    assert lifetime.ladder(0.5) == [0.5]
    with pytest.raises(ValueError):
        lifetime.ladder(0)


def test_bracket() -> None:
    assert lifetime.bracket({1: True, 2: True, 4: False, 8: False}) == (2, 4)
    assert lifetime.bracket({1: True, 2: True}) == (2, None)
    assert lifetime.bracket({1: False, 2: False}) == (0.0, 1)
    # A lost probe that looks expired below a live one is ignored.
    assert lifetime.bracket({1: False, 2: True, 4: False}) == (2, 4)


def test_grid_is_inside_the_bracket() -> None:
    assert lifetime.grid(2, 4) == [2.4, 2.8, 3.2, 3.6]
