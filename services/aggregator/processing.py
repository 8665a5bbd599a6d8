"""The aggregator step: join labels with their predictions and count them into buckets.

A label lands in the bucket of its prediction's event time however late it comes: an
unlabeled prediction leaves a compact record (event time, confidence, label, probabilities)
that the label later finds; a label that comes first waits as a pending record that the
prediction finds. Each prediction is counted labeled once: its record is replaced by a
``labeled`` marker when the label lands.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from confluent_kafka import Message

from services.aggregator.counters import (
    FieldSums,
    Increments,
    LabeledEvents,
    decision_increments,
    estimate_increments,
    labeled_increments,
    new_increments,
)
from services.aggregator.metrics import AggregatorMetrics
from services.aggregator.store import AggregatorStore
from shared.contracts.batches import DecisionColumns, LabelColumns
from shared.contracts.codec import AvroCodec, Decoded
from shared.contracts.dead_letters import dead_letter
from shared.contracts.topics import Topics
from shared.recalibration.segments import encode_pair, segment_id
from shared.recalibration.serving import Paired, paired
from shared.runtime import clock
from shared.runtime.pipeline import Output
from shared.runtime.pipeline_metrics import observe_many
from shared.windows.rollout import decision_fields, label_fields

logger = logging.getLogger(__name__)
LABELED = "L"
"""Value of ``Ppred:{tenant}/{event id}`` once the prediction is labeled."""
FIELD_SEP = "\x1f"
"""Separates the fields of a prediction or pending-label record (unit separator)."""
CLASS_SEP = "\x1e"
"""Separates the class labels inside a prediction record (record separator)."""
_SEGMENT_ESCAPES = (("%", "%25"), (FIELD_SEP, "%1F"))
"""A segment is the caller's text (a category or metadata value): escaped in a record, so a
separator inside it cannot shift the fields after it."""
MAX_APPLY_EVENTS = 5_000
"""Events (predictions and labels) per Lua call: Redis runs one script at a time, so a
bigger call would hold up every other client, the gateway's reads included."""


@dataclass(slots=True)
class PredictionRecord:
    model: str
    event_ms: int
    confidence: float
    predicted: str
    classes: list[str]
    probabilities: list[float] | None
    slot: int = -1
    """Start of the arrival slot it was stored in (its unlabeled count); −1 when unknown."""
    calibrated: float | None = None
    """Calibrated confidence the policy decided on; None when unknown (an older record)."""
    auto: bool = False
    """Auto-accepted (not withheld for review)."""
    segment: str = ""
    """``<segment key>=<value>`` of its calibration segment; empty when it has none."""
    shadow_version: str = ""
    """Calibrator under rollout that ran beside the deciding map ("" = none)."""
    active: float | None = None
    """The active map's calibrated confidence (with a candidate beside it)."""
    candidate: float | None = None
    """The candidate map's calibrated confidence."""
    canary: bool = False
    """Decided by the candidate (canary arm)."""

    def encode(self) -> str:
        fields = _record_fields(
            self.model,
            self.event_ms,
            self.confidence,
            self.predicted,
            self.classes,
            self.probabilities,
            self.slot,
            self.calibrated,
            self.auto,
            self.segment,
        )
        if self.shadow_version:
            fields += [
                self.shadow_version,
                repr(self.active),
                repr(self.candidate),
                "1" if self.canary else "0",
            ]
        return FIELD_SEP.join(fields)

    @classmethod
    def decode(cls, raw: str) -> PredictionRecord:
        model, ms, conf, predicted, classes, probs, *rest = raw.split(FIELD_SEP)
        shadow = rest[4:8] if len(rest) >= 8 else None
        return cls(
            model,
            int(ms),
            float(conf),
            predicted,
            classes.split(CLASS_SEP) if classes else [],
            [float(p) for p in probs.split(",")] if probs else None,
            int(rest[0]) if rest else -1,
            float(rest[1]) if len(rest) > 1 and rest[1] else None,
            len(rest) > 2 and rest[2] == "1",
            _unescape_segment(rest[3]) if len(rest) > 3 else "",
            *((shadow[0], float(shadow[1]), float(shadow[2]), shadow[3] == "1") if shadow else ()),
        )


