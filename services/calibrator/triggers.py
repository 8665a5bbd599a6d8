"""Alerts that start a run: an ECE or Brier alert, or a drift alert, of a registered
model version. The consumer of ``<ns>.alerts`` queues one run per alert (the run id is
derived from the alert id, so a replayed alert queues nothing) before its offsets commit.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Message

from services.calibrator.metrics import CalibratorMetrics
from services.calibrator.store import RUN_NAMESPACE, CalibratorStore
from shared.contracts.codec import AvroCodec, Decoded
from shared.runtime.pipeline import Output

logger = logging.getLogger(__name__)

CALIBRATION_METRICS = frozenset({"ece", "brier"})


def trigger_of(alert: dict[str, Any]) -> str | None:
    """``calibration_alert``, ``drift_alert`` or None (not a trigger)."""
    if alert["severity"] not in ("warning", "critical"):
        return None
    if alert["kind"] == "calibration" and alert["metric"] in CALIBRATION_METRICS:
        return "calibration_alert"
    if alert["kind"] == "drift":
        return "drift_alert"
    return None


class AlertTriggers:
    """The alert consumer's processing step: queue runs, produce nothing."""

    def __init__(
        self, codec: AvroCodec, store: CalibratorStore, metrics: CalibratorMetrics | None = None
    ) -> None:
        self._codec = codec
        self._store = store
        self._metrics = metrics

    async def __call__(self, messages: Sequence[Message]) -> list[Output]:
        for m in messages:
            decoded = self._codec.decode(m.value(), {"Alert"})
            if not isinstance(decoded, Decoded):
                # Not ours to dead-letter: the recorder reads this topic too and does.
                logger.warning(
                    "alert at %s[%d]@%d not decodable: %s",
                    m.topic(), m.partition(), m.offset(), decoded.message,
                )  # fmt: skip
                continue
            alert = decoded.record
            trigger = trigger_of(alert)
            if trigger is None:
                continue
            model = await self._store.model_by_key(
                alert["tenant"], alert["model_name"], alert["model_version"]
            )
            if model is None:
                continue
            detail = {
                "alert_id": alert["alert_id"],
                "metric": alert["metric"],
                "value": alert["value"],
                "threshold": alert["threshold"],
                "window": alert["window"],
            }
            run_id = uuid.uuid5(RUN_NAMESPACE, f"alert|{alert['alert_id']}")
            state = await self._store.enqueue(run_id, model, trigger, detail)
            if self._metrics is not None:
                self._metrics.triggers.labels(trigger, state).inc()
        return []

    def batch_done(self, n_messages: int, seconds: float) -> None:
        if self._metrics is not None:
            self._metrics.batch_done(n_messages, seconds)

    def lag(self, partition_lag: dict[tuple[str, int], int]) -> None:
        if self._metrics is not None:
            self._metrics.lag(partition_lag)
