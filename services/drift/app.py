"""Wiring of the drift worker.

The batch loop (:mod:`services.drift.processing`) counts ``<ns>.predictions`` into Redis;
the evaluator (:mod:`services.drift.evaluate`) scores, exports and alerts at its cadence.
One process runs both and shares the active profiles between them.
"""

from __future__ import annotations

import asyncio

import faust
from prometheus_client import CollectorRegistry

from services.drift.evaluate import Evaluator
from services.drift.metrics import DriftMetrics
from services.drift.processing import DriftProcessor, ProfileCache, WindowConfig
from services.drift.settings import DriftSettings
from services.drift.store import DriftStore
from services.drift.uploads import UploadSource
from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.runtime import redis_client
from shared.runtime.kafka import make_producer
from shared.runtime.observability import configure_logging, serve_metrics
from shared.runtime.ownership import owner_of
from shared.runtime.pipeline import Pipeline, PipelineConfig
from shared.runtime.worker import create_app, run, run_beside


def build_app(settings: DriftSettings) -> faust.App:
    registry = CollectorRegistry()
    metrics = DriftMetrics(registry)
    topics = Topics.for_namespace(settings.topic_namespace)
    codec = AvroCodec()

    async def loop(stopping: asyncio.Event) -> None:
        client = redis_client.async_client(settings.redis_dsn)
        store = DriftStore(client, settings.redis_prefix)
        cache = ProfileCache()
        uploads = UploadSource(settings.postgres_url)
        group = f"{settings.topic_namespace}-drift"
        ownership = owner_of(
            settings, client, f"{settings.redis_prefix}drift:", topics.predictions, group
        )
        evaluator = Evaluator(
            settings, store, cache, uploads, make_producer(settings), codec, metrics, ownership
        )
        config = WindowConfig(
            bucket_seconds=settings.drift_bucket_seconds,
            window_seconds=settings.drift_window_seconds,
            reference_events=settings.drift_reference_events,
            reference_ttl=settings.label_horizon_seconds,
        )
        pipeline = Pipeline(
            settings,
            PipelineConfig(
                group_id=group,
                topics=[topics.predictions],
                transactional=False,
                batch=True,
                max_messages=settings.drift_max_messages,
            ),
            DriftProcessor(topics, codec, store, cache, config, metrics),
            metrics,
            ownership,
        )
        try:
            await run_beside(pipeline.run, evaluator.run, stopping)
        finally:
            await uploads.close()
            await client.aclose()

    serve_metrics(settings.metrics_port, registry, settings.metrics_host)
    return create_app("drift", settings, loop)


def main() -> None:
    settings = DriftSettings()
    configure_logging(settings.log_level)
    run(build_app(settings), settings, background=True)