def _record_fields(
    model: str,
    event_ms: int,
    confidence: float,
    predicted: str,
    classes: list[str],
    probabilities: list[float] | None,
    slot: int,
    calibrated: float | None,
    auto: bool,
    segment: str,
) -> list[str]:
    """The fields of a prediction record before the optional shadow ones (one encoding for
    :meth:`PredictionRecord.encode` and :meth:`BatchRows.encoded`)."""
    return [
        model,
        str(event_ms),
        repr(confidence),
        predicted,
        CLASS_SEP.join(classes),
        "" if probabilities is None else ",".join(map(repr, probabilities)),
        str(slot),
        "" if calibrated is None else repr(calibrated),
        "1" if auto else "0",
        _escape_segment(segment),
    ]


def _escape_segment(segment: str) -> str:
    for raw, escaped in _SEGMENT_ESCAPES:
        segment = segment.replace(raw, escaped)
    return segment


def _unescape_segment(text: str) -> str:
    for raw, escaped in reversed(_SEGMENT_ESCAPES):
        text = text.replace(escaped, raw)
    return text


def encode_pending_label(truth: str, label_ms: int) -> str:
    """``Ppending:{tenant}/{event id}``: a label that came before its prediction."""
    return f"{truth}{FIELD_SEP}{label_ms}"


def decode_pending_label(raw: str) -> tuple[str, int]:
    """(ground truth, label time in ms) of an ``encode_pending_label`` value."""
    truth, label_ms = raw.rsplit(FIELD_SEP, 1)
    return truth, int(label_ms)


@dataclass(slots=True)
class Joined:
    record: PredictionRecord
    truth: str
    label_ms: int


