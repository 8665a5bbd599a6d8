"""The evaluator loop: one round now, then one every interval, until the worker stops.

A round that fails must not end the loop (the worker would go on counting with no snapshots,
alerts or gauges): a store that is unreachable skips the round with a warning, any other
failure is logged with its traceback, and the next round comes at the usual time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from shared.runtime import clock

TRANSIENT: tuple[type[BaseException], ...] = (ConnectionError, OSError)
"""Failures that mean "a store is unreachable", logged without a traceback."""


async def run_rounds(
    name: str,
    evaluate: Callable[[int], Awaitable[object]],
    interval_s: float,
    stopping: asyncio.Event,
    log: logging.Logger,
    transient: tuple[type[BaseException], ...] = TRANSIENT,
    wake: asyncio.Event | None = None,
) -> None:
    """Call ``evaluate(now_ms)`` every ``interval_s`` seconds until ``stopping`` is set, and
    at once when ``wake`` is set (the evaluator clears it: new partitions to evaluate)."""
    while not stopping.is_set():
        try:
            await evaluate(clock.now_ms())
        except transient as exc:
            log.warning("%s skipped: %s", name, exc)
        except Exception:
            log.exception("%s round failed; trying again next round", name)
        await _pause(stopping, interval_s, wake)


async def _pause(stopping: asyncio.Event, interval_s: float, wake: asyncio.Event | None) -> None:
    waits = [asyncio.ensure_future(stopping.wait())]
    if wake is not None:
        waits.append(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(waits, timeout=interval_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*waits)
