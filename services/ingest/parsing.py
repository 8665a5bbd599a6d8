"""Decoding and validation of consumed messages: pure, no broker and no Redis.

Every message of a consumed batch becomes either rows of columnar predictions or labels
(each row remembering which message it came from) or dead letters with a stable code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from shared.contracts.batches import (
    LabelColumns,
    PredictionColumns,
    Record,
    concat_predictions,
    runs_of,
)
from shared.contracts.codec import AvroCodec
from shared.contracts.errors import ErrorCode, Fault
from shared.contracts.limits import now_ms
from shared.contracts.validation import (
    Limits,
    check_batch_record,
    check_batch_rows,
    clean_label_batch,
    group_events,
    group_labels,
    validate_columns,
)

PREDICTION_TYPES = frozenset({"InferenceEvent", "PredictionBatch"})
LABEL_TYPES = frozenset({"Label", "LabelBatch"})


@dataclass(frozen=True, slots=True)
class Source:
    """One consumed message."""

    topic: str
    partition: int
    offset: int
    value: bytes | None

    @property
    def position(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"


@dataclass(slots=True)
class Parsed:
    predictions: list[tuple[PredictionColumns, list[int]]] = field(default_factory=list)
    """Valid prediction columns and, per row, the index of its source message."""
    labels: list[tuple[LabelColumns, list[int]]] = field(default_factory=list)
    dead: list[tuple[int, Fault]] = field(default_factory=list)
    """(source message index, why it was rejected)."""


def parse(
    sources: Sequence[Source], prediction_topic: str, codec: AvroCodec, limits: Limits
) -> Parsed:
    out = Parsed()
    singles: list[tuple[int, Record]] = []
    label_msgs: list[tuple[int, Record, bool]] = []
    batches: list[tuple[PredictionColumns, int]] = []
    for i, src in enumerate(sources):
        is_prediction = src.topic == prediction_topic
        decoded = codec.decode(
            src.value, PREDICTION_TYPES if is_prediction else LABEL_TYPES, columnar=True
        )
        if isinstance(decoded, Fault):
            out.dead.append((i, decoded))
        elif decoded.name == "InferenceEvent":
            singles.append((i, decoded.record))
        elif decoded.name == "PredictionBatch":
            fault = check_batch_record(decoded.record, limits)
            if fault:
                out.dead.append((i, fault))
            else:
                batches.append((PredictionColumns.from_record(decoded.record), i))
        else:
            label_msgs.append((i, decoded.record, decoded.name == "LabelBatch"))
    columns = _batch_rows(batches, limits, out.dead)
    grouped, faults = group_events(singles, limits)
    out.dead.extend(faults)
    columns.extend((rows.columns, rows.refs) for rows in grouped)
    for cols, refs in columns:
        mask, faults = validate_columns(cols, limits)
        out.dead.extend((refs[row], fault) for row, fault in faults)
        if mask.all():
            out.predictions.append((cols, refs))
        elif mask.any():
            keep = np.flatnonzero(mask)
            out.predictions.append((cols.take(keep), [refs[k] for k in keep.tolist()]))
    out.labels, faults = _labels(label_msgs, limits)
    out.dead.extend(faults)
    return out


def _labels(
    messages: list[tuple[int, Record, bool]], limits: Limits
) -> tuple[list[tuple[LabelColumns, list[int]]], list[tuple[int, Fault]]]:
    """Labels grouped by (tenant, model version or unknown), rows in message order. When
    every message is a LabelBatch shown clean as a whole, its columns are used as they are;
    otherwise every row is checked and grouped on its own (the same groups and order)."""
    now = now_ms()
    groups: dict[tuple[str, str | None, str | None], list[tuple[int, LabelColumns]]] = {}
    for ref, rec, batch in messages:
        cols = clean_label_batch(rec, limits, now) if batch else None
        if cols is None:
            break  # some row may be at fault: check them all, one by one
        groups.setdefault((cols.tenant, cols.model_name, cols.model_version), []).append(
            (ref, cols)
        )
    else:
        return [_joined_labels(members) for members in groups.values()], []
    rows: list[tuple[int, Record]] = []
    dead: list[tuple[int, Fault]] = []
    for ref, rec, batch in messages:
        if not batch:
            rows.append((ref, rec))
        elif fault := _expand_label_batch(ref, rec, rows):
            dead.append((ref, fault))
    labels, faults = group_labels(rows, limits, now)
    return labels, dead + faults


def _joined_labels(members: list[tuple[int, LabelColumns]]) -> tuple[LabelColumns, list[int]]:
    first = members[0][1]
    if len(members) == 1:
        return first, [members[0][0]] * len(first)
    return (
        LabelColumns(
            tenant=first.tenant,
            model_name=first.model_name,
            model_version=first.model_version,
            event_ids=[e for _, c in members for e in c.event_ids],
            ground_truths=[g for _, c in members for g in c.ground_truths],
            sources=[v for _, c in members for v in c.sources],
            label_time_ms=np.concatenate([c.label_time_ms for _, c in members]),
        ),
        [ref for ref, c in members for _ in range(len(c))],
    )


def _batch_rows(
    batches: list[tuple[PredictionColumns, int]],
    limits: Limits,
    dead: list[tuple[int, Fault]],
) -> list[tuple[PredictionColumns, list[int]]]:
    """The rows of PredictionBatch messages that pass the per-event structural checks, as
    the runs of :func:`shared.contracts.batches.join_runs` (the batches of one model version
    and shape, in order), each row with the index of its message. The checks, like the
    numeric ones after them, run once per run and not once per message: their cost is a
    few dozen array operations whatever the number of rows, and at moderate rates
    producers send many small messages."""
    out: list[tuple[PredictionColumns, list[int]]] = []
    for run in runs_of([cols for cols, _ in batches]):
        cols = concat_predictions([batches[i][0] for i in run])
        refs = [batches[i][1] for i in run for _ in range(len(batches[i][0]))]
        faults = check_batch_rows(cols, limits)
        dead.extend((refs[row], f) for row, f in faults)
        if faults:
            bad = {row for row, _ in faults}
            good = [i for i in range(len(cols)) if i not in bad]
            cols, refs = cols.take(good), [refs[i] for i in good]
        if len(cols):
            out.append((cols, refs))
    return out


def _expand_label_batch(ref: int, rec: Record, rows: list[tuple[int, Record]]) -> Fault | None:
    n = len(rec["event_ids"])
    for name in ("ground_truths", "sources", "label_time_ms"):
        if len(rec[name]) != n:
            return Fault(
                ErrorCode.BATCH_SHAPE,
                f"{name} has {len(rec[name])} entries; event_ids say {n}",
                name,
            )
    times = rec["label_time_ms"]
    # Per-label checks want Python ints (a columnar decode gives an int64 array).
    times = times.tolist() if isinstance(times, np.ndarray) else times
    for eid, truth, source, t in zip(
        rec["event_ids"], rec["ground_truths"], rec["sources"], times, strict=True
    ):
        rows.append(
            (
                ref,
                {
                    "event_id": eid,
                    "tenant": rec["tenant"],
                    "model_name": rec.get("model_name"),
                    "model_version": rec.get("model_version"),
                    "ground_truth": truth,
                    "source": source,
                    "label_time_ms": t,
                },
            )
        )
    return None