class AggregatorProcessor:
    def __init__(
        self,
        topics: Topics,
        codec: AvroCodec,
        store: AggregatorStore,
        metrics: AggregatorMetrics | None = None,
        estimate: bool = True,
    ) -> None:
        self._estimate = estimate
        """Keep the before-labels sums (CBPE, calibrated fine histogram)."""
        self._topics = topics
        self._codec = codec
        self._store = store
        self._metrics = metrics
        self.events_counted = 0
        self.labels_joined = 0

    async def __call__(self, messages: Sequence[Message]) -> list[Output]:
        units = await self._store.fence.units(messages)
        todo = [m for unit in units for m in unit]
        is_fresh = {id(m) for m in todo}
        now_ms = clock.now_ms()
        dead: list[Output] = []
        decoded_batch: list[tuple[Message, DecisionColumns | LabelColumns]] = []
        # Every message is decoded, not only the fresh ones: a replay after a crash then sends
        # an undecodable message's dead letter again rather than never.
        for m in messages:
            decoded = self._codec.decode(m.value(), {"DecisionBatch", "LabelBatch"}, columnar=True)
            if not isinstance(decoded, Decoded):
                dead.append(
                    dead_letter(
                        self._topics.deadletter,
                        self._codec,
                        m,
                        str(decoded.code),
                        decoded.message,
                        "aggregator",
                        now_ms,
                    )
                )
            elif id(m) not in is_fresh:
                continue
            elif decoded.name == "DecisionBatch":
                decoded_batch.append((m, DecisionColumns.from_record(decoded.record)))
            else:
                decoded_batch.append((m, LabelColumns.from_record(decoded.record)))
        if not todo:
            return dead
        # Applied in parts of a bounded size, in offset order, each atomic with its own
        # offsets: one Lua call never holds Redis for long, and a replay skips what a part
        # already applied (the filter above) and applies the rest.
        for unit in units:
            for part in _parts(unit, decoded_batch):
                await self._apply(part.messages, part.decisions, part.labels)
        return dead

    async def _apply(
        self,
        messages: list[Message],
        decisions: list[DecisionColumns],
        labels: list[LabelColumns],
    ) -> None:
        store = self._store
        now_s = int(time.time())
        plan = _JoinPlan(store, slot=now_s // store.slot_width * store.slot_width)
        # Predictions: count them; join labels that waited; leave records for the rest.
        all_ids = [
            (d.predictions.tenant, eid) for d in decisions for eid in d.predictions.event_ids
        ]
        waiting = dict(
            zip(all_ids, await store.mget([store.pending_key(*e) for e in all_ids]), strict=True)
        )
        for key, (event_ms, calibrated, review) in _by_model(decisions).items():
            sums = FieldSums(key, event_ms)
            decision_increments(plan.inc, key, event_ms, review, sums)
            if self._estimate:
                estimate_increments(plan.inc, key, event_ms, calibrated, review, sums)
            sums.into(plan.inc)
        for d in decisions:
            plan.add_predictions(d, waiting)
            plan.add_rollout_decisions(d)
        # Labels: find their prediction in this batch or in Redis, else wait for it.
        label_ids = [(lbl.tenant, eid) for lbl in labels for eid in lbl.event_ids]
        known = dict(
            zip(label_ids, await store.mget([store.pred_key(*e) for e in label_ids]), strict=True)
        )
        for lbl in labels:
            plan.add_labels(lbl, known)
        plan.store_unlabeled()
        for ev in _labeled_events(plan.joined):
            labeled_increments(plan.inc, ev, self._estimate)
        plan.add_rollout_labels()
        applied = await store.apply(
            messages,
            plan.inc,
            plan.sets,
            plan.deletes,
            plan.counts,
            now_s,
            segment_windows(plan.joined),
            plan.rollout,
        )
        if applied:
            self._count_applied(len(all_ids), plan.joined)

    def _count_applied(self, predictions: int, joined: list[Joined]) -> None:
        self.events_counted += predictions
        self.labels_joined += len(joined)
        if self._metrics is not None:
            self._metrics.events.labels("prediction").inc(predictions)
            self._metrics.events.labels("label").inc(len(joined))
            delays = [max(j.label_ms - j.record.event_ms, 0) / 1000 for j in joined]
            observe_many(self._metrics.label_delay, delays)


class BatchRows:
    """One decision batch's columns as Python values, from which a row's join record is
    built only when a label joins it now, and otherwise encoded straight to its text (the
    text :meth:`PredictionRecord.encode` gives): most predictions are stored unlabeled, and
    a record object per event cost more than the rest of their path."""

    __slots__ = (
        "auto", "calibrated", "classes", "conf", "event_ms", "key", "pair", "predicted",
        "probs", "segments",
    )  # fmt: skip

    def __init__(self, d: DecisionColumns) -> None:
        p = d.predictions
        n = len(p)
        self.key = p.key
        self.event_ms: list[int] = p.event_time_ms.tolist()
        self.conf: list[float] = p.confidences.tolist()
        self.predicted = p.predicted_labels
        self.classes = p.class_labels
        # A row of probabilities that is missing (NaN) leaves the record without them.
        self.probs: list[list[float] | None] = (
            [None] * n
            if p.probabilities is None
            else [row if row and row[0] == row[0] else None for row in p.probabilities.tolist()]
        )
        self.calibrated: list[float] = d.calibrated_confidences.tolist()
        self.auto: list[bool] = (~d.review).tolist()
        key, values = d.segment_key, d.segments
        self.segments = (
            [segment_id(key, v) if v else "" for v in values]
            if key is not None and values is not None and len(values) == n
            else [""] * n
        )
        pair = decision_pair(d)
        self.pair = pair if pair is not None and pair.candidate_version else None

    def record(self, i: int) -> PredictionRecord:
        """The join record of row ``i``."""
        row = self.probs[i]
        rec = PredictionRecord(
            self.key,
            self.event_ms[i],
            self.conf[i],
            self.predicted[i],
            self.classes if row else [],
            row,
            calibrated=self.calibrated[i],
            auto=self.auto[i],
            segment=self.segments[i],
        )
        if self.pair is not None:
            rec.shadow_version = self.pair.candidate_version
            rec.active = float(self.pair.active[i])
            rec.candidate = float(self.pair.candidate[i])
            rec.canary = bool(self.pair.canary[i])
        return rec

    def encoded(self, i: int, slot: int) -> str:
        """``record(i)`` stored in arrival slot ``slot``, encoded."""
        if self.pair is not None:
            rec = self.record(i)
            rec.slot = slot
            return rec.encode()
        row = self.probs[i]
        return FIELD_SEP.join(
            _record_fields(
                self.key,
                self.event_ms[i],
                self.conf[i],
                self.predicted[i],
                self.classes if row else [],
                row,
                slot,
                self.calibrated[i],
                self.auto[i],
                self.segments[i],
            )
        )


def decision_pair(d: DecisionColumns) -> Paired | None:
    """Both maps' outputs on every event of a decision batch with a candidate beside."""
    return paired(
        d.calibrated_confidences,
        d.review,
        d.calibrator_versions,
        d.shadow_calibrator_version,
        d.shadow_confidences,
        d.shadow_review,
    )


@dataclass(slots=True)
class _JoinPlan:
    """What one part of a batch does to Redis: counter increments, records to set (key,
    value, TTL) and delete, and changes of the unlabeled count per (model, arrival slot)."""

    store: AggregatorStore
    slot: int
    inc: Increments = field(default_factory=new_increments)
    sets: list[tuple[str, str, int]] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    counts: dict[tuple[str, int], int] = field(default_factory=dict)
    joined: list[Joined] = field(default_factory=list)
    rollout: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    """Increments of the rollout hashes, by (model key, candidate version)."""
    batch_preds: dict[tuple[str, str], tuple[BatchRows, int]] = field(default_factory=dict)
    """Predictions of this batch no label has joined yet: their batch and row."""
    labeled_now: set[tuple[str, str]] = field(default_factory=set)

    def add_predictions(self, d: DecisionColumns, waiting: dict[tuple[str, str], Any]) -> None:
        """Join each prediction with the label that waited for it, or keep it for this
        batch's labels (and, unlabeled, for later ones)."""
        store, tenant = self.store, d.predictions.tenant
        rows = BatchRows(d)
        for i, eid in enumerate(d.predictions.event_ids):
            pending = waiting.get((tenant, eid))
            if pending is not None:
                truth, label_ms = decode_pending_label(pending)
                self.joined.append(Joined(rows.record(i), truth, label_ms))
                self.deletes.append(store.pending_key(tenant, eid))
                self.sets.append((store.pred_key(tenant, eid), LABELED, store.horizon))
            else:
                self.batch_preds[(tenant, eid)] = (rows, i)

    def add_labels(self, lbl: LabelColumns, known: dict[tuple[str, str], Any]) -> None:
        """Join each label with its prediction from this batch or from Redis, else leave it
        pending for the prediction to find."""
        store = self.store
        for eid, truth, label_ms in zip(
            lbl.event_ids, lbl.ground_truths, lbl.label_time_ms.tolist(), strict=True
        ):
            scoped = (lbl.tenant, eid)
            if scoped in self.labeled_now:
                continue  # a second label of the same prediction counts nothing
            in_batch = self.batch_preds.pop(scoped, None)
            found = None if in_batch is None else in_batch[0].record(in_batch[1])
            raw = known.get(scoped)
            stored = raw is not None and raw != LABELED
            if found is None and stored:
                found = PredictionRecord.decode(str(raw))
            if found is not None:
                self.labeled_now.add(scoped)
                self.joined.append(Joined(found, truth, label_ms))
                self.sets.append((store.pred_key(*scoped), LABELED, store.horizon))
                if stored and found.slot >= 0:
                    key = (found.model, found.slot)
                    self.counts[key] = self.counts.get(key, 0) - 1
            elif raw != LABELED:
                value = encode_pending_label(truth, label_ms)
                self.sets.append((store.pending_key(*scoped), value, store.horizon))

    def _merge_rollout(self, model: str, candidate: str, fields: dict[str, int]) -> None:
        into = self.rollout.setdefault((model, candidate), {})
        for f, v in fields.items():
            into[f] = into.get(f, 0) + v

    def add_rollout_decisions(self, d: DecisionColumns) -> None:
        pair = decision_pair(d)
        if pair is not None:
            fields = decision_fields(
                pair.active_review, pair.candidate_review, pair.canary, d.review
            )
            self._merge_rollout(d.key, pair.candidate_version, fields)

    def add_rollout_labels(self) -> None:
        """Paired losses of the joined events that ran with a candidate beside."""
        groups: dict[tuple[str, str], list[Joined]] = {}
        for j in self.joined:
            if j.record.shadow_version and j.record.active is not None:
                groups.setdefault((j.record.model, j.record.shadow_version), []).append(j)
        for (model, candidate), items in groups.items():
            fields = label_fields(
                np.array([j.record.active for j in items], dtype=np.float64),
                np.array([j.record.candidate for j in items], dtype=np.float64),
                np.array([j.truth == j.record.predicted for j in items]),
                np.array([j.record.canary for j in items]),
            )
            self._merge_rollout(model, candidate, fields)

    def store_unlabeled(self) -> None:
        """The batch's predictions no label joined wait in Redis, counted in their slot."""
        store, slot, counts = self.store, self.slot, self.counts
        for scoped, (rows, i) in self.batch_preds.items():
            self.sets.append((store.pred_key(*scoped), rows.encoded(i, slot), store.horizon))
            key = (rows.key, slot)
            counts[key] = counts.get(key, 0) + 1


@dataclass(slots=True)
class _Part:
    messages: list[Message]
    decisions: list[DecisionColumns]
    labels: list[LabelColumns]
    events: int = 0


def _by_model(
    decisions: list[DecisionColumns],
) -> dict[str, tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.bool_]]]:
    """(event times, calibrated confidences, review flags) of every batch of each model
    version, joined: the increments are sums, and one numpy grouping per model version
    and iteration costs far less than one per message (a message holds a few events at
    moderate rates)."""
    grouped: dict[str, list[DecisionColumns]] = {}
    for d in decisions:
        grouped.setdefault(d.key, []).append(d)
    return {
        key: (
            np.concatenate([d.predictions.event_time_ms for d in ds]),
            np.concatenate([d.calibrated_confidences for d in ds]),
            np.concatenate([d.review for d in ds]),
        )
        for key, ds in grouped.items()
    }


