"""The segment windows in real Redis: bounded to W, capped per model version, and a replayed
batch changes nothing (the aggregator's fenced write)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest

from services.aggregator.counters import new_increments
from services.aggregator.store import AggregatorStore
from shared.runtime import redis_client
from shared.settings import Settings
from shared.windows.segments import OVERFLOW, SegmentState
from tests.fence_message import FenceMessage
from tooling.benchmarking import delete_redis_prefix

pytestmark = pytest.mark.integration


@pytest.fixture()
def settings(stack_settings: Settings) -> Iterator[Settings]:
    s = stack_settings.model_copy(update={"redis_prefix": f"seg{uuid.uuid4().hex[:8]}:"})
    try:
        yield s
    finally:
        delete_redis_prefix(s)


Windows = dict[tuple[str, str], list[int]]


async def _apply(store: AggregatorStore, offset: int, windows: Windows) -> bool:
    return await store.apply(
        [FenceMessage("t.labels", 0, offset)], new_increments(), [], [], {}, 0, windows
    )


def test_windows_keep_the_last_w_count_once_and_cap_segments(settings: Settings) -> None:
    async def go() -> None:
        client = redis_client.async_client(settings.redis_dsn)
        try:
            store = AggregatorStore(client, settings.redis_prefix, 3600, segment_window=5,
                                    segment_cap=2)  # fmt: skip
            state = SegmentState(client, settings.redis_prefix)
            m = "t/m/v1"
            assert await _apply(store, 0, {(m, "s=a"): [1, 2, 3]})
            assert await _apply(store, 1, {(m, "s=a"): [4, -5, 6, 7], (m, "s=b"): [9]})
            # A replay of offset 1 (a crash before the commit) is refused whole.
            assert not await _apply(store, 1, {(m, "s=a"): [4, -5, 6, 7], (m, "s=b"): [9]})
            # A third segment is beyond the cap of 2: counted as overflow, no window. The cap
            # is per segment key: a segment of another key is admitted.
            assert await _apply(store, 2, {(m, "s=c"): [8, 8], (m, "s=a"): [10], (m, "k=z"): [3]})
            counts, fits = await state.counts(m)
            assert counts == {"s=a": 8, "s=b": 1, "k=z": 1, OVERFLOW: 2}
            assert fits == {}
            windows = await state.windows(m, ["s=a", "s=b", "s=c"])
            # s=a: 1..7 trimmed to the last 5 (3, 4, -5, 6, 7), then 10 pushes out 3.
            assert [[int(v) for v in w] for w in windows] == [[4, -5, 6, 7, 10], [9], []]
            assert await state.models() == [m]
            ttl = await client.ttl(store.segments.ring(m, "s=a"))
            assert 29 * 86_400 < ttl <= 30 * 86_400
            await state.mark_fitted(m, {"s=a": 8})
            assert (await state.counts(m))[1] == {"s=a": 8}
        finally:
            await client.aclose()

    asyncio.run(go())
