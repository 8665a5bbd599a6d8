"""Which stack a store belongs to: the identity check of ``stack up``, ``stack status`` and
every service at start.

Kafka is the source of truth; Redis and PostgreSQL are views built from it. When a stack is
first created it gets an identity (a random stack id and generation 1), written into all
three stores of one topic namespace / Redis prefix / database:

- Kafka: the compacted, single-partition ``<ns>.stack`` topic (``StackIdentity``, key
  ``identity``);
- Redis: the hash ``<prefix>stack:identity``, with ``layout``: the key layout its state was
  written in (``KEY_LAYOUT``);
- PostgreSQL: the one row of ``stack_identity``.

A rebuild of a store moves the generation forward in every store that was in step, so a
store restored from a backup taken before a rebuild shows an older generation. A Redis
restored from an older snapshot of the same generation shows itself another way: the
offsets its aggregator and drift fences record are behind the offsets those workers have
committed in Kafka (a fence always runs ahead of its commit).

A Redis whose ``layout`` is not this version's ``KEY_LAYOUT`` (keys renamed, e.g. hash tags
for Redis Cluster in layout 2) holds state this version does not read: it is reported as out
of step and rebuilt from the log like any other, never mixed with the new keys.

:func:`check` compares them and returns one line per store that is out of step, naming the
store, what it means and the command that repairs it; :func:`require` raises
:class:`StackMismatch` with those lines, and services refuse to start on it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import psycopg
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from shared.contracts.codec import AvroCodec, Decoded
from shared.contracts.topics import Topics
from shared.runtime import redis_client
from shared.runtime.kafka import consumer_config, producer_config
from shared.settings import Settings
from shared.windows.drift import DriftKeys

logger = logging.getLogger(__name__)

RECORD = "StackIdentity"
KEY = b"identity"
REBUILD_POSTGRES = "caliber rebuild postgres"
REBUILD_REDIS = "caliber rebuild redis"
LAYOUT_MISMATCH = "Redis holds keys of layout"
"""How the line of a Redis written in another key layout begins."""
RESET = "caliber stack reset"
_NOT_YET = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
}
T = TypeVar("T")
KEY_LAYOUT = 2
"""The Redis key layout this version writes and reads: 1 = keys without hash tags, 2 = every
key of one atomic call in one hash tag (``shared.windows.*``, ``shared.runtime.offset_fence``)."""
AGGREGATOR_OFFSETS = "agg:offsets"
"""The aggregator's fence hash under the Redis prefix (``services.aggregator.store``)."""


@dataclass(frozen=True, slots=True)
class Identity:
    stack_id: str
    generation: int

    def __str__(self) -> str:
        return f"stack {self.stack_id[:8]} generation {self.generation}"


@dataclass(frozen=True, slots=True)
class StoreIdentities:
    kafka: Identity | None
    redis: Identity | None
    postgres: Identity | None
    redis_behind: list[str]
    """Fences (``worker topic:partition``) whose applied offset is behind its committed one."""
    redis_layout: int | None = KEY_LAYOUT
    """The key layout Redis holds (None: before layouts were recorded, i.e. layout 1)."""


class StackMismatch(RuntimeError):
    """The stores belong to different stacks or generations; the message says how to fix it."""


def redis_key(settings: Settings) -> str:
    return f"{settings.redis_prefix}stack:identity"


# --- reading and writing each store -------------------------------------------------------


def read_kafka(settings: Settings, timeout: float = 10.0) -> Identity | None:
    """The last identity record of ``<ns>.stack``; None when the topic is empty or missing."""
    topic = Topics.for_namespace(settings.topic_namespace).stack
    consumer = Consumer(consumer_config(settings, f"{settings.topic_namespace}-identity-reader"))
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            return None
        tp = TopicPartition(topic, 0)
        low, high = retrying(lambda: consumer.get_watermark_offsets(tp, timeout=timeout))
        if high <= low:
            return None
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        codec = AvroCodec()
        found: Identity | None = None
        deadline = time.monotonic() + timeout
        position = low
        while position < high and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=100, timeout=0.5):
                if msg.error() is not None:
                    continue
                position = int(msg.offset() or 0) + 1
                if msg.key() != KEY or msg.value() is None:
                    continue
                decoded = codec.decode(msg.value(), [RECORD])
                if isinstance(decoded, Decoded):
                    rec = decoded.record
                    found = Identity(str(rec["stack_id"]), int(rec["generation"]))
        return found
    finally:
        consumer.close()


