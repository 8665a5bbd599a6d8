"""Which replica does the once-per-model-version work: the owner of its partition, fenced.

Every worker runs as N replicas in one consumer group. Work that must happen once per model
version (metric snapshots, alert evaluation, segment refits) is done by the replica whose
pipeline consumer holds the model version's partition of one designated topic at that
moment (docs/architecture.md, "Replicas and ownership"). The message key of every topic
between workers is the model version key and the producers' partitioner is librdkafka's
``consistent_random`` (CRC-32 of the key modulo the partition count, fixed in
:func:`shared.runtime.kafka.producer_config`), so :func:`partition_of` names the partition
without asking Kafka.

Handover:

- **assign**: the replica takes a token from one counter per consumer group
  (``<space>own:{<group>}``, INCR; ``<space>`` is the worker's key space, such as
  ``<prefix>agg:``), so a later assignment always holds a larger token than any earlier
  one, and wakes its evaluator to evaluate the new model versions at once.
- **revoke**: the partitions stop being owned at once (a round in flight skips their model
  versions from then on) and the callback waits for the round in flight to finish, its
  Kafka deliveries included, before the partition is released.
- **fence**: before it reads a model version's state under a token, a replica *claims* the
  model version (``<space>own:{<model>}`` := token unless a larger token holds it), and
  every state write of a round is one Lua call that applies only while the stored token is
  still its own (:meth:`OwnerFence.save`). A replica that lost the partition while paused (a
  zombie: its session timed out and the group gave the partition away) finds a larger token
  there and its write is refused: it publishes none of that round's alerts and stops
  evaluating the partition until Kafka assigns it again.

Alerts go through a small outbox in the same Lua call: the alert records of a round are
written with the new alert state, published, and removed once Kafka acknowledged them; the
next owner publishes whatever an owner that died in between left there (same alert ids, so
the recorder stores each once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient
from redis.exceptions import RedisError

from shared.runtime.kafka import SESSION_TIMEOUT_MS, make_admin
from shared.settings import Settings

logger = logging.getLogger(__name__)

_CLAIM = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '-1')
if cur > tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""

_SAVE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local n = tonumber(ARGV[2])
for i = 1, n do redis.call('SET', KEYS[2 + i], ARGV[2 + i]) end
local i = 3 + n
while i < #ARGV do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  i = i + 2
end
return redis.call('HGETALL', KEYS[2])
"""


def partition_of(key: str | bytes, partitions: int) -> int:
    """The partition librdkafka's ``consistent_random`` partitioner gives a non-empty key:
    CRC-32 of the key modulo the partition count (its ``murmur2_random`` would differ)."""
    raw = key.encode() if isinstance(key, str) else key
    return (zlib.crc32(raw) & 0xFFFFFFFF) % partitions


def owner_key(space: str, model: str) -> str:
    """The token that may write ``model``'s owned state in the key space ``space`` (e.g.
    ``<prefix>agg:``), in the model version's hash tag."""
    return f"{space}own:{{{model}}}"


def outbox_key(space: str, model: str) -> str:
    """Alerts of ``model`` saved but not yet acknowledged by Kafka (alert id → record)."""
    return f"{space}own:{{{model}}}:outbox"


class OwnerFence:
    """Claims and fenced writes of owned model versions (see the module docstring)."""

    def __init__(self, client: aioredis.Redis, space: str) -> None:
        self.r = client
        self.space = space
        """The owning worker's key space (``<prefix>agg:``, ``<prefix>drift:``): each
        worker's tokens are its own."""
        self._claim = client.register_script(_CLAIM)
        self._save = client.register_script(_SAVE)

    async def claim(self, model: str, token: int) -> bool:
        """Make ``token`` the one that may write ``model``'s state; False when a larger
        token (a later owner) holds it."""
        return bool(await self._claim(keys=[owner_key(self.space, model)], args=[token]))

    async def save(
        self,
        model: str,
        token: int,
        states: Mapping[str, str],
        alerts: Mapping[str, bytes],
    ) -> dict[str, bytes] | None:
        """Write ``states`` (key → value, keys in ``model``'s hash tag) and add ``alerts``
        (alert id → encoded record) to its outbox, only while ``token`` holds the model
        version; the whole outbox (to publish), or None when the write was refused."""
        keys = [owner_key(self.space, model), outbox_key(self.space, model), *states]
        args: list[str | bytes | int] = [token, len(states), *states.values()]
        for alert_id, value in alerts.items():
            args += [alert_id, value]
        out = await self._save(keys=keys, args=args)
        if out == -1:
            return None
        pairs = list(out)
        return {_text(pairs[i]): bytes(pairs[i + 1]) for i in range(0, len(pairs), 2)}

    async def delivered(self, model: str, alert_ids: Iterable[str]) -> None:
        """Remove alerts Kafka acknowledged from ``model``'s outbox."""
        ids = list(alert_ids)
        if ids:
            await self.r.hdel(outbox_key(self.space, model), *ids)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(slots=True)
class _Owned:
    token: int | None
    """None until a token was taken (Redis was away at assignment)."""
    claimed: set[str] = field(default_factory=set)


