"""Which bucket keys answer a window, and how a bucket's counters split between hashes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from shared.windows.calibration import GRANULARITY, WindowReader, _joined, split_fine

HOUR, DAY = GRANULARITY["h"], GRANULARITY["d"]


@pytest.fixture
async def reader() -> AsyncIterator[WindowReader]:
    client = aioredis.Redis()  # never connects: only key names are computed here
    yield WindowReader(client, "p:")
    await client.aclose()


def hours_of(keys: list[str]) -> list[int]:
    """The hour buckets a list of hour and day keys stands for."""
    out = []
    for key in keys:
        granularity, start = key.split(":")[2], int(key.rsplit(":", 1)[1])
        out += [start] if granularity == "h" else list(range(start, start + DAY, HOUR))
    return sorted(out)


@pytest.mark.parametrize(
    "now_s",
    [
        1_700_000_000,  # mid-day
        1_699_920_000,  # exactly midnight UTC
        1_699_920_000 - 1,  # the last second of a day
        1_699_920_000 + HOUR,  # 01:00
        1_699_920_000 + 23 * HOUR + 59,  # 23:00:59
    ],
)
async def test_seven_days_from_day_rollups_cover_the_same_hours(
    reader: WindowReader, now_s: int
) -> None:
    hourly = reader.window_keys("t/m/v", "7d", now_s)
    summed = reader.summed_keys("t/m/v", "7d", now_s)
    assert len(hourly) == 168
    assert hours_of(summed) == hours_of(hourly)  # each hour exactly once
    assert len(summed) <= 23 + 7 + 23
    assert sum(":d:" in k for k in summed) >= 6


async def test_short_windows_are_their_own_buckets(reader: WindowReader) -> None:
    now = 1_700_000_000
    assert reader.summed_keys("t/m/v", "1h", now) == reader.window_keys("t/m/v", "1h", now)
    keys = reader.summed_keys("t/m/v", "24h", now)
    assert len(keys) == 24 and all(":h:" in k for k in keys)
    assert keys[0] == f"p:agg:h:{{t/m/v}}:{now // HOUR * HOUR}"
    fine = reader.summed_keys("t/m/v", "5m", now, fine=True)
    assert fine[0] == f"p:agg:mf:{{t/m/v}}:{now // 60 * 60}" and len(fine) == 5


async def test_an_unknown_window_names_the_choices(reader: WindowReader) -> None:
    with pytest.raises(ValueError, match="'2w' is not one of 5m, 1h, 24h, 7d, all"):
        reader.summed_keys("t/m/v", "2w")


def test_fine_histogram_fields_go_to_their_own_hash() -> None:
    fields = {"n": 3, "rv": 1, "L": 2, "c9": 2, "k9": 1, "s9": 1_900_000_000, "h950": 1}
    fields |= {"e950": 1, "f950": 950_000_000, "h1000": 1, "dl2": 2, "H9|cat": 1, "C0|dog": 2}
    main, fine = split_fine(fields)
    assert fine == {"h950": 1, "e950": 1, "f950": 950_000_000, "h1000": 1}
    assert main == {k: v for k, v in fields.items() if k not in fine}


def test_joined_sums_are_exact_beyond_double_precision() -> None:
    # 2^53 + 1 cannot be a double; split at 1e9 it is 9007199 · 1e9 + 254740993.
    flat = [b"s9", b"9007199", b"254740993", b"n", b"0", b"12"]
    totals = _joined(flat)
    assert totals.get("s9") == 2**53 + 1
    assert totals.get("n") == 12
    assert totals.get("missing") == 0