def _parts(
    messages: list[Message], decoded: list[tuple[Message, DecisionColumns | LabelColumns]]
) -> list[_Part]:
    """Consecutive groups of messages holding at most ``MAX_APPLY_EVENTS`` events each (a
    single larger message makes a group of its own); undecodable messages ride along, so
    their offsets are stored too."""
    columns = {id(m): cols for m, cols in decoded}
    parts = [_Part([], [], [])]
    for m in messages:
        cols = columns.get(id(m))
        size = len(cols) if cols is not None else 0
        if parts[-1].events and parts[-1].events + size > MAX_APPLY_EVENTS:
            parts.append(_Part([], [], []))
        part = parts[-1]
        part.messages.append(m)
        part.events += size
        if isinstance(cols, DecisionColumns):
            part.decisions.append(cols)
        elif cols is not None:
            part.labels.append(cols)
    return [p for p in parts if p.messages]


def segment_windows(joined: list[Joined]) -> dict[tuple[str, str], list[int]]:
    """(model, segment) → its newly labeled events, encoded, in join order."""
    out: dict[tuple[str, str], list[int]] = {}
    for j in joined:
        rec = j.record
        if rec.segment:
            pair = encode_pair(rec.confidence, j.truth == rec.predicted)
            out.setdefault((rec.model, rec.segment), []).append(pair)
    return out