class Ownership:
    """The partitions of ``topic`` this replica's pipeline consumer holds, and the tokens
    that fence its writes. Pass it to :class:`shared.runtime.pipeline.Pipeline` as a
    rebalance listener; the evaluator asks :meth:`token` per model version inside
    :meth:`round`."""

    def __init__(
        self,
        topic: str,
        group: str,
        fence: OwnerFence,
        partitions: Callable[[], int],
        refused_wait_s: float = 10.0,
    ) -> None:
        self.topic = topic
        self.fence = fence
        self._epoch_key = f"{fence.space}own:{{{group}}}"
        self._count = partitions
        self._partitions: int | None = None
        self._owned: dict[int, _Owned] = {}
        self._refused: dict[int, float] = {}
        self._refused_wait = refused_wait_s
        self._lock = asyncio.Lock()
        self.wake = asyncio.Event()
        """Set when partitions were assigned: the evaluator runs a round at once."""
        self.everything = False

    @classmethod
    def sole(cls, fence: OwnerFence) -> Ownership:
        """One replica that owns every model version (token 0): a worker run alone, tests."""
        own = cls("", "", fence, lambda: 1)
        own.everything = True
        own._owned[0] = _Owned(0)
        return own

    @property
    def partitions(self) -> set[int]:
        return set(self._owned)

    def partition(self, model: str) -> int:
        if self.everything:
            return 0
        if self._partitions is None:
            raise RuntimeError("partition count unknown: call inside round()")
        return partition_of(model, self._partitions)

    def owns(self, model: str) -> bool:
        if not self._owned:
            return False
        p = self.partition(model)
        return p in self._owned and time.monotonic() >= self._refused.get(p, 0.0)

    async def token(self, model: str) -> int | None:
        """The token under which this replica writes ``model``'s state now, claimed; None
        when it does not own the model version (or a later owner's token holds it)."""
        if not self.owns(model):
            return None
        p = self.partition(model)
        owned = self._owned[p]
        if owned.token is None:
            owned.token = int(await self.fence.r.incr(self._epoch_key))
        if model not in owned.claimed:
            if not await self.fence.claim(model, owned.token):
                self.refused(model)
                return None
            owned.claimed.add(model)
        return owned.token

    def refused(self, model: str) -> None:
        """A write under this replica's token was refused: a later owner holds ``model``'s
        partition. Stop evaluating the partition; if Kafka still says it is ours after a
        session timeout, take a new token then (the other side was the stale one)."""
        p = self.partition(model)
        logger.warning("%s: a later owner holds partition %d; this replica stands down", model, p)
        self._refused[p] = time.monotonic() + self._refused_wait
        if p in self._owned:
            self._owned[p] = _Owned(None)

    @contextlib.asynccontextmanager
    async def round(self) -> AsyncIterator[None]:
        """Hold while evaluating: a revocation waits for the round to finish."""
        async with self._lock:
            if self._partitions is None and not self.everything and self._owned:
                loop = asyncio.get_running_loop()
                self._partitions = await loop.run_in_executor(None, self._count)
            yield

    def take_wake(self) -> bool:
        woke = self.wake.is_set()
        self.wake.clear()
        return woke

    # Rebalance listener (called by the pipeline on the event loop, inside Kafka's callback).

    async def assigned(self, partitions: list[TopicPartition]) -> None:
        mine = [tp.partition for tp in partitions if tp.topic == self.topic]
        if not mine:
            return
        self._partitions = None  # the topic may have grown: ask again
        try:
            token: int | None = int(await self.fence.r.incr(self._epoch_key))
        except (ConnectionError, OSError, RedisError) as exc:
            logger.warning("no ownership token at assignment (%s); taken at the next round", exc)
            token = None
        for p in mine:
            self._owned[p] = _Owned(token)
            self._refused.pop(p, None)
        logger.info("owner of %s%s under token %s", self.topic, sorted(mine), token)
        self.wake.set()

    async def revoked(self, partitions: list[TopicPartition]) -> None:
        mine = {tp.partition for tp in partitions if tp.topic == self.topic}
        if not mine:
            return
        leaving = {p: self._owned.pop(p) for p in mine if p in self._owned}
        async with self._lock:  # the round in flight ends (and is delivered) first
            pass
        logger.info("released %s%s", self.topic, sorted(leaving))


def owner_of(
    settings: Settings, client: aioredis.Redis, space: str, topic: str, group: str
) -> Ownership:
    """The ownership of a worker whose pipeline consumer (group ``group``) reads ``topic``;
    its keys in the worker's key space ``space``."""
    admin = make_admin(settings)
    return Ownership(
        topic,
        group,
        OwnerFence(client, space),
        lambda: topic_partitions(admin, topic),
        refused_wait_s=SESSION_TIMEOUT_MS / 1000,
    )


def topic_partitions(admin: AdminClient, topic: str, timeout: float = 10.0) -> int:
    """The partition count of ``topic`` from the cluster's metadata."""
    meta = admin.list_topics(topic, timeout=timeout)
    found = meta.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        raise ConnectionError(f"no metadata for {topic}")
    return len(found.partitions)
