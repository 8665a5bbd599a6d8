"""Window names and lengths: the one list the aggregator's snapshots and alerts, the gateway's
``window`` query parameter and the window readers use, and how a length in seconds is named.
"""

from __future__ import annotations

from typing import Literal, get_args

WindowName = Literal["5m", "1h", "24h", "7d", "all"]
"""What ``GET /api/calibration?window=`` accepts."""
ALL_TIME: WindowName = "all"
"""Everything the day buckets still hold (400 days)."""
WINDOW_SECONDS: dict[str, int] = {"5m": 300, "1h": 3600, "24h": 86400, "7d": 7 * 86400}
"""The sliding windows, by name, and their lengths in seconds."""
SNAPSHOT_WINDOWS = tuple(WINDOW_SECONDS)
"""Windows the aggregator publishes a MetricSnapshot of, shortest first."""

assert set(get_args(WindowName)) == {*WINDOW_SECONDS, ALL_TIME}, "one list of window names"


def window_name(seconds: int) -> str:
    """``600`` → ``10m``, ``3600`` → ``1h``, ``90`` → ``90s``."""
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"
