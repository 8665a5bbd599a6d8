"""Reads topics from their first retained record up to where they ended when reading began.

A rebuild reads the log, not a consumer group's position: the reader assigns every partition
itself (no group membership, no rebalance, nothing committed, so the workers' own groups are
untouched), reads ``read_committed`` (what an aborted transaction wrote stays invisible, as
it is to the workers) and stops at the end offsets it saw first, so records written while it
runs are left to the workers.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from shared.runtime.identity import retrying
from shared.runtime.kafka import consumer_config
from shared.settings import Settings


@dataclass(slots=True)
class Progress:
    """How far a read has come, in records (Kafka messages) and offsets."""

    total_offsets: int
    done_offsets: int = 0
    records: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def share(self) -> float:
        return 1.0 if self.total_offsets <= 0 else min(self.done_offsets / self.total_offsets, 1.0)

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started


class LogReader:
    def __init__(self, settings: Settings, topics: Sequence[str], batch: int = 500) -> None:
        self._settings = settings
        self._topics = list(topics)
        self._batch = batch
        self._consumer = Consumer(
            consumer_config(
                settings,
                f"{settings.topic_namespace}-rebuild-{uuid.uuid4().hex[:8]}",
                **{"enable.partition.eof": True},
            )
        )
        self._low: dict[tuple[str, int], int] = {}
        self._high: dict[tuple[str, int], int] = {}
        for name in self._topics:
            meta = self._consumer.list_topics(name, timeout=10).topics.get(name)
            if meta is None or meta.error is not None:
                raise KafkaException(f"topic {name} does not exist: nothing to rebuild from")
            for p in meta.partitions:
                low, high = retrying(partial(self._watermarks, TopicPartition(name, p)))
                self._low[(name, p)], self._high[(name, p)] = low, high
        self.progress = Progress(sum(h - self._low[k] for k, h in self._high.items()))

    def _watermarks(self, tp: TopicPartition) -> tuple[int, int]:
        low, high = self._consumer.get_watermark_offsets(tp, timeout=10)
        return int(low), int(high)

    @property
    def earliest(self) -> dict[tuple[str, int], int]:
        """The first retained offset of every partition (above 0: retention removed some)."""
        return dict(self._low)

    def batches(self) -> Iterator[list[Message]]:
        """Batches of records in offset order per partition, until every partition is read."""
        pending = {k for k, high in self._high.items() if high > self._low[k]}
        self._consumer.assign(
            [TopicPartition(t, p, OFFSET_BEGINNING) for (t, p) in sorted(pending)]
        )
        done_at = dict(self._low)
        try:
            while pending:
                out: list[Message] = []
                for m in self._consumer.consume(num_messages=self._batch, timeout=1.0):
                    key = (str(m.topic()), int(m.partition() or 0))
                    err = m.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            done_at[key] = self._high[key]
                            pending.discard(key)
                            continue
                        if err.fatal():
                            raise KafkaException(err)
                        continue
                    offset = int(m.offset() or 0)
                    if key not in pending or offset >= self._high[key]:
                        pending.discard(key)
                        continue
                    # The end shows itself by the EOF event (after any commit marker) or by
                    # a record written after reading began.
                    done_at[key] = offset + 1
                    out.append(m)
                self.progress.records += len(out)
                self.progress.done_offsets = sum(done_at[k] - self._low[k] for k in done_at)
                if out:
                    yield out
        finally:
            self._consumer.close()
