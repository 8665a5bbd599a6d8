"""Consume → process → produce, exactly once, in micro-batches.

Each iteration fetches up to ``max_messages`` messages with one batch call, hands them to a
plain processing function, produces what it returns and commits the consumer offsets inside
the same Kafka transaction. A crash at any point leaves either the whole iteration visible
to ``read_committed`` readers or none of it; on restart the same transactional id fences the
dead instance and aborts its open transaction at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis
from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.aio import AIOConsumer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.runtime import redis_client
from shared.runtime.kafka import (
    consumer_config,
    gathering_fetch,
    producer_config,
    transactional_producer_config,
)
from shared.runtime.quarantine import CrashRecord, encode_quarantine, fault_injected
from shared.settings import Settings

logger = logging.getLogger(__name__)
REDIS_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError)

STUCK_GRACE_SECONDS = 10.0
"""How long past its own timeout a blocking client call may run before the worker gives up
on the process (:func:`bounded`)."""
SEND_OFFSETS_TIMEOUT_SECONDS = 10.0
"""librdkafka's own timeout for adding a batch's offsets to its transaction."""
EXIT_STUCK = 75
"""The exit status of a worker that ended itself over a stuck client call (EX_TEMPFAIL: its
supervisor starts it again)."""

BATCH_LINGER_PER_ITERATION = 2.0
"""A worker off the decision path gathers its next batch for this many times as long as its
last iteration took: until the linger reaches its bound the iterations take at most a third
of its time, and its batches grow with the load (more events share the commit, the round
trips and the counter writes of an iteration) instead of the iterations coming faster."""


def batch_linger(settings: Settings, took: float) -> float:
    """How long a batch worker gathers after an iteration that took ``took`` seconds:
    :data:`BATCH_LINGER_PER_ITERATION` times that, at least
    ``Settings.batch_linger_seconds`` and at most ``Settings.batch_linger_max_seconds``
    (never below the least)."""
    least = settings.batch_linger_seconds
    most = max(least, settings.batch_linger_max_seconds)
    return min(max(least, BATCH_LINGER_PER_ITERATION * took), most)


async def bounded(
    call: Callable[[float], object],
    seconds: float,
    last_words: Callable[[], Awaitable[None]] | None = None,
) -> object:
    """Run a blocking librdkafka call that takes a timeout (``call(seconds)``) in the
    executor, and end the process if it has not returned ``STUCK_GRACE_SECONDS`` after it.

    librdkafka does not always honour the timeout of its transactional calls: when the group
    or transaction coordinator went away (a broker restarted), ``send_offsets_to_transaction``
    can wait forever for a coordinator request nobody retries (confluentinc/librdkafka#5456,
    #5511). A thread stuck in C cannot be interrupted, and the producer it holds cannot be
    used or closed meanwhile, so the worker exits at once (``os._exit``: an orderly exit would
    wait for that thread) and its supervisor starts it again. Nothing is lost or counted
    twice: the open transaction was not committed, the next instance's ``init_transactions``
    under the same transactional id aborts it, and its consumer reads the batch again from
    the last committed offsets (the Redis and PostgreSQL effects are fenced or idempotent).
    ``last_words`` runs first (for at most ``STUCK_GRACE_SECONDS``): the pipeline takes back
    its crash marks there, since a stuck client is not a poison message."""
    loop = asyncio.get_running_loop()
    pending = loop.run_in_executor(None, call, seconds)
    try:
        return await asyncio.wait_for(asyncio.shield(pending), seconds + STUCK_GRACE_SECONDS)
    except TimeoutError:
        named = call.func if isinstance(call, functools.partial) else call
        name = getattr(named, "__name__", repr(named))
        logger.critical(
            "%s has not returned %.0f s after its %.0f s timeout: librdkafka is stuck; "
            "ending the process so its supervisor starts a fresh one",
            name,
            STUCK_GRACE_SECONDS,
            seconds,
        )
        if last_words is not None:
            try:
                await asyncio.wait_for(last_words(), STUCK_GRACE_SECONDS)
            except Exception:
                logger.exception("could not finish before ending the process")
        logging.shutdown()
        os._exit(EXIT_STUCK)


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

    # Optional: ``quarantined(topic)``, called once per message set aside.


class RebalanceListener(Protocol):
    """Told of every change of the pipeline consumer's assignment (cooperative-sticky: only
    the partitions that move), on the event loop; Kafka completes the change once the call
    returns, so a listener can finish work on a partition before it is released
    (:class:`shared.runtime.ownership.Ownership`)."""

    async def assigned(self, partitions: list[TopicPartition]) -> None: ...

    async def revoked(self, partitions: list[TopicPartition]) -> None: ...


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
    batch: bool = False
    """Off the decision path (its output is read by people and dashboards, not by the next
    hop of a decision): each fetch gathers for ``Settings.batch_linger_seconds``, so the
    fixed cost of an iteration (a commit, store round trips, one write per touched counter)
    is paid a few times a second, not once per arriving message."""
    max_linger: float | None = None
    """Bound of the adaptive linger of a throughput-bound worker; None:
    ``Settings.linger_max_seconds``. A worker on the decision path keeps it short."""
    quarantine: bool = True
    """Count crashes per offset in Redis and set a poison message aside after
    ``Settings.quarantine_after_crashes`` of them (see :mod:`shared.runtime.quarantine`)."""
    service: str = ""
    """Name in dead letters and fault injection; default: the group id's last part."""
    assignment: str = "cooperative-sticky"
    """librdkafka's ``partition.assignment.strategy``. ``range`` gives each replica the same
    partition numbers of every topic (the topics have one partition count): a worker that
    reads two topics keyed by model version and owns model versions by partition
    (:mod:`shared.runtime.ownership`) then owns a fair share, where cooperative-sticky
    balances only the total and may give one replica every partition of one topic. A worker
    that joins two topics keyed by model version in its store (a label and its prediction,
    read and then written) needs it too: both halves of a join reach the same replica, so
    two replicas never each miss the other's half. An eager strategy: every replica stops
    before partitions move, and one group cannot mix it with cooperative-sticky (stop the
    old replicas before starting ones with the other strategy)."""
    max_poll_interval_ms: int = 300_000
    """Longest an iteration may take before Kafka takes the partitions away from the worker
    (librdkafka's ``max.poll.interval.ms``; its default here)."""


