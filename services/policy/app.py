"""Wiring of the policy worker: settings, the registry view, the pipeline, the Faust app."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses

import faust
from prometheus_client import CollectorRegistry

from services.policy.metrics import PolicyMetrics
from services.policy.processing import PolicyProcessor
from services.policy.registry_state import RegistryState, wait_for_registry
from services.policy.settings import PolicySettings
from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.contracts.validation import Limits
from shared.registry.segment_maps import SegmentMapView
from shared.registry.view import RegistryView
from shared.runtime.observability import configure_logging, serve_metrics
from shared.runtime.pipeline import Pipeline, PipelineConfig
from shared.runtime.worker import create_app, run


def build_app(settings: PolicySettings) -> faust.App:
    registry = CollectorRegistry()
    metrics = PolicyMetrics(registry)
    topics = Topics.for_namespace(settings.topic_namespace)
    group = f"{settings.topic_namespace}-policy"
    codec = AvroCodec()

    async def loop(stopping: asyncio.Event) -> None:
        view = RegistryView(settings, topics.model_updates, codec)
        metrics.registry_versions.set_function(lambda: len(view.versions))
        follower = asyncio.create_task(view.run(stopping), name="registry-view")
        segments = SegmentMapView(
            settings, topics.segment_maps, codec, settings.segment_max_per_version
        )
        segment_follower = asyncio.create_task(segments.run(stopping), name="segment-maps")
        tasks: set[asyncio.Task[None]] = {follower, segment_follower}
        try:
            await wait_for_registry(view, follower, settings.policy_catch_up_seconds)
            await wait_for_registry(
                segments, segment_follower, settings.policy_catch_up_seconds, "segment maps"
            )
            processor = PolicyProcessor(
                topics,
                codec,
                RegistryState(view.get, settings.default_threshold),
                metrics,
                # The limits ingest enforced, so nothing it accepted is refused here.
                dataclasses.replace(
                    Limits.from_settings(settings),
                    max_batch_events=max(settings.limit_batch_events, settings.batch_max_events),
                ),
                segments.maps_for,
            )
            pipeline = Pipeline(
                settings,
                PipelineConfig(
                    group_id=group,
                    topics=[topics.predictions],
                    transactional_id=f"{group}.{settings.instance_id}",
                    max_messages=settings.policy_max_messages,
                    poll_timeout=settings.policy_poll_seconds,
                    eager=True,
                ),
                processor,
                processor,
            )
            tasks.add(asyncio.create_task(pipeline.run(stopping), name="policy-pipeline"))
            # Either task ending is the end: a registry view that died would leave the
            # policy deciding with a registry frozen in the past.
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
            if not stopping.is_set():
                raise RuntimeError(f"{sorted(t.get_name() for t in done)} stopped unasked")
        finally:
            stopping.set()
            for task in tasks:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await task

    serve_metrics(settings.metrics_port, registry, settings.metrics_host)
    return create_app("policy", settings, loop)


def main() -> None:
    settings = PolicySettings()
    configure_logging(settings.log_level)
    run(build_app(settings), settings)
