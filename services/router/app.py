"""Wiring of the router worker."""

from __future__ import annotations

import asyncio
import logging
import uuid

import faust
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from services.router.metrics import RouterMetrics
from services.router.processing import RouterProcessor
from services.router.settings import RouterSettings
from services.router.store import RouterStore
from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.routing.state import RouteKeys
from shared.runtime import redis_client
from shared.runtime.observability import configure_logging, serve_metrics
from shared.runtime.pipeline import Pipeline, PipelineConfig
from shared.runtime.worker import create_app, run

logger = logging.getLogger(__name__)


async def state_generation(client: aioredis.Redis, keys: RouteKeys) -> str:
    """The generation of the router's Redis state, which names its consumer group.

    Redis that lost the router's state (a wipe, a restore without it) has no generation:
    a new one starts a new consumer group, which reads the topics from their beginning
    (``auto.offset.reset=earliest``), so the counts are rebuilt from the log.
    """
    candidate = uuid.uuid4().hex[:12]
    await client.set(keys.generation, candidate, nx=True)
    current = await client.get(keys.generation)
    generation = current.decode() if isinstance(current, bytes) else current or candidate
    if generation == candidate:
        logger.info(
            "no router state in Redis: generation %s rebuilds it from the topics", generation
        )
    return generation


def build_app(settings: RouterSettings) -> faust.App:
    registry = CollectorRegistry()
    metrics = RouterMetrics(registry)
    topics = Topics.for_namespace(settings.topic_namespace)
    codec = AvroCodec()

    async def loop(stopping: asyncio.Event) -> None:
        client = redis_client.async_client(settings.redis_dsn)
        generation = await state_generation(client, RouteKeys(settings.redis_prefix))
        processor = RouterProcessor(
            topics,
            codec,
            RouterStore(client, settings.redis_prefix),
            settings.route_half_life_seconds,
            settings.label_horizon_seconds,
            settings.route_pending_seconds,
            settings.route_label_wait_seconds,
            metrics,
        )
        pipeline = Pipeline(
            settings,
            PipelineConfig(
                group_id=f"{settings.topic_namespace}-router-{generation}",
                # A label and its routed prediction on one replica, so the link one leaves
                # is read by the other (docs/architecture.md, "Replicas and ownership").
                assignment="range",
                topics=[topics.routing, topics.predictions, topics.labels, topics.deadletter],
                transactional=False,
                batch=True,
                max_messages=settings.router_max_messages,
            ),
            processor,
            metrics,
        )
        try:
            await pipeline.run(stopping)
        finally:
            await client.aclose()

    serve_metrics(settings.metrics_port, registry, settings.metrics_host)
    return create_app("router", settings, loop)


def main() -> None:
    settings = RouterSettings()
    configure_logging(settings.log_level)
    run(build_app(settings), settings, background=True)
