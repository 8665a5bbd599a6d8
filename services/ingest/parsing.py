"""Decoding and validation of consumed messages: pure, no broker and no Redis.

Every message of a consumed batch becomes either rows of columnar predictions or labels
(each row remembering which message it came from) or dead letters with a stable code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from shared.contracts.batches import LabelColumns, PredictionColumns, Record
from shared.contracts.codec import AvroCodec, Decoded
from shared.contracts.errors import ErrorCode, Fault
from shared.contracts.validation import (
    Limits,
    check_batch_record,
    check_batch_rows,
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
    label_rows: list[tuple[int, Record]] = []
    columns: list[tuple[PredictionColumns, list[int]]] = []
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
            _batch_rows(i, decoded, limits, columns, out.dead)
        elif decoded.name == "Label":
            label_rows.append((i, decoded.record))
        else:
            fault = _expand_label_batch(i, decoded.record, label_rows)
            if fault:
                out.dead.append((i, fault))
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
    labels, faults = group_labels(label_rows, limits)
    out.labels = labels
    out.dead.extend(faults)
    return out


def _batch_rows(
    ref: int,
    decoded: Decoded,
    limits: Limits,
    columns: list[tuple[PredictionColumns, list[int]]],
    dead: list[tuple[int, Fault]],
) -> None:
    fault = check_batch_record(decoded.record, limits)
    if fault:
        dead.append((ref, fault))
        return
    cols = PredictionColumns.from_record(decoded.record)
    faults = check_batch_rows(cols, limits)
    dead.extend((ref, f) for _, f in faults)
    if faults:
        bad = {row for row, _ in faults}
        cols = cols.take([i for i in range(len(cols)) if i not in bad])
    if len(cols):
        columns.append((cols, [ref] * len(cols)))


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
