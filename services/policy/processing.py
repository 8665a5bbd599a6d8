"""The abstain decision: calibrate, compare with the model version's threshold.

One PredictionBatch in, one DecisionBatch out, keyed by the same model version key, so one
model's decisions keep the order of its predictions. A message that is not a well-formed
PredictionBatch becomes a dead letter; the pipeline goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from confluent_kafka import Message

from services.policy.metrics import PolicyMetrics
from services.policy.registry_state import RegistryState
from shared.contracts.batches import DecisionColumns, FloatArray, PredictionColumns
from shared.contracts.codec import AvroCodec, Decoded
from shared.contracts.dead_letters import dead_letter
from shared.contracts.errors import ErrorCode
from shared.contracts.topics import Topics
from shared.contracts.validation import DEFAULT_LIMITS, Limits, check_batch_record
from shared.recalibration.maps import CalibrationMap
from shared.recalibration.segments import batch_segments
from shared.recalibration.serving import Candidate, ServePlan, serve
from shared.runtime import clock
from shared.runtime.pipeline import Output
from shared.runtime.pipeline_metrics import observe_many

PREDICTION_BATCH = {"PredictionBatch"}
SegmentMaps = Callable[[str, str], Mapping[str, CalibrationMap]]
"""(model version key, segment key) → segment value → map (``SegmentMapView.maps_for``)."""


def _no_segment_maps(model: str, segment_key: str) -> Mapping[str, CalibrationMap]:
    return {}


def decide(
    cols: PredictionColumns,
    threshold: float,
    calibration: CalibrationMap,
    threshold_source: str,
    now_ms: int,
    candidate: Candidate | None = None,
    segment_key: str | None = None,
    segment_maps: Mapping[str, CalibrationMap] | None = None,
) -> DecisionColumns:
    """Status ``auto`` where calibrated confidence >= threshold, else ``review``.

    A calibrated confidence that is not a number is withheld too: only a confidence shown
    to reach the threshold is let through. A ``candidate`` under rollout runs beside the
    active map (and decides the canary arm): the choice is
    :func:`shared.recalibration.serving.serve`, the one the gateway makes too. With a
    ``segment_key``, each event's segment is recorded and its segment's map (of
    ``segment_maps``) decides it where there is one.
    """
    segments = batch_segments(segment_key, cols)
    served = serve(
        ServePlan(threshold, calibration, candidate, segment_maps or {}),
        cols.event_ids,
        cols.confidences,
        cols.probabilities,
        cols.logits,
        cols.class_labels,
        segments,
    )
    return DecisionColumns(
        predictions=cols,
        calibrated_confidences=served.confidences,
        review=served.review,
        threshold=threshold,
        threshold_source=threshold_source,
        calibrator_version=served.calibrator_version,
        decided_at_ms=now_ms,
        calibrator_versions=served.calibrator_versions,
        segment_key=segment_key,
        segments=segments,
        shadow_calibrator_version=served.shadow_calibrator_version,
        shadow_confidences=served.shadow_confidences,
        shadow_review=served.shadow_review,
    )


@dataclass(slots=True)
class _Tally:
    """Counts of one iteration, published only once its transaction has committed."""

    decisions: dict[tuple[str, str], int] = field(default_factory=dict)
    arms: dict[tuple[str, str], int] = field(default_factory=dict)
    unregistered: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    latencies: list[FloatArray] = field(default_factory=list)


class PolicyProcessor:
    """The pipeline's processing step (and its hooks, so metrics count committed work)."""

    def __init__(
        self,
        topics: Topics,
        codec: AvroCodec,
        registry: RegistryState,
        metrics: PolicyMetrics | None = None,
        limits: Limits = DEFAULT_LIMITS,
        segment_maps: SegmentMaps = _no_segment_maps,
    ) -> None:
        self._segment_maps = segment_maps
        self._topics = topics
        self._codec = codec
        self._registry = registry
        self._metrics = metrics
        self._limits = limits
        self._tally = _Tally()

    def decide_batch(self, cols: PredictionColumns, now_ms: int) -> DecisionColumns:
        rule = self._registry.rule(cols.key)
        if cols.model_version_id is None and rule.model_version_id is not None:
            cols.model_version_id = rule.model_version_id
        segment_maps = (
            None if rule.segment_key is None else self._segment_maps(cols.key, rule.segment_key)
        )
        decision = decide(
            cols,
            rule.threshold,
            rule.calibration,
            rule.threshold_source,
            now_ms,
            rule.candidate,
            rule.segment_key,
            segment_maps,
        )
        self._count(decision, rule.model_label)
        return decision

    async def __call__(self, messages: Sequence[Message]) -> list[Output]:
        self._tally = _Tally()
        now_ms = clock.now_ms()
        out = []
        for m in messages:
            decoded = self._codec.decode(m.value(), PREDICTION_BATCH, columnar=True)
            if not isinstance(decoded, Decoded):
                # Ingest validated every batch; anything else is a bug upstream: keep it.
                out.append(self._dead_letter(m, decoded.code, decoded.message, now_ms))
                continue
            fault = check_batch_record(decoded.record, self._limits)
            if fault is not None:
                out.append(self._dead_letter(m, fault.code, fault.message, now_ms))
                continue
            decision = self.decide_batch(PredictionColumns.from_record(decoded.record), now_ms)
            out.append(
                Output(
                    self._topics.decisions,
                    decision.key.encode(),
                    self._codec.encode("DecisionBatch", decision.to_columnar_record()),
                )
            )
        return out

    def _dead_letter(self, m: Message, code: ErrorCode, message: str, now_ms: int) -> Output:
        self._tally.dead_letters[str(code)] = self._tally.dead_letters.get(str(code), 0) + 1
        return dead_letter(
            self._topics.deadletter, self._codec, m, str(code), message, "policy", now_ms
        )

    def _count(self, decision: DecisionColumns, model: str) -> None:
        tally = self._tally
        n_review = int(decision.review.sum())
        for status, n in (("review", n_review), ("auto", len(decision) - n_review)):
            tally.decisions[(model, status)] = tally.decisions.get((model, status), 0) + n
        candidate = decision.shadow_calibrator_version
        if candidate is not None:
            versions = decision.calibrator_versions or ()
            n_canary = sum(1 for v in versions if v == candidate)
            for arm, n in (("canary", n_canary), ("control", len(decision) - n_canary)):
                tally.arms[(model, arm)] = tally.arms.get((model, arm), 0) + n
        if decision.threshold_source == "default":
            tally.unregistered += len(decision)
        tally.latencies.append(
            (decision.decided_at_ms - decision.predictions.event_time_ms) / 1000.0
        )

    # PipelineHooks: called after an iteration has committed.
    def batch_done(self, n_messages: int, seconds: float) -> None:
        tally, self._tally = self._tally, _Tally()
        if self._metrics is None:
            return
        self._metrics.batch_done(n_messages, seconds)
        for (model, status), n in tally.decisions.items():
            if n:
                self._metrics.decisions.labels(model, status).inc(n)
        for (model, arm), n in tally.arms.items():
            if n:
                self._metrics.arm_decisions.labels(model, arm).inc(n)
        if tally.unregistered:
            self._metrics.unregistered.inc(tally.unregistered)
        for code, n in tally.dead_letters.items():
            self._metrics.dead_letters.labels(code).inc(n)
        if tally.latencies:
            latencies = np.clip(np.concatenate(tally.latencies), 0.0, None)
            observe_many(self._metrics.decision_latency, latencies)

    def lag(self, partition_lag: dict[tuple[str, int], int]) -> None:
        if self._metrics is not None:
            self._metrics.lag(partition_lag)
