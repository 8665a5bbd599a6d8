"""The segment refit loop: fit every segment that is due on its window, publish the map.

Beside the aggregator's batch loop (which alone writes the segment windows, fenced with its
offsets), every ``CALIBER_SEGMENT_REFIT_SECONDS`` this loop reads each model version's
segment counts, and for each segment with at least M labels and N new ones since its last
fit (:func:`shared.recalibration.segments.refit_due`) fits the configured method on the
segment's window (its last W labeled events) and publishes a ``SegmentMap`` to the
compacted ``<ns>.segment-maps`` topic. Only once Kafka has acknowledged it is the fit's
count bookmarked; a crash in between fits and publishes again, which the compacted topic
turns into the same latest state.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from confluent_kafka import KafkaError, Message, Producer
from redis.exceptions import RedisError

from services.aggregator.metrics import AggregatorMetrics
from shared.contracts.batches import split_model_key
from shared.contracts.codec import AvroCodec
from shared.recalibration.segments import SegmentFitOptions, fit_segment, refit_due
from shared.registry.segment_maps import SEGMENT_MAP, segment_map_key
from shared.runtime import clock
from shared.runtime.ownership import Ownership
from shared.runtime.rounds import TRANSIENT, run_rounds
from shared.windows.segments import OVERFLOW, SegmentState

logger = logging.getLogger(__name__)


def segment_map_record(
    model: str, segment: str, fitted: Any, n_labeled: int, opts: SegmentFitOptions, now_ms: int
) -> dict[str, Any]:
    """The ``SegmentMap`` record of one fit (``fitted``: a ``SegmentFit``)."""
    tenant, name, version = split_model_key(model)
    key, _, value = segment.partition("=")
    return {
        "tenant": tenant,
        "model_name": name,
        "model_version": version,
        "segment_key": key,
        "segment": value,
        "calibrator_version": fitted.version,
        "calibrator": None if fitted.artifact is None else json.dumps(fitted.artifact),
        "clip_low": opts.clip_low,
        "clip_high": opts.clip_high,
        "n_labeled": n_labeled,
        "rows": fitted.rows,
        "reason": fitted.reason,
        "fitted_at_ms": now_ms,
    }


class SegmentRefitter:
    def __init__(
        self,
        state: SegmentState,
        producer: Producer,
        codec: AvroCodec,
        topic: str,
        opts: SegmentFitOptions,
        every: int,
        interval_s: float,
        metrics: AggregatorMetrics | None = None,
    ) -> None:
        self.state = state
        self.producer = producer
        self.codec = codec
        self.topic = topic
        self.opts = opts
        self.every = every
        self.interval_s = interval_s
        self.metrics = metrics
        self.ownership: Ownership | None = None
        """The model versions this replica refits (None: every one)."""

    async def run(self, stopping: asyncio.Event) -> None:
        await run_rounds(
            "segment refit", self.refit_all, self.interval_s, stopping, logger,
            (*TRANSIENT, RedisError),
        )  # fmt: skip

    async def refit_all(self, now_ms: int | None = None) -> int:
        """One round over every owned model version with segments; returns the fits
        published."""
        done = 0
        models = await self.state.models()
        if self.ownership is None:
            for model in models:
                done += await self.refit_model(model, clock.now_ms() if now_ms is None else now_ms)
            return done
        async with self.ownership.round():
            for model in models:
                if self.ownership.owns(model):
                    at = clock.now_ms() if now_ms is None else now_ms
                    done += await self.refit_model(model, at)
        return done

    async def refit_model(self, model: str, now_ms: int) -> int:
        counts, fits = await self.state.counts(model)
        due = [
            s
            for s, n in counts.items()
            if s != OVERFLOW and refit_due(n, fits.get(s), self.every, self.opts.min_labels)
        ]
        if not due:
            return 0
        windows = await self.state.windows(model, due)
        failed: list[KafkaError] = []

        def delivered(err: KafkaError | None, _: Message) -> None:
            if err is not None:
                failed.append(err)

        started = time.perf_counter()
        outcomes = {"fitted": 0, "failed": 0}
        for segment, window in zip(due, windows, strict=True):
            fitted = fit_segment(window, self.opts)
            outcomes["fitted" if fitted.version else "failed"] += 1
            record = segment_map_record(model, segment, fitted, counts[segment], self.opts, now_ms)
            key = segment_map_key(model, record["segment_key"], record["segment"])
            self.producer.produce(
                self.topic, self.codec.encode(SEGMENT_MAP, record), key, on_delivery=delivered
            )
        fit_seconds = time.perf_counter() - started
        remaining = await asyncio.get_running_loop().run_in_executor(
            None, self.producer.flush, 30.0
        )
        if remaining or failed:
            raise ConnectionError(f"segment maps of {model} not acknowledged by Kafka")
        await self.state.mark_fitted(model, {s: counts[s] for s in due})
        if self.metrics is not None:
            for outcome, n in outcomes.items():
                if n:
                    self.metrics.segment_refits.labels(outcome).inc(n)
            self.metrics.segment_refit_seconds.observe(fit_seconds / len(due))
        return len(due)
