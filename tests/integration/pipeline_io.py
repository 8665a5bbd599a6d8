"""Helpers for the policy and recorder tests: produce records, wait for a consumer group to
commit everything, read the metrics of a running worker, dump PostgreSQL tables."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from confluent_kafka import Consumer, Producer, TopicPartition

from shared.contracts.codec import AvroCodec, Decoded
from shared.runtime.kafka import consumer_config, make_producer
from shared.settings import Settings
from tooling.benchmarking import scrape

CODEC = AvroCodec()


def produce(
    settings: Settings,
    records: Iterable[tuple[str, str, dict[str, Any] | None, str | None]],
    producer: Producer | None = None,
) -> None:
    """Send (topic, record type, record, key) tuples; a None record is a tombstone."""
    own = producer is None
    producer = producer or make_producer(settings)
    for topic, name, record, key in records:
        value = None if record is None else CODEC.encode(name, record)
        producer.produce(topic, value, None if key is None else key.encode())
    if own:
        assert producer.flush(15) == 0, "records not delivered within 15 s"


def wait_committed(
    settings: Settings,
    group: str,
    topics: Sequence[str],
    timeout: float = 45,
    workers: Sequence[subprocess.Popen[bytes]] = (),
) -> None:
    """Wait until ``group`` has committed offsets up to every partition's end of ``topics``,
    i.e. the worker has consumed (and made durable) everything produced so far."""
    probe = Consumer(consumer_config(settings, group))
    try:
        ends: dict[tuple[str, int], int] = {}
        for topic in topics:
            meta = probe.list_topics(topic, timeout=10).topics[topic]
            for p in meta.partitions:
                low, high = probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                if high > low:
                    ends[(topic, p)] = high
        deadline = time.monotonic() + timeout
        behind = dict(ends)
        while time.monotonic() < deadline:
            for w in workers:
                if w.poll() is not None:
                    raise AssertionError(f"{w.args!r} exited with {w.returncode}")
            committed = probe.committed([TopicPartition(t, p) for t, p in behind], timeout=10)
            for tp in committed:
                if tp.offset >= behind[(tp.topic, tp.partition)]:
                    del behind[(tp.topic, tp.partition)]
            if not behind:
                return
            time.sleep(0.1)
        raise AssertionError(f"{group} did not commit up to the end of {behind} in {timeout} s")
    finally:
        probe.close()


def metric(port: int, name: str, labels: dict[str, str] | None = None) -> float:
    """One sample of a worker's /metrics (0 when the series does not exist yet)."""
    want = "" if not labels else "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
    for line in scrape(port).splitlines():
        if line.startswith(name + want + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def wait_metric(port: int, name: str, labels: dict[str, str] | None, at_least: float) -> float:
    deadline = time.monotonic() + 30
    value = 0.0
    while time.monotonic() < deadline:
        try:
            value = metric(port, name, labels)
        except OSError:
            value = 0.0  # the worker is still starting
        if value >= at_least:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{name}{labels or ''} stayed at {value}, expected >= {at_least}")


TABLES = ("predictions", "pending_labels", "alerts")


def dump(settings: Settings) -> dict[str, list[str]]:
    """Every row of the recorder's tables as text, in key order: equal dumps = equal rows."""
    order = {
        "predictions": "tenant_id, event_id",
        "pending_labels": "tenant_id, event_id",
        "alerts": "alert_id",
    }
    with psycopg.connect(settings.postgres_url) as conn:
        return {
            table: [
                r[0]
                for r in conn.execute(
                    f"SELECT t::text FROM {table} t ORDER BY {order[table]}"
                ).fetchall()
            ]
            for table in TABLES
        }


def rows(settings: Settings, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(settings.postgres_url) as conn:
        return conn.execute(sql, params).fetchall()


@dataclass(frozen=True, slots=True)
class Received:
    key: str | None
    partition: int
    name: str
    record: dict[str, Any]


class KeyedReader:
    """Every committed record of some topics from the beginning, with key and partition."""

    def __init__(self, settings: Settings, topics: list[str]) -> None:
        self._consumer = Consumer(consumer_config(settings, f"reader-{uuid.uuid4().hex[:8]}"))
        self._consumer.subscribe(topics)
        self.received: list[Received] = []

    def poll(self, seconds: float = 0.3) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for m in self._consumer.consume(5_000, timeout=0.1):
                if m.error() is not None:
                    continue
                decoded = CODEC.decode(m.value() or b"")
                assert isinstance(decoded, Decoded), f"undecodable record: {decoded}"
                key = m.key()
                self.received.append(
                    Received(
                        None if key is None else key.decode(),
                        int(m.partition() or 0),
                        decoded.name,
                        decoded.record,
                    )
                )

    def wait_for(
        self,
        done: Callable[[], bool],
        timeout: float,
        what: str,
        workers: Sequence[subprocess.Popen[bytes] | None] = (),
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for w in workers:
                if w is not None and w.poll() is not None:
                    raise AssertionError(f"{w.args!r} exited with {w.returncode} ({what})")
            self.poll()
            if done():
                return
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")

    def close(self) -> None:
        self._consumer.close()