def retrying(call: Callable[[], T], timeout: float = 30.0) -> T:
    """``call()``, waiting out a Kafka that is still electing leaders or loading its group
    coordinator (a topic or a broker started a moment ago)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except KafkaException as exc:
            err = exc.args[0]
            waiting = isinstance(err, KafkaError) and (err.retriable() or err.code() in _NOT_YET)
            if not waiting or time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def write_kafka(settings: Settings, identity: Identity) -> None:
    topic = Topics.for_namespace(settings.topic_namespace).stack
    producer = Producer(producer_config(settings))
    value = AvroCodec().encode(
        RECORD,
        {
            "stack_id": identity.stack_id,
            "generation": identity.generation,
            "updated_at_ms": int(time.time() * 1000),
        },
    )
    producer.produce(topic, value, KEY, partition=0)
    if producer.flush(30) != 0:
        raise KafkaException(f"the stack identity was not written to {topic}")


def read_redis(settings: Settings) -> Identity | None:
    client = redis_client.sync_client(settings.redis_dsn)
    try:
        raw = client.hgetall(redis_key(settings))
    finally:
        client.close()
    return _parse({_text(k): _text(v) for k, v in raw.items()})


def read_redis_layout(settings: Settings) -> int | None:
    client = redis_client.sync_client(settings.redis_dsn)
    try:
        raw = client.hget(redis_key(settings), "layout")
    finally:
        client.close()
    return None if raw is None else int(raw)


def write_redis(settings: Settings, identity: Identity, layout: bool = True) -> None:
    """Write ``identity``, and with ``layout`` this version's key layout (only when the
    state in Redis was written by this version: a new or rebuilt Redis)."""
    mapping = {"stack_id": identity.stack_id, "generation": str(identity.generation)}
    if layout:
        mapping["layout"] = str(KEY_LAYOUT)
    client = redis_client.sync_client(settings.redis_dsn)
    try:
        client.hset(redis_key(settings), mapping=mapping)
    finally:
        client.close()


def read_postgres(settings: Settings) -> Identity | None:
    with psycopg.connect(settings.postgres_url, connect_timeout=10) as conn:
        exists = conn.execute("SELECT to_regclass('stack_identity') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return None
        row = conn.execute("SELECT stack_id, generation FROM stack_identity").fetchone()
    return None if row is None else Identity(str(row[0]), int(row[1]))


def write_postgres(settings: Settings, identity: Identity) -> None:
    with psycopg.connect(settings.postgres_url, connect_timeout=10) as conn:
        conn.execute(
            "INSERT INTO stack_identity (singleton, stack_id, generation) VALUES (true, %s, %s) "
            "ON CONFLICT (singleton) DO UPDATE SET stack_id = EXCLUDED.stack_id, "
            "generation = EXCLUDED.generation, updated_at = now()",
            (identity.stack_id, identity.generation),
        )


def redis_fences_behind(settings: Settings) -> list[str]:
    """Fences in Redis whose last applied offset is behind what their worker committed in
    Kafka: Redis is older than the log's consumers (restored from an older snapshot)."""
    ns = settings.topic_namespace
    topics = Topics.for_namespace(ns)
    fences = {
        "aggregator": (
            f"{settings.redis_prefix}{AGGREGATOR_OFFSETS}",
            [topics.decisions, topics.labels],
        ),
        "drift": (DriftKeys(settings.redis_prefix).offsets, [topics.predictions]),
    }
    client = redis_client.sync_client(settings.redis_dsn)
    behind: list[str] = []
    try:
        for worker, (key, names) in fences.items():
            # The commits first: a running worker applies a batch before it commits it, so
            # offsets read in this order never show Redis behind a commit it has in fact
            # applied since (read the other way round, a live replica's next batch would).
            committed = _committed(settings, f"{ns}-{worker}", names)
            applied = {_text(k): int(v) for k, v in client.hgetall(key).items()}
            for tp, offset in committed.items():
                done = applied.get(tp, -1)
                if offset - 1 > done and _records_between(settings, tp, done + 1, offset):
                    behind.append(f"{worker} {tp}")
    finally:
        client.close()
    return behind


