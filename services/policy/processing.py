"""The abstain decision: calibrate, compare with the model version's threshold."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from confluent_kafka import Message

from services.policy.metrics import PolicyMetrics
from shared.batches import DecisionColumns, PredictionColumns
from shared.calibration_map import IDENTITY, CalibrationMap, from_registry
from shared.codec import AvroCodec, Decoded
from shared.pipeline import Output
from shared.registry_view import RegisteredVersion, RegistryView
from shared.topics import Topics


def decide(
    cols: PredictionColumns,
    threshold: float,
    calibration: CalibrationMap,
    threshold_source: str,
    now_ms: int,
) -> DecisionColumns:
    """Status ``review`` where calibrated confidence < threshold, else ``auto``."""
    calibrated = calibration.apply(
        cols.confidences, cols.probabilities, cols.logits, cols.class_labels
    )
    return DecisionColumns(
        predictions=cols,
        calibrated_confidences=calibrated,
        review=calibrated < threshold,
        threshold=threshold,
        threshold_source=threshold_source,
        calibrator_version=calibration.version,
        decided_at_ms=now_ms,
    )


class PolicyProcessor:
    def __init__(
        self,
        topics: Topics,
        codec: AvroCodec,
        registry: RegistryView,
        default_threshold: float,
        metrics: PolicyMetrics | None = None,
    ) -> None:
        self._topics = topics
        self._codec = codec
        self._registry = registry
        self._default = default_threshold
        self._metrics = metrics
        self._maps: dict[tuple[str, str | None], CalibrationMap] = {}

    def _calibration(self, entry: RegisteredVersion) -> CalibrationMap:
        key = (entry.calibrator_version, entry.calibrator)
        cached = self._maps.get(key)
        if cached is None:
            cached = self._maps[key] = from_registry(*key)
        return cached

    def decide_batch(self, cols: PredictionColumns, now_ms: int) -> DecisionColumns:
        entry = self._registry.get(cols.key)
        if entry is None:
            decision = decide(cols, self._default, IDENTITY, "default", now_ms)
        else:
            if cols.model_version_id is None:
                cols.model_version_id = entry.id
            decision = decide(
                cols, entry.abstain_threshold, self._calibration(entry), "registry", now_ms
            )
        if self._metrics is not None:
            self._count(decision, entry)
        return decision

    async def __call__(self, messages: Sequence[Message]) -> list[Output]:
        now_ms = int(time.time() * 1000)
        out = []
        for m in messages:
            decoded = self._codec.decode(m.value(), {"PredictionBatch"})
            if not isinstance(decoded, Decoded):
                # Ingest validated every batch; anything else is a bug upstream: keep it.
                out.append(self._dead_letter(m, decoded.code, decoded.message, now_ms))
                continue
            decision = self.decide_batch(PredictionColumns.from_record(decoded.record), now_ms)
            out.append(
                Output(
                    self._topics.decisions,
                    decision.key.encode(),
                    self._codec.encode("DecisionBatch", decision.to_record()),
                )
            )
        return out

    def _dead_letter(self, m: Message, code: str, message: str, now_ms: int) -> Output:
        record = {
            "source_topic": str(m.topic()),
            "source_partition": int(m.partition() or 0),
            "source_offset": int(m.offset() or 0),
            "raw": m.value() or b"",
            "error_code": str(code),
            "message": message,
            "event_id": None,
            "service": "policy",
            "occurred_at_ms": now_ms,
        }
        return Output(self._topics.deadletter, None, self._codec.encode("DeadLetter", record))

    def _count(self, decision: DecisionColumns, entry: RegisteredVersion | None) -> None:
        assert self._metrics is not None
        model = entry.name if entry is not None else "unregistered"
        n_review = int(decision.review.sum())
        self._metrics.decisions.labels(model, "review").inc(n_review)
        self._metrics.decisions.labels(model, "auto").inc(len(decision) - n_review)
        if entry is None:
            self._metrics.unregistered.inc(len(decision))
        lat = (decision.decided_at_ms - decision.predictions.event_time_ms) / 1000.0
        for value in np.clip(lat, 0, None).tolist():
            self._metrics.decision_latency.observe(value)
