"""Wiring of the ingest worker: settings, clients, the processing step, the Faust app."""

from __future__ import annotations

import asyncio
import dataclasses

import faust
from prometheus_client import CollectorRegistry

from services.ingest.dedupe import Deduper
from services.ingest.metrics import IngestMetrics
from services.ingest.processing import IngestProcessor
from services.ingest.settings import IngestSettings
from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.contracts.validation import Limits
from shared.runtime import redis_client
from shared.runtime.observability import configure_logging, serve_metrics
from shared.runtime.pipeline import Pipeline, PipelineConfig
from shared.runtime.worker import create_app, run

INGEST_MAX_LINGER_SECONDS = 0.01


def build_app(settings: IngestSettings) -> faust.App:
    registry = CollectorRegistry()
    metrics = IngestMetrics(registry)
    topics = Topics.for_namespace(settings.topic_namespace)
    group = f"{settings.topic_namespace}-ingest"

    async def loop(stopping: asyncio.Event) -> None:
        client = redis_client.async_client(settings.redis_dsn)
        processor = IngestProcessor(
            topics,
            AvroCodec(),
            Deduper(client, settings.redis_prefix, settings.label_horizon_seconds),
            dataclasses.replace(
                Limits.from_settings(settings), max_batch_events=settings.ingest_max_batch_events
            ),
            settings.batch_max_events,
            metrics,
        )
        pipeline = Pipeline(
            settings,
            PipelineConfig(
                group_id=group,
                topics=[topics.inference_raw, topics.labels_raw],
                # Each replica a share of both topics: cooperative-sticky balances only the
                # total, and may give one replica every partition of the predictions.
                assignment="range",
                transactional_id=f"{group}.{settings.instance_id}",
                max_messages=settings.ingest_max_messages,
                # On the decision path: a longer linger would be added to every decision
                # at low rates, where it saves nothing.
                max_linger=INGEST_MAX_LINGER_SECONDS,
            ),
            processor,
            metrics,
        )
        try:
            await pipeline.run(stopping)
        finally:
            await client.aclose()

    serve_metrics(settings.metrics_port, registry, settings.metrics_host)
    return create_app("ingest", settings, loop)


def main() -> None:
    settings = IngestSettings()
    configure_logging(settings.log_level)
    run(build_app(settings), settings)