@dataclass(slots=True)
class _Attempt:
    """What one iteration processes, after the crash record has had its say."""

    messages: list[Message]
    offsets: dict[tuple[str, int], tuple[int, int]]
    """partition → (first, last) offset processed."""
    careful: bool
    """Part of a crashed span, searched by halves."""
    quarantine: Message | None = None
    crashes: int = 0


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
        listener: RebalanceListener | None = None,
    ) -> None:
        self._settings = settings
        self._listener = listener
        self._config = config
        self._process = process
        self._hooks = hooks
        self._stopping = asyncio.Event()
        self._consumer: AIOConsumer | None = None
        self._producer: Producer | None = None
        self._failed: list[KafkaError] = []
        self._service = config.service or config.group_id.rsplit("-", 1)[-1]
        self._redis: aioredis.Redis | None = None
        self._crashes: CrashRecord | None = None
        self._codec: AvroCodec | None = None
        self._idle = False
        self._own_marks: dict[tuple[str, int], int] = {}
        """partition → last offset of the normal attempt this process last committed there:
        the crash record's span of that partition is then this process's own mark, ending at
        that offset, so an attempt starting after it needs no read of it (:meth:`_guard`).
        Emptied whenever the assignment changes (another replica may have written since)."""
        self._group_metadata: object | None = None
        """The consumer group's metadata for transactional offset commits, kept between
        rebalances (it changes with the group's generation) instead of asked for per batch."""
        self._linger = config.poll_timeout
        bound = settings.linger_max_seconds if config.max_linger is None else config.max_linger
        self._max_linger = max(config.poll_timeout, min(bound, settings.linger_max_seconds))
        if config.batch:
            self._linger = max(config.poll_timeout, batch_linger(settings, 0.0))
        self.ready = asyncio.Event()
        """Set once the consumer has its first assignment."""

    def stop(self) -> None:
        self._stopping.set()

    async def run(self, stopping: asyncio.Event | None = None) -> None:
        if stopping is not None:
            self._stopping = stopping
        cfg = self._config
        if cfg.transactional:
            self._producer = Producer(
                transactional_producer_config(self._settings, cfg.transactional_id)
            )
            await bounded(self._producer.init_transactions, 30.0)
        else:
            self._producer = Producer(producer_config(self._settings))
        self._consumer = AIOConsumer(
            consumer_config(
                self._settings,
                cfg.group_id,
                **{
                    "max.poll.interval.ms": cfg.max_poll_interval_ms,
                    "partition.assignment.strategy": cfg.assignment,
                    **(gathering_fetch(self._settings, self._linger) if cfg.batch else {}),
                },
            ),
            max_workers=2,
        )
        if cfg.quarantine:
            self._redis = redis_client.async_client(self._settings.redis_dsn)
            self._crashes = CrashRecord(
                self._redis,
                self._settings.redis_prefix,
                cfg.group_id,
                self._settings.quarantine_after_crashes,
            )
            self._codec = AvroCodec()

        async def on_assign(consumer: object, partitions: list[TopicPartition]) -> None:
            logger.info("assigned %s", [(p.topic, p.partition) for p in partitions])
            self._assignment_changed()
            if self._listener is not None:
                await self._listener.assigned(partitions)
            self.ready.set()

        async def on_revoke(consumer: object, partitions: list[TopicPartition]) -> None:
            logger.info("revoked %s", [(p.topic, p.partition) for p in partitions])
            self._assignment_changed()
            if self._listener is not None:
                await self._listener.revoked(partitions)

        await self._consumer.subscribe(
            cfg.topics, on_assign=on_assign, on_revoke=on_revoke, on_lost=on_revoke
        )
        last_lag = 0.0
        try:
            while not self._stopping.is_set():
                messages = await self._fetch()
                real = [m for m in messages if _is_data(m)]
                if real:
                    started = time.perf_counter()
                    await self._iteration(real)
                    took = time.perf_counter() - started
                    self._adapt_linger(took)
                    if self._hooks:
                        self._hooks.batch_done(len(real), took)
                if self._hooks and time.monotonic() - last_lag > cfg.lag_every_seconds:
                    last_lag = time.monotonic()
                    self._hooks.lag(await self._lag())
        finally:
            await self._close()

    def _assignment_changed(self) -> None:
        """The group rebalanced: what this process knew of its partitions' crash records and
        of the group's generation may no longer hold."""
        self._own_marks.clear()
        self._group_metadata = None

    def _adapt_linger(self, took: float) -> None:
        """Adaptive linger: collect the next batch for as long as this one took to process
        (bounded), so batches, and the share of fixed cost per iteration they carry, grow
        with the load while a light load waits only a few milliseconds. A batch worker
        gathers :data:`BATCH_LINGER_PER_ITERATION` times as long, within its own bounds
        (:func:`batch_linger`)."""
        if self._config.batch:
            self._linger = max(self._config.poll_timeout, batch_linger(self._settings, took))
        else:
            self._linger = min(max(self._config.poll_timeout, took), self._max_linger)

    async def _fetch(self) -> list[Message]:
        """The next batch. consume() with a timeout waits for a full batch; poll() returns
        on the first message. Busy, a throughput-bound worker waits for a fuller batch up to
        its adaptive linger (as long as its last iteration took, from ``poll_timeout`` up to
        ``Settings.linger_max_seconds``). Idle (the last fetch found nothing), every worker
        blocks in one long poll() and then takes what else is there, so a quiet worker
        wakes up once per ``Settings.idle_poll_seconds`` instead of hundreds of times a
        second (the long poll returns the moment a message arrives: no latency)."""
        assert self._consumer is not None
        cfg = self._config
        if not cfg.eager and not self._idle:
            batch = await self._consumer.consume(
                num_messages=cfg.max_messages, timeout=self._linger
            )
            self._idle = not batch
            return batch
        wait = self._settings.idle_poll_seconds if self._idle else cfg.poll_timeout
        first = await self._consumer.poll(wait)
        self._idle = first is None
        if first is None or cfg.max_messages == 1:
            return [] if first is None else [first]
        rest = await self._consumer.consume(
            num_messages=cfg.max_messages - 1, timeout=0 if cfg.eager else cfg.poll_timeout
        )
        return [first, *rest]

    async def _guard(self, messages: list[Message]) -> _Attempt:
        """The messages this attempt processes, marked in the crash record: all of them, or,
        after a crash, the first messages of a crashed partition, as many offsets as the
        record allows (the others are fetched again), or the quarantine of its first message
        once that message alone crashed often enough."""
        everything = _Attempt(messages, _spans(messages), careful=False)
        if self._crashes is None:
            return everything
        starts = {tp: first for tp, (first, _) in everything.offsets.items()}
        # A partition whose record is this process's own committed mark, ending before the
        # start, has no suspect (the record is stale): only the others are read.
        unknown = {
            tp: first
            for tp, first in starts.items()
            if tp not in self._own_marks or first <= self._own_marks[tp]
        }
        suspects = await self._crashes.suspects(unknown) if unknown else {}
        if not suspects:
            await self._crashes.mark(everything.offsets, suspects)
            return everything
        tp, suspect = next(iter(suspects.items()))
        first = starts[tp]
        kept = [
            m
            for m in messages
            if (str(m.topic()), int(m.partition() or 0)) == tp
            and int(m.offset() or 0) < first + suspect.width
        ]
        await self._rewind(messages, kept[-1])
        attempt = _Attempt(kept, _spans(kept), careful=True)
        if suspect.crashes >= self._crashes.limit and suspect.width == 1:
            attempt.quarantine, attempt.crashes = kept[0], suspect.crashes
            return attempt
        await self._crashes.mark(attempt.offsets, {tp: suspect})
        return attempt

    async def _rewind(self, messages: list[Message], last_kept: Message) -> None:
        """Seek every partition of ``messages`` back to its first message after those kept:
        ``last_kept``'s partition to the offset after it, every other one to its first."""
        assert self._consumer is not None
        for (topic, partition), (first, _) in _spans(messages).items():
            same = (topic, partition) == (
                str(last_kept.topic()),
                int(last_kept.partition() or 0),
            )
            await self._consumer.seek(
                TopicPartition(
                    topic, partition, int(last_kept.offset() or 0) + 1 if same else first
                )
            )

    async def _settled(self, attempt: _Attempt, *, committed: bool) -> None:
        """A committed normal attempt leaves its mark: it ends at the attempt's last offset,
        so the next attempt, which starts after it, finds it stale and overwrites it with its
        own (no Redis call here, one fewer round trip per iteration). An attempt not
        committed (abandoned) must not look like a crash when it is read again: its mark
        goes."""
        if self._crashes is None:
            return
        if committed and not attempt.careful:
            self._own_marks.update((tp, last) for tp, (_, last) in attempt.offsets.items())
        else:
            for tp in attempt.offsets:
                self._own_marks.pop(tp, None)
        if attempt.careful:
            await self._crashes.finished(attempt.offsets)
        elif not committed:
            await self._crashes.forget(attempt.offsets)

    async def _run_attempt(self, attempt: _Attempt) -> list[Output]:
        if attempt.quarantine is not None:
            assert self._codec is not None
            m = attempt.quarantine
            topics = Topics.for_namespace(self._settings.topic_namespace)
            value = encode_quarantine(self._codec, m, self._service, attempt.crashes)
            return [Output(topics.deadletter, None, value)]
        fault_injected(self._settings.fault_inject, self._service, attempt.messages)
        return await self._process(attempt.messages)

    async def _iteration(self, messages: list[Message]) -> None:
        assert self._consumer is not None and self._producer is not None
        producer = self._producer
        txn = self._config.transactional
        attempt: _Attempt | None = None
        for n in itertools.count(1):
            try:
                if attempt is None:
                    attempt = await self._guard(messages)
                self._failed.clear()
                if txn:
                    producer.begin_transaction()
                outputs = await self._run_attempt(attempt)
                for out in outputs:
                    self._produce(out)
                offsets = _next_offsets(attempt.messages)
                if txn:
                    await self._commit_transaction(attempt, offsets)
                else:
                    await self._flush_all()
                    await self._consumer.commit(offsets=offsets, asynchronous=False)
                break
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                self._group_metadata = None  # asked for again, in case the group moved on
                if err.code() in REBALANCED and not err.fatal():
                    assert attempt is not None
                    await self._abandon(attempt, err)
                    return
                if err.fatal() or not (err.txn_requires_abort() or err.retriable()):
                    await self._unless_to_blame(attempt, err)
                    raise
                logger.warning("iteration attempt %d failed (%s); retrying", n, err)
                await self._abort()
                await asyncio.sleep(min(0.1 * n, 2.0))
            except (ConnectionError, TimeoutError, OSError, *REDIS_UNAVAILABLE) as exc:
                # A dependency (Redis, PostgreSQL) is down: nothing is committed, so the same
                # messages are processed again once it is back (redis-py's connection errors
                # are not the built-in ones, hence their own entry).
                logger.warning(
                    "dependency unavailable on attempt %d (%s: %s); retrying the batch",
                    n,
                    type(exc).__name__,
                    exc,
                )
                await self._abort()
                await asyncio.sleep(min(0.2 * n, 5.0))
            except Exception:
                logger.exception(
                    "processing %d messages from %s failed",
                    len(messages),
                    sorted({(m.topic(), m.partition()) for m in messages}),
                )
                await self._abort()
                raise
        assert attempt is not None
        count = getattr(self._hooks, "quarantined", None)
        if attempt.quarantine is not None and count is not None:
            count(str(attempt.quarantine.topic()))
        await self._settle_quietly(attempt, committed=True)

    async def _commit_transaction(self, attempt: _Attempt, offsets: list[TopicPartition]) -> None:
        """The attempt's offsets into its transaction, and the transaction committed."""
        assert self._consumer is not None and self._producer is not None
        if self._group_metadata is None:
            self._group_metadata = await self._consumer.consumer_group_metadata()
        producer = self._producer
        # Milliseconds on a healthy broker; a timeout is retried after an abort, and a call
        # librdkafka never ends costs the timeout and the grace.
        await bounded(
            functools.partial(producer.send_offsets_to_transaction, offsets, self._group_metadata),
            SEND_OFFSETS_TIMEOUT_SECONDS,
            functools.partial(self._forget, attempt),
        )
        await bounded(producer.commit_transaction, 60.0, functools.partial(self._forget, attempt))

    async def _abandon(self, attempt: _Attempt, err: KafkaError) -> None:
        """The group moved on under this batch (a rebalance this replica joined late, or it
        was thrown out): its offsets cannot be committed in the old generation. A
        transactional batch is aborted and its partitions rewound, so whichever replica owns
        them now (this one or a sibling) reads it again; a Redis or PostgreSQL effect is
        fenced or idempotent, so its replay changes nothing. Retrying the commit under the
        new generation instead could commit offsets of a partition a sibling now reads."""
        logger.warning(
            "the consumer group rebalanced under a batch of %d messages (%s): not committed, "
            "its partitions' owner reads it again",
            len(attempt.messages),
            err.name(),
        )
        await self._abort()
        if self._config.transactional:
            assert self._consumer is not None
            for (topic, partition), (first, _) in attempt.offsets.items():
                try:
                    await self._consumer.seek(TopicPartition(topic, partition, first))
                except KafkaException as exc:  # no longer assigned here: its owner reads it
                    logger.info("not rewinding %s:%d (%s)", topic, partition, exc.args[0])
        await self._settle_quietly(attempt, committed=False)

    async def _unless_to_blame(self, attempt: _Attempt | None, err: KafkaError) -> None:
        """Before the worker ends over ``err``: a fatal client error (the producer fenced, or
        its transaction state lost with a broker) is not the batch's fault, so its crash
        marks are taken back and the restarted worker reads it whole; any other error may be
        the batch's (a message too large) and is counted as a crash."""
        if err.fatal() and attempt is not None:
            with contextlib.suppress(*REDIS_UNAVAILABLE):
                await self._forget(attempt)

    async def _forget(self, attempt: _Attempt) -> None:
        """Take back ``attempt``'s crash marks: it ends without a crash of its own making (a
        stuck client call, :func:`bounded`), and read again as a batch, not one message at a
        time (a real poison message among its messages crashes that batch and is found
        again)."""
        if self._crashes is not None:
            await self._crashes.forget(attempt.offsets)

    async def _settle_quietly(self, attempt: _Attempt, *, committed: bool) -> None:
        """Settle the attempt's crash mark (:meth:`_settled`); if Redis is away the mark
        stays, which at worst makes the next attempt at that offset a careful one (never a
        wrong quarantine: the committed offset has moved on, so the record no longer
        matches)."""
        try:
            await self._settled(attempt, committed=committed)
        except REDIS_UNAVAILABLE as exc:
            logger.warning("could not clear the crash record (%s); it will be stale", exc)

    async def _abort(self) -> None:
        assert self._producer is not None
        if self._config.transactional:
            await bounded(self._producer.abort_transaction, 30.0)

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
        if self._producer is not None and not self._config.transactional:
            # A transactional producer has nothing to flush here: commit flushed each
            # transaction's outputs, and an open one is aborted by whoever holds the id next.
            # (Flushing one the broker has fenced fails inside the client with SystemError,
            # which would hide the fencing error the worker ends over.)
            self._producer.flush(10)
        if self._redis is not None:
            await self._redis.aclose()


REBALANCED = frozenset(
    {
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.FENCED_INSTANCE_ID,
        KafkaError._ASSIGNMENT_LOST,
    }
)
"""Commit errors that say the group's generation moved on, not that anything failed."""


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


def _spans(messages: Sequence[Message]) -> dict[tuple[str, int], tuple[int, int]]:
    """partition → (first, last) offset of ``messages``."""
    out: dict[tuple[str, int], tuple[int, int]] = {}
    for m in messages:
        key = (str(m.topic()), int(m.partition() or 0))
        off = int(m.offset() or 0)
        first, last = out.get(key, (off, off))
        out[key] = (min(first, off), max(last, off))
    return out


def _next_offsets(messages: Sequence[Message]) -> list[TopicPartition]:
    last: dict[tuple[str, int], int] = {}
    for m in messages:
        key = (str(m.topic()), int(m.partition() or 0))
        off = m.offset()
        if off is not None and off >= last.get(key, -1):
            last[key] = off
    return [TopicPartition(t, p, off + 1) for (t, p), off in last.items()]
