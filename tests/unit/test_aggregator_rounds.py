"""The aggregator's evaluator skips a round that would repeat the last one's figures."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis

from services.aggregator.evaluate import Evaluator
from services.aggregator.settings import AggregatorSettings
from shared.runtime.ownership import OwnerFence, Ownership


class _Recorded(Evaluator):
    """An evaluator whose full evaluation only records when it ran."""

    def __init__(self, counted: list[int], horizon_s: int = 7 * 86_400) -> None:
        self.settings = AggregatorSettings(
            alert_cooldown_seconds=600, label_horizon_seconds=horizon_s
        )
        self.activity = lambda: counted[0]
        self._last_mark = None
        self.ran: list[int] = []
        # Never connects: the rounds here only ask whether new partitions woke them.
        self.ownership = Ownership.sole(OwnerFence(aioredis.Redis(), "unit:"))

    async def evaluate(self, now_ms: int) -> list[dict[str, Any]]:
        self.ran.append(now_ms)
        return []


def test_a_round_runs_when_something_was_counted_or_the_minute_changed() -> None:
    counted = [0]
    ev = _Recorded(counted)

    async def rounds() -> None:
        minute = 60_000
        await ev.evaluate_if_changed(10 * minute)  # first round: always
        await ev.evaluate_if_changed(10 * minute + 10_000)  # nothing new, same minute
        counted[0] = 5
        await ev.evaluate_if_changed(10 * minute + 20_000)  # events counted
        await ev.evaluate_if_changed(10 * minute + 30_000)  # nothing new again
        await ev.evaluate_if_changed(11 * minute)  # a bucket may have left a window
        await ev.evaluate_if_changed(11 * minute + 50_000)

    asyncio.run(rounds())
    assert ev.ran == [600_000, 620_000, 660_000]


def test_a_short_label_horizon_evaluates_when_a_pending_slot_expires() -> None:
    """Horizon 168 s: slots of 1 s, so the pending count may drop at any second."""
    ev = _Recorded([0], horizon_s=168)

    async def rounds() -> None:
        for now_ms in (600_000, 600_400, 601_000, 601_900, 603_000):
            await ev.evaluate_if_changed(now_ms)

    asyncio.run(rounds())
    assert ev.ran == [600_000, 601_000, 603_000]


def test_without_an_activity_count_every_round_runs() -> None:
    ev = _Recorded([0])
    ev.activity = None
    asyncio.run(ev.evaluate_if_changed(1_000))
    asyncio.run(ev.evaluate_if_changed(1_000))
    assert ev.ran == [1_000, 1_000]


def test_new_partitions_evaluate_at_once_even_with_nothing_counted() -> None:
    """An assignment wakes the evaluator: the new owner's first round must not be skipped."""
    ev = _Recorded([0])

    async def rounds() -> None:
        await ev.evaluate_if_changed(600_000)
        await ev.evaluate_if_changed(601_000)  # skipped
        ev.ownership.wake.set()
        await ev.evaluate_if_changed(602_000)  # new partitions: runs
        await ev.evaluate_if_changed(603_000)  # skipped again

    asyncio.run(rounds())
    assert ev.ran == [600_000, 602_000]
    assert not ev.ownership.wake.is_set()