def _records_between(settings: Settings, tp: str, start: int, end: int) -> bool:
    """Whether ``tp`` holds a committed record at an offset in [start, end). The committed
    offset of a worker reading a transactional topic can lie past the last record it
    applied by commit and abort markers, and by the records of aborted transactions (a
    killed producer's), none of which a ``read_committed`` reader is ever given; only a
    record it would have been given means Redis missed something. A log that cannot be
    read in time counts as no record: the check is for a Redis restored from an older
    snapshot, which misses a great many, the first of them readable at once."""
    topic, _, partition = tp.rpartition(":")
    consumer = Consumer(
        consumer_config(
            settings,
            f"{settings.topic_namespace}-identity-check",
            **{"enable.partition.eof": True},
        )
    )
    try:
        consumer.assign([TopicPartition(topic, int(partition), start)])
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            err = message.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    return False
                continue
            return int(message.offset() or 0) < end
        logger.warning("could not read %s from offset %d in time; taken as applied", tp, start)
        return False
    finally:
        consumer.close()


def _committed(settings: Settings, group: str, names: list[str]) -> dict[str, int]:
    """``topic:partition`` → the offset ``group`` committed, for every partition of ``names``."""
    consumer = Consumer(consumer_config(settings, group))
    try:
        wanted: list[TopicPartition] = []
        for name in names:
            meta = consumer.list_topics(name, timeout=10).topics.get(name)
            if meta is None or meta.error is not None:
                continue
            wanted.extend(TopicPartition(name, p) for p in meta.partitions)
        if not wanted:
            return {}
        committed = retrying(lambda: consumer.committed(wanted, timeout=10))
        return {f"{tp.topic}:{tp.partition}": tp.offset for tp in committed if tp.offset >= 0}
    finally:
        consumer.close()


def read_all(settings: Settings) -> StoreIdentities:
    return StoreIdentities(
        kafka=read_kafka(settings),
        redis=read_redis(settings),
        postgres=read_postgres(settings),
        redis_behind=redis_fences_behind(settings),
        redis_layout=read_redis_layout(settings),
    )


# --- comparing ----------------------------------------------------------------------------


