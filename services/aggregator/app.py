"""Wiring of the aggregator."""

from __future__ import annotations

import asyncio

import faust
from prometheus_client import CollectorRegistry

from services.aggregator.alerts import AlertState
from services.aggregator.evaluate import Evaluator
from services.aggregator.metrics import AggregatorMetrics
from services.aggregator.processing import AggregatorProcessor
from services.aggregator.refit import SegmentRefitter
from services.aggregator.settings import AggregatorSettings
from services.aggregator.store import AggregatorStore
from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.recalibration.segments import SegmentFitOptions
from shared.runtime import redis_client
from shared.runtime.kafka import make_producer
from shared.runtime.observability import configure_logging, serve_metrics
from shared.runtime.ownership import owner_of
from shared.runtime.pipeline import Pipeline, PipelineConfig
from shared.runtime.worker import create_app, run, run_beside
from shared.windows.calibration import WindowReader
from shared.windows.segments import SegmentState


def build_app(settings: AggregatorSettings) -> faust.App:
    registry = CollectorRegistry()
    metrics = AggregatorMetrics(registry)
    topics = Topics.for_namespace(settings.topic_namespace)
    codec = AvroCodec()

    async def loop(stopping: asyncio.Event) -> None:
        client = redis_client.async_client(settings.redis_dsn)
        store = AggregatorStore(
            client,
            settings.redis_prefix,
            settings.label_horizon_seconds,
            settings.segment_window,
            settings.segment_max_per_version,
        )
        refitter = SegmentRefitter(
            SegmentState(client, settings.redis_prefix),
            make_producer(settings),
            codec,
            topics.segment_maps,
            SegmentFitOptions(
                settings.segment_method,
                settings.segment_min_labels,
                settings.segment_clip_low,
                settings.segment_clip_high,
            ),
            settings.segment_refit_every,
            settings.segment_refit_seconds,
            metrics,
        )

        group = f"{settings.topic_namespace}-aggregator"
        ownership = owner_of(
            settings, client, f"{settings.redis_prefix}agg:", topics.decisions, group
        )
        refitter.ownership = ownership

        async def beside(stopping: asyncio.Event) -> None:
            await asyncio.gather(evaluator.run(stopping), refitter.run(stopping))

        processor = AggregatorProcessor(topics, codec, store, metrics, settings.estimate_enabled)
        evaluator = Evaluator(
            settings,
            WindowReader(client, settings.redis_prefix),
            AlertState(client, settings.redis_prefix),
            make_producer(settings),
            codec,
            metrics,
            activity=lambda: processor.events_counted + processor.labels_joined,
            ownership=ownership,
        )
        pipeline = Pipeline(
            settings,
            PipelineConfig(
                group_id=group,
                # Both topics' partition p on one replica: a fair share of model versions
                # to own (docs/architecture.md, "Replicas and ownership").
                assignment="range",
                topics=[topics.decisions, topics.labels],
                transactional=False,
                batch=True,
                max_messages=settings.aggregator_max_messages,
            ),
            processor,
            metrics,
            ownership,
        )
        try:
            await run_beside(pipeline.run, beside, stopping)
        finally:
            await client.aclose()

    serve_metrics(settings.metrics_port, registry, settings.metrics_host)
    return create_app("aggregator", settings, loop)


def main() -> None:
    settings = AggregatorSettings()
    configure_logging(settings.log_level)
    run(build_app(settings), settings, background=True)
