"""Publishing the calibrator's alerts (run results, rollout transitions) at least once.

Both kinds are announced from rows of PostgreSQL not yet marked announced; a row is marked
only after every alert of the round was acknowledged by Kafka, so a crash in between
publishes them again, and their ids (derived from the row) let the recorder store each once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Producer

from shared.contracts.codec import AvroCodec, Record

logger = logging.getLogger(__name__)

FLUSH_SECONDS = 30.0


async def publish_alerts(
    producer: Producer,
    topic: str,
    codec: AvroCodec,
    alerts: Sequence[tuple[str, Record]],
    what: str,
) -> bool:
    """Produce every (model version key, Alert record) and wait for Kafka; True when all
    were acknowledged (the caller then marks its rows announced), else log and False."""
    errors: list[str] = []

    def done(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    for key, alert in alerts:
        producer.produce(topic, codec.encode("Alert", alert), key.encode(), on_delivery=done)
    remaining = await asyncio.to_thread(producer.flush, FLUSH_SECONDS)
    if remaining or errors:
        logger.warning("%s not delivered (%s); retrying", what, errors or remaining)
        return False
    return True
