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
) -> None:
    """Call ``evaluate(now_ms)`` every ``interval_s`` seconds until ``stopping`` is set."""
    while not stopping.is_set():
        try:
            await evaluate(clock.now_ms())
        except transient as exc:
            log.warning("%s skipped: %s", name, exc)
        except Exception:
            log.exception("%s round failed; trying again next round", name)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), interval_s)
