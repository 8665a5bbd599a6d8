"""Wiring of the policy worker."""

from __future__ import annotations

import asyncio
import contextlib

import faust
from prometheus_client import CollectorRegistry

from services.policy.metrics import PolicyMetrics
from services.policy.processing import PolicyProcessor
from services.policy.settings import PolicySettings
from shared.codec import AvroCodec
from shared.observability import configure_logging, serve_metrics
from shared.pipeline import Pipeline, PipelineConfig
from shared.registry_view import RegistryView
from shared.topics import Topics
from shared.worker import create_app, run


def build_app(settings: PolicySettings) -> faust.App:
    registry = CollectorRegistry()
    metrics = PolicyMetrics(registry)
    topics = Topics.for_namespace(settings.topic_namespace)
    group = f"{settings.topic_namespace}-policy"
    codec = AvroCodec()

    async def loop(stopping: asyncio.Event) -> None:
        view = RegistryView(settings, topics.model_updates, codec)
        follower = asyncio.create_task(view.run(stopping))
        await view.wait_caught_up(settings.policy_catch_up_seconds)
        metrics.registry_versions.set_function(lambda: len(view.versions))
        pipeline = Pipeline(
            settings,
            PipelineConfig(
                group_id=group,
                topics=[topics.predictions],
                transactional_id=f"{group}.{settings.instance_id}",
                max_messages=200,
                poll_timeout=0.01,
            ),
            PolicyProcessor(topics, codec, view, settings.default_threshold, metrics),
            metrics,
        )
        try:
            await pipeline.run(stopping)
        finally:
            stopping.set()
            with contextlib.suppress(asyncio.CancelledError):
                await follower

    serve_metrics(settings.metrics_port, registry)
    return create_app("policy", settings, loop)


def main() -> None:
    settings = PolicySettings()
    configure_logging(settings.log_level)
    run(build_app(settings), settings)
