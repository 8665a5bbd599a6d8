"""Poison messages: a message a worker keeps crashing on is set aside, and the worker goes on.

A crash is whatever ends an attempt without its commit: an exception that stops the worker,
the OOM killer, SIGKILL. Since the process does not survive it, the count lives in Redis,
one hash per (consumer group, topic, partition):

- ``offset``: the first offset of the partition's messages in the attempt under way;
- ``crashes``: attempts of the current width started at ``offset`` that never finished;
- ``until``: the last offset of the first attempt that crashed;
- ``width``: how many offsets the attempt under way may span.

Before each attempt the pipeline marks it (``crashes + 1`` when it starts where the last
unfinished one started). Once a partition has crashed, its messages up to ``until`` are
searched for the culprit by halves: the first careful attempt spans half the crashed one,
an attempt that crashes again is halved again at the same start, one that commits is
followed by the next of the same width, so a batch of n messages costs about log2(n) careful
attempts per crash (a batch ended by SIGKILL with no culprit in it: two). A single message
at an offset with ``crashes`` at the setting (default 3) is not processed again but
replaced by a dead letter with code ``worker_crash``, committed like any other output, so
exactly-once holds for every other message. Past ``until`` the hash no longer applies: an
attempt that committed leaves its mark (``until`` = its last offset), and the next attempt,
which starts after it, overwrites it with its own, so a normal iteration costs Redis two
round trips (read, mark), not three.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
from confluent_kafka import Message

from shared.contracts.codec import AvroCodec
from shared.contracts.errors import ErrorCode

logger = logging.getLogger(__name__)


class InjectedFault(RuntimeError):
    """Raised by the test-only fault injection (``CALIBER_FAULT_INJECT``)."""


@dataclass(frozen=True, slots=True)
class Suspect:
    """What the crash record says about one partition at the start of an attempt."""

    crashes: int
    """Unfinished attempts of ``width`` that started at this very offset."""
    careful: bool
    """A crash happened in the span this offset belongs to: ``width`` offsets at a time."""
    width: int = 1
    """How many offsets, from this one, the careful attempt may span (within the crashed
    span; a single message once it is narrowed to one)."""


def fault_injected(spec: str, service: str, messages: Sequence[Message]) -> None:
    """Crash (raise) when ``spec`` is ``<service>:<marker>`` and a message holds the marker."""
    if not spec or ":" not in spec:
        return
    target, marker = spec.split(":", 1)
    if target != service or not marker:
        return
    needle = marker.encode()
    for m in messages:
        if needle in (m.value() or b""):
            raise InjectedFault(
                f"fault injected on {m.topic()}[{m.partition()}]@{m.offset()} (test only)"
            )


class CrashRecord:
    """The Redis side of the quarantine for one consumer group."""

    def __init__(self, client: aioredis.Redis, prefix: str, group: str, limit: int) -> None:
        self._redis = client
        self._prefix = f"{prefix}crash:{group}:"
        self.limit = limit

    def _key(self, topic: str, partition: int) -> str:
        return f"{self._prefix}{topic}:{partition}"

    async def suspects(self, starts: dict[tuple[str, int], int]) -> dict[tuple[str, int], Suspect]:
        """The partitions (of ``starts``: partition → first offset) with a crash record that
        still applies: one whose span, from its ``offset`` to ``until``, holds the start. A
        record ending before the start (the mark of an attempt that committed) or starting
        after it (the group's offsets were moved back, for a replay) is stale and left for
        :meth:`mark` to overwrite, so a replay is not read one message at a time. An attempt
        wider than one offset that crashed at this start is halved; one message that did is
        counted (a record without a width, from before widths, reads as one message)."""
        keys = list(starts)
        pipe = self._redis.pipeline(transaction=False)
        for topic, partition in keys:
            pipe.hmget(self._key(topic, partition), "offset", "crashes", "until", "width")
        found = await pipe.execute()
        out: dict[tuple[str, int], Suspect] = {}
        for tp, (offset, crashes, until, width) in zip(keys, found, strict=True):
            first = starts[tp]
            if until is None or first > int(until) or (offset is not None and first < int(offset)):
                continue
            crashed = offset is not None and int(offset) == first and int(crashes or 0) > 0
            wide = int(width or 1)
            count = int(crashes or 0) if crashed else 0
            if crashed and wide > 1:
                wide, count = wide // 2, 0
            out[tp] = Suspect(count, True, max(1, min(wide, int(until) - first + 1)))
        return out

    async def mark(
        self,
        attempt: dict[tuple[str, int], tuple[int, int]],
        suspects: dict[tuple[str, int], Suspect],
    ) -> None:
        """Record that an attempt over ``attempt`` (partition → first, last offset) starts:
        a normal one opens a span of its own, as wide as it is; a careful one (``suspects``)
        keeps its span and records the width it was given."""
        pipe = self._redis.pipeline(transaction=False)
        for tp, (first, last) in attempt.items():
            key = self._key(*tp)
            known = suspects.get(tp)
            if known is None:
                pipe.hset(
                    key,
                    mapping={
                        "offset": first,
                        "crashes": 1,
                        "until": last,
                        "width": last - first + 1,
                    },
                )
            else:
                pipe.hset(
                    key,
                    mapping={"offset": first, "crashes": known.crashes + 1, "width": known.width},
                )
        await pipe.execute()

    async def finished(self, attempt: dict[tuple[str, int], tuple[int, int]]) -> None:
        """The attempt committed: its partitions have no unfinished attempt any more (the
        span stays careful until ``until``, the next attempt as wide as this one was given)."""
        pipe = self._redis.pipeline(transaction=False)
        for tp, (_, last) in attempt.items():
            pipe.hset(self._key(*tp), mapping={"offset": last + 1, "crashes": 0})
        await pipe.execute()

    async def forget(self, attempt: dict[tuple[str, int], tuple[int, int]]) -> None:
        """Remove the marks of an attempt that was not committed and is read again (the group
        moved on under it): it must not count as a crash."""
        if attempt:
            await self._redis.delete(*(self._key(*tp) for tp in attempt))


def quarantine_record(m: Message, service: str, crashes: int) -> dict[str, object]:
    """The DeadLetter of a message set aside after ``crashes`` crashes."""
    return {
        "source_topic": str(m.topic()),
        "source_partition": int(m.partition() or 0),
        "source_offset": int(m.offset() or 0),
        "raw": m.value() or b"",
        "error_code": str(ErrorCode.WORKER_CRASH),
        "message": f"{service} crashed {crashes} times in a row on this message; set aside",
        "event_id": None,
        "service": service,
        "occurred_at_ms": int(time.time() * 1000),
    }


def encode_quarantine(codec: AvroCodec, m: Message, service: str, crashes: int) -> bytes:
    logger.error(
        "quarantined %s[%s]@%s after %d crashes (dead letter %s)",
        m.topic(),
        m.partition(),
        m.offset(),
        crashes,
        ErrorCode.WORKER_CRASH,
    )
    return codec.encode("DeadLetter", quarantine_record(m, service, crashes))
