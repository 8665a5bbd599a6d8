"""How long a worker off the decision path gathers its next batch."""

from __future__ import annotations

import pytest

from shared.runtime.pipeline import batch_linger
from shared.settings import Settings


def test_a_light_load_keeps_the_short_linger() -> None:
    settings = Settings(batch_linger_seconds=0.1, batch_linger_max_seconds=0.5)
    assert batch_linger(settings, 0.0) == 0.1
    assert batch_linger(settings, 0.02) == 0.1  # twice 20 ms is still below the least


def test_the_linger_grows_with_the_iteration_up_to_its_bound() -> None:
    settings = Settings(batch_linger_seconds=0.1, batch_linger_max_seconds=0.5)
    assert batch_linger(settings, 0.08) == pytest.approx(0.16)
    assert batch_linger(settings, 0.2) == pytest.approx(0.4)
    assert batch_linger(settings, 0.3) == 0.5
    assert batch_linger(settings, 30.0) == 0.5


def test_a_bound_below_the_least_fixes_the_linger() -> None:
    settings = Settings(batch_linger_seconds=0.2, batch_linger_max_seconds=0.0)
    assert batch_linger(settings, 0.0) == 0.2
    assert batch_linger(settings, 1.0) == 0.2
