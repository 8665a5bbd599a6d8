"""Window names and lengths are defined once (shared.windows.names) and every user agrees."""

from __future__ import annotations

from typing import get_args

from services.gateway.routes.calibration import Window
from shared.windows.calibration import GRANULARITY, WINDOWS
from shared.windows.names import ALL_TIME, SNAPSHOT_WINDOWS, WINDOW_SECONDS, WindowName


def test_the_readers_answer_exactly_the_named_windows() -> None:
    assert set(WINDOWS) == set(get_args(WindowName)) == {*WINDOW_SECONDS, ALL_TIME}
    assert get_args(Window) == get_args(WindowName)


def test_the_buckets_of_a_window_span_its_length() -> None:
    for name, seconds in WINDOW_SECONDS.items():
        granularity, count = WINDOWS[name]
        assert GRANULARITY[granularity] * count == seconds, name
    assert WINDOWS[ALL_TIME] == ("d", 400)


def test_snapshots_cover_every_sliding_window_shortest_first() -> None:
    assert SNAPSHOT_WINDOWS == ("5m", "1h", "24h", "7d")
    assert [WINDOW_SECONDS[w] for w in SNAPSHOT_WINDOWS] == [300, 3600, 86400, 604800]
