"""Wiring of the calibrator: the alert consumer queues runs, the runner computes them."""

from __future__ import annotations

import asyncio

import asyncpg
import faust
from prometheus_client import CollectorRegistry

from services.calibrator.leader import Leadership
from services.calibrator.metrics import CalibratorMetrics
from services.calibrator.rollout import RolloutConfig, RolloutManager
from services.calibrator.rollout_store import RolloutStore
from services.calibrator.runner import Runner
from services.calibrator.settings import CalibratorSettings
from services.calibrator.store import CalibratorStore
from services.calibrator.triggers import AlertTriggers
from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.recalibration.sequential import SequentialConfig
from shared.runtime import redis_client
from shared.runtime.kafka import make_producer
from shared.runtime.observability import configure_logging, serve_metrics
from shared.runtime.pipeline import Pipeline, PipelineConfig
from shared.runtime.worker import create_app, run, run_beside


def build_app(settings: CalibratorSettings) -> faust.App:
    registry = CollectorRegistry()
    metrics = CalibratorMetrics(registry)
    topics = Topics.for_namespace(settings.topic_namespace)
    codec = AvroCodec()

    async def loop(stopping: asyncio.Event) -> None:
        pool = await asyncpg.create_pool(settings.postgres_url, min_size=1, max_size=4)
        assert pool is not None
        store = CalibratorStore(pool)
        producer = make_producer(settings)
        redis = redis_client.async_client(settings.redis_dsn)
        rollouts = RolloutManager(
            RolloutStore(pool), redis, settings.redis_prefix, rollout_config(settings),
            producer, codec, topics.alerts,
        )  # fmt: skip
        runner = Runner(
            settings, store, producer, codec, topics.alerts, metrics, rollouts,
            Leadership(settings.postgres_url),
        )  # fmt: skip
        triggers = AlertTriggers(codec, store, metrics)
        pipeline = Pipeline(
            settings,
            PipelineConfig(
                group_id=f"{settings.topic_namespace}-calibrator",
                topics=[topics.alerts],
                transactional=False,
                batch=True,
                max_messages=settings.calibrator_max_messages,
            ),
            triggers,
            triggers,
        )
        try:
            await run_beside(pipeline.run, runner.run, stopping)
        finally:
            await pool.close()
            await redis.aclose()

    serve_metrics(settings.metrics_port, registry, settings.metrics_host)
    return create_app("calibrator", settings, loop)


def rollout_config(settings: CalibratorSettings) -> RolloutConfig:
    return RolloutConfig(
        SequentialConfig(
            alpha=settings.rollout_alpha,
            min_events=settings.rollout_min_labeled,
            max_events=max(settings.rollout_max_labeled, settings.rollout_min_labeled),
            tuned_for=settings.rollout_tuned_for,
            review_band=settings.rollout_review_band,
        ),
        shadow_min_labeled=settings.rollout_shadow_min_labeled,
        canary_share=settings.rollout_canary_share,
        auto_start=settings.rollout_auto_start,
        canary_min_labeled=settings.rollout_canary_min_labeled,
    )


def main() -> None:
    settings = CalibratorSettings()
    configure_logging(settings.log_level)
    run(build_app(settings), settings, background=True)