def _labeled_events(joined: list[Joined]) -> list[LabeledEvents]:
    by_model: dict[str, list[Joined]] = {}
    for j in joined:
        by_model.setdefault(j.record.model, []).append(j)
    out = []
    for model, items in by_model.items():
        event_ms = np.array([j.record.event_ms for j in items], dtype=np.int64)
        conf = np.array([j.record.confidence for j in items])
        correct = np.array([j.truth == j.record.predicted for j in items])
        delay = (np.array([j.label_ms for j in items]) - event_ms) / 1000.0
        classes = next((j.record.classes for j in items if j.record.probabilities), None)
        probs = true_idx = None
        if classes:
            index = {c: k for k, c in enumerate(classes)}
            probs = np.array(
                [
                    j.record.probabilities
                    if j.record.probabilities and j.record.classes == classes
                    else [np.nan] * len(classes)
                    for j in items
                ]
            )
            true_idx = np.array([index.get(j.truth, -1) for j in items], dtype=np.int64)
        out.append(
            LabeledEvents(
                model,
                event_ms,
                conf,
                correct,
                np.maximum(delay, 0.0),
                probs,
                classes,
                true_idx,
                np.array(
                    [np.nan if j.record.calibrated is None else j.record.calibrated for j in items]
                ),
                np.array([j.record.auto for j in items]),
            )
        )
    return out
