"""Wiring of the recorder: settings, the PostgreSQL pool, the pipeline, the Faust app."""

from __future__ import annotations

import asyncio
import dataclasses

import asyncpg
import faust
from prometheus_client import CollectorRegistry

from services.recorder.metrics import RecorderMetrics
from services.recorder.processing import RecorderProcessor
from services.recorder.settings import RecorderSettings
from shared.contracts.codec import AvroCodec
from shared.contracts.limits import Limits
from shared.contracts.topics import Topics
from shared.runtime.observability import configure_logging, serve_metrics
from shared.runtime.pipeline import Pipeline, PipelineConfig
from shared.runtime.worker import create_app, run


def build_app(settings: RecorderSettings) -> faust.App:
    registry = CollectorRegistry()
    metrics = RecorderMetrics(registry)
    topics = Topics.for_namespace(settings.topic_namespace)

    async def loop(stopping: asyncio.Event) -> None:
        # One batch at a time, so one connection; the spare one replaces a broken one.
        pool = await asyncpg.create_pool(settings.postgres_url, min_size=1, max_size=2)
        pipeline = Pipeline(
            settings,
            PipelineConfig(
                group_id=f"{settings.topic_namespace}-recorder",
                # A label and its decision on one replica: the statement that stores one
                # finds the other, never two replicas each storing theirs before the other's
                # is visible (docs/architecture.md, "Replicas and ownership").
                assignment="range",
                topics=[topics.decisions, topics.labels, topics.alerts],
                transactional=False,
                batch=True,
                max_messages=settings.recorder_max_messages,
                poll_timeout=0.02,
                max_poll_interval_ms=settings.recorder_max_poll_interval_s * 1000,
            ),
            RecorderProcessor(
                topics,
                AvroCodec(),
                pool,
                metrics,
                # The limits ingest enforced, so nothing it accepted is refused here.
                dataclasses.replace(Limits.from_settings(settings), max_batch_events=2**31),
            ),
            metrics,
        )
        try:
            await pipeline.run(stopping)
        finally:
            await pool.close()

    serve_metrics(settings.metrics_port, registry, settings.metrics_host)
    return create_app("recorder", settings, loop)


def main() -> None:
    settings = RecorderSettings()
    configure_logging(settings.log_level)
    run(build_app(settings), settings, background=True)
