"""Consume → process → produce, exactly once, in micro-batches.

Each iteration fetches up to ``max_messages`` messages with one batch call, hands them to a
plain processing function, produces what it returns and commits the consumer offsets inside
the same Kafka transaction. A crash at any point leaves either the whole iteration visible
to ``read_committed`` readers or none of it; on restart the same transactional id fences the
dead instance and aborts its open transaction at once.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Protocol

from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.aio import AIOConsumer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.runtime.kafka import consumer_config, producer_config, transactional_producer_config
from shared.settings import Settings

logger = logging.getLogger(__name__)
REDIS_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError)


@dataclass(frozen=True, slots=True)
class Output:
    """One message to produce."""

    topic: str
    key: bytes | None
    value: bytes


class Process(Protocol):
    def __call__(self, messages: Sequence[Message]) -> Awaitable[list[Output]]: ...


class PipelineHooks(Protocol):
    def batch_done(self, n_messages: int, seconds: float) -> None: ...

    def lag(self, partition_lag: dict[tuple[str, int], int]) -> None: ...


@dataclass(slots=True)
class PipelineConfig:
    group_id: str
    topics: list[str]
    transactional_id: str = ""
    """Stable per replica (e.g. ``<group>.<instance>``) so a restart fences its zombie."""
    transactional: bool = True
    max_messages: int = 5_000
    poll_timeout: float = 0.005
    lag_every_seconds: float = 5.0
    eager: bool = False
    """Start an iteration as soon as one message is there, with whatever else has arrived
    (latency-bound workers). Otherwise each fetch waits up to ``poll_timeout`` for
    ``max_messages`` (throughput-bound workers: fuller batches)."""


class Pipeline:
    """Runs one consume-process-produce loop until :meth:`stop`.

    ``transactional=True`` (consume → produce workers): outputs and offsets commit in one
    Kafka transaction. ``transactional=False`` (workers whose effect is in Redis or
    PostgreSQL): the effect must be idempotent or fenced by offset; outputs are flushed and
    then the offsets are committed, so a crash repeats an iteration but never skips one.
    """

    def __init__(
        self,
        settings: Settings,
        config: PipelineConfig,
        process: Process,
        hooks: PipelineHooks | None = None,
    ) -> None:
        self._settings = settings
        self._config = config
        self._process = process
        self._hooks = hooks
        self._stopping = asyncio.Event()
        self._consumer: AIOConsumer | None = None
        self._producer: Producer | None = None
        self._failed: list[KafkaError] = []
        self.ready = asyncio.Event()
        """Set once the consumer has its first assignment."""

    def stop(self) -> None:
        self._stopping.set()

    async def run(self, stopping: asyncio.Event | None = None) -> None:
        if stopping is not None:
            self._stopping = stopping
        loop = asyncio.get_running_loop()
        cfg = self._config
        if cfg.transactional:
            self._producer = Producer(
                transactional_producer_config(self._settings, cfg.transactional_id)
            )
            await loop.run_in_executor(None, self._producer.init_transactions, 30.0)
        else:
            self._producer = Producer(producer_config(self._settings))
        self._consumer = AIOConsumer(consumer_config(self._settings, cfg.group_id), max_workers=2)

        async def on_assign(consumer: object, partitions: list[TopicPartition]) -> None:
            logger.info("assigned %s", [(p.topic, p.partition) for p in partitions])
            self.ready.set()

        await self._consumer.subscribe(cfg.topics, on_assign=on_assign)
        last_lag = 0.0
        try:
            while not self._stopping.is_set():
                messages = await self._fetch()
                real = [m for m in messages if _is_data(m)]
                if real:
                    started = time.perf_counter()
                    await self._iteration(real)
                    if self._hooks:
                        self._hooks.batch_done(len(real), time.perf_counter() - started)
                if self._hooks and time.monotonic() - last_lag > cfg.lag_every_seconds:
                    last_lag = time.monotonic()
                    self._hooks.lag(await self._lag())
        finally:
            await self._close()

    async def _fetch(self) -> list[Message]:
        assert self._consumer is not None
        cfg = self._config
        if not cfg.eager:
            return await self._consumer.consume(
                num_messages=cfg.max_messages, timeout=cfg.poll_timeout
            )
        # consume() with a timeout waits for a full batch; poll() returns on the first
        # message, then consume(timeout=0) takes what has already been fetched.
        first = await self._consumer.poll(cfg.poll_timeout)
        if first is None:
            return []
        if cfg.max_messages == 1:
            return [first]
        return [first, *await self._consumer.consume(num_messages=cfg.max_messages - 1, timeout=0)]

    async def _iteration(self, messages: list[Message]) -> None:
        assert self._consumer is not None and self._producer is not None
        loop = asyncio.get_running_loop()
        producer = self._producer
        txn = self._config.transactional
        for attempt in itertools.count(1):
            try:
                self._failed.clear()
                if txn:
                    producer.begin_transaction()
                outputs = await self._process(messages)
                for out in outputs:
                    self._produce(out)
                offsets = _next_offsets(messages)
                if txn:
                    metadata = await self._consumer.consumer_group_metadata()
                    await loop.run_in_executor(
                        None, producer.send_offsets_to_transaction, offsets, metadata, 30.0
                    )
                    await loop.run_in_executor(None, producer.commit_transaction, 60.0)
                else:
                    await self._flush_all()
                    await self._consumer.commit(offsets=offsets, asynchronous=False)
                return
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                if err.fatal() or not (err.txn_requires_abort() or err.retriable()):
                    raise
                logger.warning("iteration attempt %d failed (%s); retrying", attempt, err)
                await self._abort()
                await asyncio.sleep(min(0.1 * attempt, 2.0))
            except (ConnectionError, TimeoutError, OSError, *REDIS_UNAVAILABLE) as exc:
                # A dependency (Redis, PostgreSQL) is down: nothing is committed, so the same
                # messages are processed again once it is back (redis-py's connection errors
                # are not the built-in ones, hence their own entry).
                logger.warning(
                    "dependency unavailable on attempt %d (%s: %s); retrying the batch",
                    attempt,
                    type(exc).__name__,
                    exc,
                )
                await self._abort()
                await asyncio.sleep(min(0.2 * attempt, 5.0))
            except Exception:
                logger.exception(
                    "processing %d messages from %s failed",
                    len(messages),
                    sorted({(m.topic(), m.partition()) for m in messages}),
                )
                await self._abort()
                raise

    async def _abort(self) -> None:
        assert self._producer is not None
        if self._config.transactional:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, self._producer.abort_transaction, 30.0)

    async def _flush_all(self) -> None:
        """Wait for every output's delivery report; a message that failed for good (too
        large, say) fails the iteration, so its offsets are not committed."""
        assert self._producer is not None
        loop = asyncio.get_running_loop()
        remaining = await loop.run_in_executor(None, self._producer.flush, 60.0)
        failed, self._failed = self._failed, []
        if remaining:
            raise KafkaException(
                KafkaError(KafkaError._MSG_TIMED_OUT, f"{remaining} messages not delivered")
            )
        if failed:
            raise KafkaException(failed[0])

    def _delivered(self, err: KafkaError | None, _: Message) -> None:
        if err is not None:
            self._failed.append(err)

    def _produce(self, out: Output) -> None:
        assert self._producer is not None
        while True:
            try:
                self._producer.produce(out.topic, out.value, out.key, on_delivery=self._delivered)
                return
            except BufferError:
                # The local queue is full: serve delivery reports until there is room.
                self._producer.poll(0.05)

    async def _lag(self) -> dict[tuple[str, int], int]:
        assert self._consumer is not None
        out: dict[tuple[str, int], int] = {}
        assignment = await self._consumer.assignment()
        if not assignment:
            return out
        positions = await self._consumer.position(assignment)
        for tp in positions:
            _, high = await self._consumer.get_watermark_offsets(tp, timeout=1.0, cached=True)
            if tp.offset >= 0 and high >= 0:
                out[(tp.topic, tp.partition)] = max(high - tp.offset, 0)
        return out

    async def _close(self) -> None:
        if self._consumer is not None:
            try:
                await self._consumer.close()
            except KafkaException:
                logger.warning("consumer close failed", exc_info=True)
        if self._producer is not None:
            self._producer.flush(10)


def _is_data(message: Message) -> bool:
    """True for a record; consumer errors are logged, and only fatal ones raise."""
    err = message.error()
    if err is None:
        return True
    if err.code() == KafkaError._PARTITION_EOF:
        return False
    if err.fatal():
        raise KafkaException(err)
    logger.warning("consumer error on %s[%s]: %s", message.topic(), message.partition(), err)
    return False


def _next_offsets(messages: Sequence[Message]) -> list[TopicPartition]:
    last: dict[tuple[str, int], int] = {}
    for m in messages:
        key = (str(m.topic()), int(m.partition() or 0))
        off = m.offset()
        if off is not None and off >= last.get(key, -1):
            last[key] = off
    return [TopicPartition(t, p, off + 1) for (t, p), off in last.items()]
