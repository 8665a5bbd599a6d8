"""Ingest's parsing step without a broker: batches, singles, labels and dead letters."""

from __future__ import annotations

import math
import uuid

import numpy as np

from services.ingest.parsing import Source, parse
from shared.contracts.batches import PredictionColumns
from shared.contracts.codec import AvroCodec
from shared.contracts.errors import ErrorCode
from shared.contracts.validation import Limits
from tests.unit.test_validation import T0, event

CODEC = AvroCodec()
RAW = "ns.inference.raw"
LABELS = "ns.labels.raw"


def src(value: bytes | None, topic: str = RAW, offset: int = 0) -> Source:
    return Source(topic, 0, offset, value)


def batch(n: int, **overrides: object) -> PredictionColumns:
    cols = PredictionColumns(
        tenant="acme",
        model_name="fraud",
        model_version="v1",
        event_ids=[str(uuid.uuid4()) for _ in range(n)],
        event_time_ms=np.full(n, T0, dtype=np.int64),
        predicted_labels=["yes"] * n,
        confidences=np.linspace(0.5, 1.0, n),
        numeric_features={"x": np.arange(n, dtype=np.float64)},
    )
    for k, v in overrides.items():
        setattr(cols, k, v)
    return cols


def test_batch_message_keeps_valid_rows_and_dead_letters_bad_ones() -> None:
    cols = batch(4, confidences=np.array([0.9, math.nan, 1.5, 0.6]))
    parsed = parse([src(CODEC.encode("PredictionBatch", cols.to_record()))], RAW, CODEC, Limits())
    assert len(parsed.predictions) == 1
    kept, refs = parsed.predictions[0]
    assert kept.event_ids == [cols.event_ids[0], cols.event_ids[3]]
    np.testing.assert_array_equal(kept.numeric_features["x"], [0.0, 3.0])
    assert refs == [0, 0]
    codes = sorted((f.code, f.event_id) for _, f in parsed.dead)
    assert codes == sorted(
        [
            (ErrorCode.CONFIDENCE_NOT_FINITE, cols.event_ids[1]),
            (ErrorCode.CONFIDENCE_OUT_OF_RANGE, cols.event_ids[2]),
        ]
    )


def test_batches_of_one_model_version_are_checked_as_one_run() -> None:
    """Three messages, two model versions: v1's two messages are checked and returned as one
    batch, each row still naming its own message; a bad row costs only itself."""
    a = batch(3)
    b = batch(2, model_version="v2")
    c = batch(3, confidences=np.array([0.7, 2.0, 0.8]))
    c.event_ids[2] = "not-a-uuid"
    sources = [
        src(CODEC.encode("PredictionBatch", x.to_record()), offset=i)
        for i, x in enumerate((a, b, c))
    ]
    parsed = parse(sources, RAW, CODEC, Limits())
    by_key = {cols.key: (cols, refs) for cols, refs in parsed.predictions}
    assert len(parsed.predictions) == 2
    v1, refs = by_key["acme/fraud/v1"]
    assert v1.event_ids == [*a.event_ids, c.event_ids[0]]
    assert refs == [0, 0, 0, 2]
    np.testing.assert_array_equal(v1.numeric_features["x"], [0.0, 1.0, 2.0, 0.0])
    assert by_key["acme/fraud/v2"][1] == [1, 1]
    assert sorted((ref, f.code, f.event_id) for ref, f in parsed.dead) == sorted(
        [
            (2, ErrorCode.CONFIDENCE_OUT_OF_RANGE, c.event_ids[1]),
            (2, ErrorCode.INVALID_EVENT_ID, "not-a-uuid"),
        ]
    )


def test_singles_labels_and_junk_in_one_poll() -> None:
    e1, e2 = event(), event(model_version="v2")
    label = {
        "event_id": e1["event_id"],
        "tenant": "acme",
        "model_name": None,
        "model_version": None,
        "ground_truth": "no",
        "source": "feed",
        "label_time_ms": T0 + 1,
    }
    sources = [
        src(CODEC.encode("InferenceEvent", e1), offset=0),
        src(b"garbage", offset=1),
        src(CODEC.encode("InferenceEvent", e2), offset=2),
        src(CODEC.encode("Label", label), topic=LABELS, offset=0),
        src(CODEC.encode("InferenceEvent", e1), topic=LABELS, offset=1),
    ]
    parsed = parse(sources, RAW, CODEC, Limits())
    assert sorted(c.key for c, _ in parsed.predictions) == ["acme/fraud/v1", "acme/fraud/v2"]
    assert [(ref, f.code) for ref, f in parsed.dead] == [
        (1, ErrorCode.NOT_AVRO),
        (4, ErrorCode.UNEXPECTED_TYPE),
    ]
    ((labels, refs),) = parsed.labels
    assert labels.event_ids == [e1["event_id"]] and labels.key is None and refs == [3]


def test_a_batch_whose_every_row_fails_is_dead_lettered_row_by_row() -> None:
    """Every row of a run at fault leaves no rows to keep: each one is a dead letter and the
    batch is not an error (an empty selection of rows once crashed the worker)."""
    cols = batch(3, event_ids=["not-a-uuid", "", "x" * 10])
    parsed = parse([src(CODEC.encode("PredictionBatch", cols.to_record()))], RAW, CODEC, Limits())
    assert parsed.predictions == []
    assert [(ref, f.code, f.event_id) for ref, f in parsed.dead] == [
        (0, ErrorCode.INVALID_EVENT_ID, "not-a-uuid"),
        (0, ErrorCode.INVALID_EVENT_ID, ""),
        (0, ErrorCode.INVALID_EVENT_ID, "x" * 10),
    ]