def compare(found: StoreIdentities) -> list[str]:
    """One line per store that is out of step with the log; empty when all agree (or when
    no store has an identity yet: a stack not created by ``caliber stack up``)."""
    log = found.kafka
    stores = {
        "PostgreSQL": (found.postgres, REBUILD_POSTGRES),
        "Redis": (found.redis, REBUILD_REDIS),
    }
    if log is None:
        held = [f"{name} ({ident})" for name, (ident, _) in stores.items() if ident is not None]
        if not held:
            return []
        return [
            f"Kafka holds no stack identity while {' and '.join(held)} do: Kafka is new or its "
            f"topics were deleted, so those stores hold data the log no longer has and cannot "
            f"be rebuilt; start over with `{RESET}`"
        ]
    lines = []
    for name, (ident, repair) in stores.items():
        if ident is None:
            extra = (
                " (API keys and uploaded drift references are not on the log: restore them "
                "from a PostgreSQL backup, or create new keys)"
                if name == "PostgreSQL"
                else ""
            )
            lines.append(
                f"{name} holds no stack identity while Kafka holds {log}: {name} is new or was "
                f"lost (its data is not the log's); rebuild it with `{repair}`{extra}"
            )
        elif ident.stack_id != log.stack_id:
            lines.append(
                f"{name} belongs to another stack ({ident}) than Kafka ({log}): it was restored "
                f"from another machine or day; rebuild it with `{repair}`"
            )
        elif ident.generation < log.generation:
            lines.append(
                f"{name} is older than the log ({ident}, Kafka is at generation "
                f"{log.generation}): restored from a backup taken before a rebuild; rebuild it "
                f"with `{repair}`"
            )
        elif ident.generation > log.generation:
            lines.append(
                f"{name} is newer than the log ({ident}, Kafka at generation {log.generation}): "
                f"Kafka was restored from an older backup; rebuild {name} from it with "
                f"`{repair}` (what only {name} saw is lost)"
            )
    if (
        found.redis is not None
        and found.redis_behind
        and not any(line.startswith("Redis") for line in lines)
    ):
        lines.append(
            f"Redis is older than the log: its offset fences are behind what the workers "
            f"committed ({', '.join(found.redis_behind[:3])}"
            f"{', …' if len(found.redis_behind) > 3 else ''}), so it was restored from an "
            f"older snapshot and misses events; rebuild it with `{REBUILD_REDIS}`"
        )
    if (
        found.redis is not None
        and found.redis_layout != KEY_LAYOUT
        and not any(line.startswith("Redis") for line in lines)
    ):
        lines.append(
            f"{LAYOUT_MISMATCH} {found.redis_layout or 1} while this version reads "
            f"layout {KEY_LAYOUT} (keys renamed); rebuild it from the log with "
            f"`{REBUILD_REDIS}`"
        )
    return lines


def check(settings: Settings) -> list[str]:
    return compare(read_all(settings))


def require(settings: Settings) -> None:
    """Raise :class:`StackMismatch` when the stores are out of step (services call this at
    start and refuse to run on mixed stores)."""
    lines = check(settings)
    if lines:
        raise StackMismatch("; ".join(lines))


def ensure(settings: Settings) -> Identity | None:
    """Create the stack's identity in all three stores when none of them has one (a new
    stack), and return the log's. Never repairs a mismatch: that is a rebuild's job."""
    found = StoreIdentities(read_kafka(settings), read_redis(settings), read_postgres(settings), [])
    if found.kafka is None and found.redis is None and found.postgres is None:
        identity = Identity(str(uuid.uuid4()), 1)
        write_postgres(settings, identity)
        write_redis(settings, identity)
        write_kafka(settings, identity)  # last: the log's identity marks a complete creation
        logger.info("created the stack identity %s", identity)
        return identity
    return found.kafka


def advance(settings: Settings, rebuilt: str) -> Identity:
    """After a rebuild of ``rebuilt`` (``postgres`` or ``redis``): the next generation, written
    into the rebuilt store, into the other store when it was in step, and into Kafka."""
    log = read_kafka(settings)
    if log is None:
        raise StackMismatch(
            f"Kafka holds no stack identity: a store cannot be rebuilt from a log that does "
            f"not know its stack; start over with `{RESET}`, or `caliber stack up` for a new stack"
        )
    new = Identity(log.stack_id, log.generation + 1)
    other_reader = read_redis if rebuilt == "postgres" else read_postgres
    if other_reader(settings) == log:
        if rebuilt == "postgres":
            write_redis(settings, new, layout=False)  # keeps the layout Redis holds
        else:
            write_postgres(settings, new)
    (write_postgres if rebuilt == "postgres" else write_redis)(settings, new)
    write_kafka(settings, new)
    return new


def _parse(fields: dict[str, str]) -> Identity | None:
    if "stack_id" not in fields or "generation" not in fields:
        return None
    return Identity(fields["stack_id"], int(fields["generation"]))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def refuse_mixed_stores(settings: Settings, service: str) -> None:
    """The start-up check of every service: on mixed stores, log each line and exit (status
    3, which supervisord reports as the service failing to start)."""
    try:
        lines = check(settings)
    except Exception:
        logger.exception("%s: could not read the stack identity of the stores", service)
        raise
    for line in lines:
        logger.error("%s refuses to start: %s", service, line)
    if lines:
        raise SystemExit(3)
