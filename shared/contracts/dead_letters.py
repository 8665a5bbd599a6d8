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
    record = {
        "source_topic": str(m.topic()),
        "source_partition": int(m.partition() or 0),
        "source_offset": int(m.offset() or 0),
        "raw": m.value() or b"",
        "error_code": str(code),
        "message": message,
        "event_id": event_id,
        "service": service,
        "occurred_at_ms": now_ms,
    }
    return Output(topic, None, codec.encode("DeadLetter", record))
