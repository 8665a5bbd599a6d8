"""An in-memory view of the model registry, read from the compacted model-updates topic.

Workers learn thresholds and calibration maps from here instead of querying PostgreSQL on
their hot path. The view reads every partition from the beginning (no consumer group), so
each process rebuilds the full registry state, then follows new updates.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.aio import AIOConsumer

from shared.contracts.batches import model_key
from shared.contracts.codec import AvroCodec, Decoded
from shared.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RegisteredVersion:
    id: int
    tenant: str
    name: str
    version: str
    stage: str
    parent_id: int | None
    abstain_threshold: float
    calibrator_version: str
    calibrator: str | None
    segment_key: str | None = None
    """Feature or metadata key whose values get a calibrator each; None = no segments."""
    candidate_version: str | None = None
    candidate_calibrator: str | None = None
    rollout_stage: str | None = None
    canary_share: float = 0.0

    @property
    def key(self) -> str:
        return model_key(self.tenant, self.name, self.version)


class RegistryView:
    def __init__(self, settings: Settings, topic: str, codec: AvroCodec) -> None:
        self._settings = settings
        self._topic = topic
        self._codec = codec
        self.versions: dict[str, RegisteredVersion] = {}
        self.caught_up = asyncio.Event()
        self._consumer: AIOConsumer | None = None

    def get(self, key: str) -> RegisteredVersion | None:
        return self.versions.get(key)

    @property
    def described(self) -> str:
        """What the view holds, for logs."""
        return f"{len(self.versions)} model versions"

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        k = key.decode()
        if value is None:  # tombstone
            self.versions.pop(k, None)
            return
        decoded = self._codec.decode(value, {"ModelVersion"})
        if not isinstance(decoded, Decoded):
            logger.error("unreadable registry update for %s: %s", k, decoded.message)
            return
        r = decoded.record
        self.versions[k] = RegisteredVersion(
            id=r["id"],
            tenant=r["tenant"],
            name=r["name"],
            version=r["version"],
            stage=r["stage"],
            parent_id=r["parent_id"],
            abstain_threshold=r["abstain_threshold"],
            calibrator_version=r["calibrator_version"],
            calibrator=r["calibrator"],
            segment_key=r.get("segment_key"),
            candidate_version=r.get("candidate_version"),
            candidate_calibrator=r.get("candidate_calibrator"),
            rollout_stage=r.get("rollout_stage"),
            canary_share=float(r.get("canary_share") or 0.0),
        )

    async def run(self, stopping: asyncio.Event) -> None:
        """Read everything, set ``caught_up``, then follow updates until ``stopping``.

        Caught up means every partition's position has reached the high watermark read at
        start. The position, not the last record's offset + 1, because a transactional
        writer leaves a commit marker after its last record and compaction leaves gaps.
        """
        self._consumer = AIOConsumer(
            {
                "bootstrap.servers": self._settings.kafka_servers,
                "group.id": f"{self._settings.topic_namespace}-registry-view",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            },
            max_workers=1,
        )
        consumer = self._consumer
        try:
            ends = await self._assign_from_start(consumer)
            if not ends:
                self._mark_caught_up()
            while not stopping.is_set():
                for m in await consumer.consume(num_messages=1_000, timeout=0.2):
                    self._take(m)
                if ends:
                    await self._drop_reached(consumer, ends)
                    if not ends:
                        self._mark_caught_up()
        finally:
            await consumer.close()

    async def _assign_from_start(self, consumer: AIOConsumer) -> dict[int, int]:
        """Assign every partition from its beginning; the high watermark of each non-empty
        one (what reading must reach to be caught up)."""
        topic = self._topic
        meta = await consumer.list_topics(topic, timeout=10)
        found = meta.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            raise RuntimeError(
                f"registry topic {topic!r} is not readable: "
                f"{found.error if found is not None else 'missing'}"
            )
        partitions = sorted(found.partitions)
        # Watermarks before assign: once fetches are in flight, each query waits behind
        # a long-poll fetch (fetch.wait.max.ms) on the same connection.
        ends: dict[int, int] = {}
        for p in partitions:
            low, high = await consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
        await consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        return ends

    def _take(self, m: Message) -> None:
        err = m.error()
        if err is not None:
            if err.fatal():
                raise KafkaException(err)
            if err.code() != KafkaError._PARTITION_EOF:
                logger.warning("registry view: %s", err)
            return
        self.apply(m.key(), m.value())

    async def _drop_reached(self, consumer: AIOConsumer, ends: dict[int, int]) -> None:
        """Forget the partitions whose position has reached their end."""
        positions = await consumer.position([TopicPartition(self._topic, p) for p in ends])
        for tp in positions:
            if tp.offset >= ends[tp.partition]:
                del ends[tp.partition]

    def _mark_caught_up(self) -> None:
        logger.info("%s view caught up: %s", self._topic, self.described)
        self.caught_up.set()

    async def wait_caught_up(self, seconds: float) -> bool:
        started = time.monotonic()
        try:
            await asyncio.wait_for(self.caught_up.wait(), seconds)
        except TimeoutError:
            logger.warning("registry not read within %.0f s; going on with what is known", seconds)
            return False
        logger.info("registry read in %.2f s", time.monotonic() - started)
        return True
