"""Run a Caliber worker as a Faust app.

The Faust app owns the process: signal handling, start-up and orderly shutdown. The work
itself is a batch loop (see :mod:`shared.runtime.pipeline`) run as the app's task, because a
per-message Faust stream is capped near 3,700 messages/s while a batch fetch is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
from collections.abc import Awaitable, Callable

import faust

from shared.contracts.topics import worker_app_id
from shared.runtime.identity import refuse_mixed_stores
from shared.runtime.kafka import HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_MS
from shared.runtime.priority import renice_threads
from shared.settings import Settings

logger = logging.getLogger(__name__)

Loop = Callable[[asyncio.Event], Awaitable[None]]


def create_app(name: str, settings: Settings, loop: Loop) -> faust.App:
    """A Faust app named ``<namespace>-<name>-worker`` whose task runs ``loop`` until shutdown.

    ``loop`` gets an event that is set when the worker stops; it must return soon after.
    """
    datadir = settings.stack_home / "faust" / name
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        # Not the pipeline's consumer group name: Faust joins its own group with this id.
        worker_app_id(settings.topic_namespace, name),
        broker=f"kafka://{settings.kafka_servers}",
        store="memory://",
        datadir=str(datadir),
        autodiscover=False,
        web_enabled=False,
        topic_partitions=settings.topic_partitions,
        # Faust's own topics (its assignor's) are as safe as Caliber's on a cluster.
        topic_replication_factor=settings.internal_replication_factor,
        producer_acks=-1,
        # Faust's group holds nothing but its assignor: a worker killed and started again
        # waits for its dead predecessor's session to end before the app starts the loop,
        # 60 s at Faust's default; the pipeline's own consumer gives up a silent member's
        # partitions after the same time.
        broker_session_timeout=SESSION_TIMEOUT_MS / 1000,
        broker_heartbeat_interval=HEARTBEAT_INTERVAL_MS / 1000,
    )
    stopping = asyncio.Event()
    state: dict[str, asyncio.Task[None]] = {}

    @app.task
    async def run_loop() -> None:
        task = asyncio.ensure_future(loop(stopping))
        state["task"] = task
        try:
            await task
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("%s loop failed; stopping the worker", name)
            await app.crash(sys.exc_info()[1])  # type: ignore[arg-type]

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def drain(app: faust.App, **_: object) -> None:
        stopping.set()
        task = state.get("task")
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(task, timeout=15)
            except (TimeoutError, asyncio.CancelledError):
                logger.warning("%s loop did not stop in 15 s", name)

    return app


async def run_beside(
    main: Callable[[asyncio.Event], Awaitable[None]],
    side: Callable[[asyncio.Event], Awaitable[None]],
    stopping: asyncio.Event,
) -> None:
    """Run ``main`` (a worker's batch loop) with ``side`` (its periodic evaluator) beside it;
    when ``main`` ends, for whatever reason, ``side`` is told to stop and awaited."""
    beside = asyncio.ensure_future(side(stopping))
    try:
        await main(stopping)
    finally:
        stopping.set()
        with contextlib.suppress(asyncio.CancelledError):
            await beside


def lower_priority(nice: int) -> None:
    """Add ``nice`` to the CPU-scheduler niceness of every thread of this process (never
    raising one); the threads started later (librdkafka's, the executors') take it too."""
    if nice > 0:
        renice_threads(None, lambda now: min(now + nice, 19))


def run(app: faust.App, settings: Settings, *, background: bool = False) -> None:
    """Check that the stores belong to one stack, then start the worker and block until it
    stops (SIGTERM/SIGINT). A ``background`` worker (off the decision path: its output is
    read by people and dashboards, not by the next hop of a decision) yields the CPU to the
    decision path (``Settings.background_nice``)."""
    refuse_mixed_stores(settings, str(app.conf.id))
    if background:
        lower_priority(settings.background_nice)
    # Everything imported and built so far lives as long as the process: out of the cyclic
    # collector's sight, a full collection walks only what the batches allocate (it walked
    # every module object, a pause on the decision path each time).
    gc.collect()
    gc.freeze()
    level = "warn" if settings.log_level.upper() == "WARNING" else settings.log_level.lower()
    sys.argv = [sys.argv[0], "worker", "--loglevel", level, "--without-web"]
    app.main()
