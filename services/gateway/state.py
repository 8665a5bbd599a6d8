"""Everything a request handler of the gateway reaches: one typed object, built in one place.

:func:`open_state` builds it when the app starts (``app.py``'s lifespan, which also closes
it); handlers get it with :func:`state_of`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import asyncpg
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from starlette.requests import HTTPConnection

from services.gateway.anonymous import anonymous_principal
from services.gateway.auth import KeyStore
from services.gateway.fanout import Hub
from services.gateway.metrics import GatewayMetrics
from services.gateway.model_cache import ModelCache, RegistryIndex
from services.gateway.publish import Publisher
from services.gateway.ratelimit import SharedBuckets, TokenBuckets
from services.gateway.settings import GatewaySettings
from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.registry.segment_maps import SegmentMapView
from shared.runtime import redis_client
from shared.runtime.kafka import make_producer

PUBLISH_TIMEOUT_MS = 15_000
"""How long a request waits for Kafka before it fails with 503."""


@dataclass(slots=True)
class GatewayState:
    settings: GatewaySettings
    metrics: GatewayMetrics
    topics: Topics
    codec: AvroCodec
    pool: asyncpg.Pool
    redis: aioredis.Redis
    route_redis: aioredis.Redis
    """Redis for routing decisions: a short timeout, so decide answers a fallback rather
    than wait (and one immediate retry: a pooled connection a Redis restart closed fails
    once)."""
    publisher: Publisher
    view: RegistryIndex
    segment_maps: SegmentMapView
    """Per-segment calibration maps, followed like the registry (``POST /api/calibrate``),
    with their records (``GET /api/models/{id}/segment-maps``)."""
    models: ModelCache
    keys: KeyStore
    hub: Hub
    event_rate: SharedBuckets
    """Per-key event budget of the prediction routes (in-process; off by default)."""
    live_ready: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the live feed follows its topics (``/health`` reports it)."""


async def open_state(settings: GatewaySettings, metrics: GatewayMetrics) -> GatewayState:
    """Connect the pools and producers the handlers use."""
    topics = Topics.for_namespace(settings.topic_namespace)
    codec = AvroCodec()
    pool = await asyncpg.create_pool(
        settings.postgres_url, min_size=2, max_size=settings.gateway_db_pool_size
    )
    view = RegistryIndex(settings, topics.model_updates, codec)
    segment_maps = SegmentMapView(
        settings, topics.segment_maps, codec, settings.segment_max_per_version, keep_records=True
    )
    anonymous = anonymous_principal(settings)
    if anonymous is not None:  # its tenant must exist for what it registers or reviews
        await pool.execute(
            "INSERT INTO tenants (id, name) VALUES ($1, $1) ON CONFLICT (id) DO NOTHING",
            anonymous.tenant,
        )
    return GatewayState(
        settings=settings,
        metrics=metrics,
        topics=topics,
        codec=codec,
        pool=pool,
        redis=redis_client.async_client(settings.redis_dsn),
        route_redis=redis_client.async_client(
            settings.redis_dsn,
            socket_timeout=settings.route_redis_timeout_seconds,
            socket_connect_timeout=settings.route_redis_timeout_seconds,
            retry_on_timeout=False,
            retry=Retry(NoBackoff(), 1),
        ),
        publisher=Publisher(make_producer(settings, **{"message.timeout.ms": PUBLISH_TIMEOUT_MS})),
        view=view,
        segment_maps=segment_maps,
        models=ModelCache(pool, view, segment_maps),
        keys=KeyStore(pool, settings.gateway_key_cache_seconds, anonymous),
        hub=Hub(settings.gateway_ws_queue, metrics),
        event_rate=SharedBuckets(
            TokenBuckets(
                settings.gateway_rate_events_per_second,
                settings.gateway_rate_events_per_second * settings.gateway_rate_burst_seconds,
            ),
            settings.redis_prefix,
            "events",
        ),
    )


def state_of(conn: HTTPConnection) -> GatewayState:
    """The gateway's state, from a request or a WebSocket."""
    state: GatewayState = conn.app.state.gateway
    return state
