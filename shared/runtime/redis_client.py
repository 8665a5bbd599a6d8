"""The one way Caliber opens Redis: a single server or a Redis Cluster behind one URL.

``CALIBER_REDIS_URL`` accepts:

- ``redis://host:port/db`` (or ``rediss://``): one server; when that server is a node of a
  Redis Cluster (one ``INFO cluster`` probe when the client is made), the cluster client;
- ``redis+cluster://host:port`` (or ``rediss+cluster://``): the cluster client, any node as
  the seed.

The cluster client (``redis.cluster.RedisCluster``, asyncio ``redis.asyncio.cluster.
RedisCluster``) routes each command and Lua call by its keys; Caliber keeps every Lua call
and ``MULTI`` pipeline inside one hash slot (the key layouts in ``shared.windows.*`` and
``shared.runtime.offset_fence``), so the same code runs on both. Reads of many keys in
different slots go through :func:`mget`, which the cluster client splits per slot.

Hash tags: :func:`tagged` puts a name in braces, so every key built with it lands in the
slot of that name; :func:`shard_tag` names one of a fixed number of shards of an id (the
join records of events, the ingest dedupe claims), so they spread over the cluster while a
batch's writes to one shard stay one call.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import hiredis
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster
from redis.exceptions import NoScriptError

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
JOIN_SHARDS = 16
"""Shards of the per-event records (join records, dedupe claims): each shard is one hash
slot, so a batch's writes to them are at most this many calls."""

AsyncClient = aioredis.Redis | AsyncRedisCluster
SyncClient = redis.Redis | RedisCluster


def _split(url: str) -> tuple[str, bool | None]:
    """(the URL redis-py understands, True for an explicit cluster URL, None to probe)."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme in CLUSTER_SCHEMES:
        return f"{CLUSTER_SCHEMES[scheme]}://{rest}", True
    return url, None


def cluster_enabled(url: str, **kwargs: Any) -> bool:
    """Whether the server at ``url`` is a Redis Cluster node (``INFO cluster``)."""
    plain, explicit = _split(url)
    if explicit:
        return True
    probe = redis.Redis.from_url(plain, socket_timeout=kwargs.get("socket_timeout", 10))
    try:
        return bool(probe.info("cluster").get("cluster_enabled"))
    finally:
        probe.close()


def async_client(url: str, **kwargs: Any) -> Any:
    """An asyncio client for ``url``: ``redis.asyncio.Redis`` or, on a cluster,
    ``redis.asyncio.cluster.RedisCluster`` (typed ``Any``: both offer the commands Caliber
    uses with the same signatures)."""
    plain, _ = _split(url)
    if cluster_enabled(url, **kwargs):
        return AsyncRedisCluster.from_url(plain, **_cluster_options(kwargs))
    return aioredis.Redis.from_url(plain, **kwargs)


def sync_client(url: str, **kwargs: Any) -> Any:
    """The blocking counterpart of :func:`async_client`."""
    plain, _ = _split(url)
    if cluster_enabled(url, **kwargs):
        return RedisCluster.from_url(plain, **_cluster_options(kwargs))
    return redis.Redis.from_url(plain, **kwargs)


def _cluster_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The options without those a cluster client refuses: ``retry_on_timeout`` (a
    cluster client retries by its ``retry`` policy, which a caller may pass too)."""
    return {k: v for k, v in kwargs.items() if k != "retry_on_timeout"}


def is_cluster(client: object) -> bool:
    return isinstance(client, AsyncRedisCluster | RedisCluster)


def _packs(client: object) -> bool:
    """Whether :func:`packed` sends ``client``'s commands itself: a pooled single-server
    asyncio client."""
    return isinstance(client, aioredis.Redis) and not client.single_connection_client


async def packed(client: Any, *args: str | bytes | int | float) -> Any:
    """The reply of the command ``args``, serialized by ``hiredis.pack_command`` in one C
    call. redis-py encodes each argument in Python first (about 0.6 µs each), which the
    commands of thousands of arguments (a batch's keys and writes) paid per event.

    On a single server the packed command goes out on a pooled connection, whose own error
    handling applies (a connection or timeout error disconnects it and is raised, not
    retried: callers are idempotent and retry their whole step). The cluster client routes
    by keys, so it gets the arguments as they are."""
    if not _packs(client):
        return await client.execute_command(*args)
    command = hiredis.pack_command(args)  # type: ignore[arg-type]  # its stub types a 1-tuple
    pool = client.connection_pool
    conn = await pool.get_connection()
    try:
        await conn.send_packed_command(command)
        return await conn.read_response()
    finally:
        await pool.release(conn)


class Script:
    """A Lua script called by ``EVALSHA`` through :func:`packed`, loaded on first
    ``NOSCRIPT``. The cluster client calls it through ``register_script`` (which routes by
    the keys)."""

    def __init__(self, client: Any, text: str) -> None:
        self._client = client
        self._script = client.register_script(text)
        self.sha: str = self._script.sha

    async def __call__(
        self, keys: Sequence[str] = (), args: Sequence[str | bytes | int | float] = ()
    ) -> Any:
        if not _packs(self._client):
            return await self._script(keys=list(keys), args=list(args))
        call = ("EVALSHA", self.sha, len(keys), *keys, *args)
        try:
            return await packed(self._client, *call)
        except NoScriptError:
            await self._client.script_load(self._script.script)
            return await packed(self._client, *call)


async def mget(client: Any, keys: Sequence[str]) -> list[Any]:
    """``MGET`` of keys in any slots (the cluster client splits it per slot)."""
    if not keys:
        return []
    if is_cluster(client):
        return list(await client.mget_nonatomic(list(keys)))
    return list(await packed(client, "MGET", *keys))


async def mset(client: Any, mapping: dict[str, Any]) -> None:
    """``MSET`` of keys in any slots (not atomic across slots on a cluster)."""
    if not mapping:
        return
    if is_cluster(client):
        await client.mset_nonatomic(mapping)
    else:
        await client.mset(mapping)


async def close(client: Any) -> None:
    """Close an asyncio client of either kind."""
    await client.aclose()


def tagged(name: str) -> str:
    """``name`` as a hash tag: keys that hold it land in one slot."""
    return "{" + name + "}"


def hash_tag(key: str) -> str | None:
    """The hash tag of ``key`` as Redis Cluster reads it: the text between the first ``{``
    and the next ``}``, when not empty; None when the key has none."""
    start = key.find("{")
    if start < 0:
        return None
    end = key.find("}", start + 1)
    if end <= start + 1:
        return None
    return key[start + 1 : end]


def shard(name: str, shards: int = JOIN_SHARDS) -> int:
    """A stable shard of ``name`` (CRC-32, the same in every process and version)."""
    return zlib.crc32(name.encode()) % shards


def shard_tag(kind: str, name: str, shards: int = JOIN_SHARDS) -> str:
    """The hash tag of the shard of ``name`` among ``kind``'s records, e.g. ``{~j3}``. The
    ``~`` marks a shard tag: the offset fence applies such parts after the model-version
    ones (``shared.runtime.offset_fence``)."""
    return tagged(f"~{kind}{shard(name, shards)}")
