"""Dead letters: a consumed message that cannot be used, kept with where it came from.

Every worker that meets a message it cannot use produces one of these to
caliber.deadletter instead of dropping it, so nothing is lost and a person can act on it.
"""

from __future__ import annotations

import logging

from confluent_kafka import Message

from shared.contracts.codec import AvroCodec
from shared.runtime.pipeline import Output

logger = logging.getLogger(__name__)


def dead_letter(
    topic: str,
    codec: AvroCodec,
    m: Message,
    code: str,
    message: str,
    service: str,
    now_ms: int,
    event_id: str | None = None,
) -> Output:
    """The DeadLetter of ``m`` (its topic, partition, offset and raw bytes) for ``topic``,
    logged with that context."""
    logger.error(
        "dead letter from %s[%s]@%s: %s: %s", m.topic(), m.partition(), m.offset(), code, message
    )
    record = dead_letter_record(
        str(m.topic()),
        int(m.partition() or 0),
        int(m.offset() or 0),
        m.value(),
        code,
        message,
        service,
        now_ms,
        event_id,
    )
    return Output(topic, None, codec.encode("DeadLetter", record))


def dead_letter_record(
    source_topic: str,
    source_partition: int,
    source_offset: int,
    raw: bytes | None,
    code: str,
    message: str,
    service: str,
    now_ms: int,
    event_id: str | None = None,
) -> dict[str, object]:
    """The DeadLetter record (schemas/DeadLetter.avsc) of a message from where it came."""
    return {
        "source_topic": source_topic,
        "source_partition": source_partition,
        "source_offset": source_offset,
        "raw": raw or b"",
        "error_code": str(code),
        "message": message,
        "event_id": event_id,
        "service": service,
        "occurred_at_ms": now_ms,
    }
