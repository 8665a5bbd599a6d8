"""The batch-wide shortcuts of row validation decide exactly as the row-by-row checks.

``check_batch_rows`` and the ingest label path first try to show a whole batch clean (one
regular-expression pass over the ids, each distinct label once, times as an array); these
tests generate batches with every kind of row fault and compare the result with the
row-by-row path forced on the same batch.
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.ingest import parsing
from services.ingest.parsing import Source, parse
from shared.contracts import validation
from shared.contracts.batches import LabelColumns, PredictionColumns
from shared.contracts.codec import AvroCodec
from shared.contracts.validation import Limits, all_canonical_uuids, check_batch_rows
from tests.unit.test_validation import T0

CODEC = AvroCodec()
LIMITS = Limits()
NOW = T0 + 1_000
ids = st.one_of(
    st.builds(lambda: str(uuid.uuid4())),
    st.builds(lambda: str(uuid.uuid4()).upper()),
    st.builds(lambda: "{" + str(uuid.uuid4()) + "}"),  # accepted by uuid.UUID, not canonical
    st.builds(lambda: uuid.uuid4().hex),
    st.sampled_from(["", "not-a-uuid", "x" * 70, str(uuid.uuid4()) + "\n"]),
)
names = st.sampled_from(["yes", "no", "", "a/b", "é", "x" * 300, "nul\x00"])
times = st.sampled_from([T0, NOW, NOW + 10**9, 0, T0 - 10**12])


@st.composite
def prediction_batches(draw: Any) -> PredictionColumns:
    n = draw(st.integers(1, 12))
    cols = PredictionColumns(
        tenant="acme",
        model_name="fraud",
        model_version="v1",
        event_ids=draw(st.lists(ids, min_size=n, max_size=n)),
        event_time_ms=np.asarray(draw(st.lists(times, min_size=n, max_size=n)), np.int64),
        predicted_labels=draw(st.lists(names, min_size=n, max_size=n)),
        confidences=np.full(n, 0.9),
    )
    if draw(st.booleans()):
        cols.ground_truths = draw(st.lists(st.one_of(st.none(), names), min_size=n, max_size=n))
    if draw(st.booleans()):
        cols.categorical_features = {"c": draw(st.lists(names, min_size=n, max_size=n))}
    return cols


def _row_by_row(cols: PredictionColumns) -> list[Any]:
    original = validation._rows_clean
    validation._rows_clean = lambda *a: False  # type: ignore[assignment]
    try:
        return check_batch_rows(cols, LIMITS, NOW)
    finally:
        validation._rows_clean = original


@settings(max_examples=300, deadline=None)
@given(prediction_batches())
def test_batch_rows_shortcut_decides_as_the_row_checks(cols: PredictionColumns) -> None:
    expected = _row_by_row(cols)
    assert check_batch_rows(cols, LIMITS, NOW) == expected
    if validation._rows_clean(cols, LIMITS, NOW):
        assert expected == []


def test_canonical_uuid_pass() -> None:
    good = [str(uuid.uuid4()) for _ in range(3)]
    assert all_canonical_uuids(good)
    assert not all_canonical_uuids([*good, "nope"])
    assert not all_canonical_uuids([good[0] + "\n" + good[1]])  # two ids in one value
    assert not all_canonical_uuids([])
    assert not all_canonical_uuids([good[0], None])


@st.composite
def label_batches(draw: Any) -> dict[str, Any]:
    n = draw(st.integers(1, 8))
    model = draw(st.sampled_from([("fraud", "v1"), ("fraud", None), (None, None), ("a/b", "v1")]))
    return {
        "tenant": draw(st.sampled_from(["acme", "acme", "ac/me"])),
        "model_name": model[0],
        "model_version": model[1],
        "event_ids": draw(st.lists(ids, min_size=n, max_size=n)),
        "ground_truths": draw(st.lists(names, min_size=n, max_size=n)),
        "sources": draw(
            st.lists(st.sampled_from(["feed", "review", "event"]), min_size=n, max_size=n)
        ),
        "label_time_ms": draw(st.lists(times, min_size=n, max_size=n)),
        "prediction_time_ms": [],
    }


def _parsed(records: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, fast: bool) -> Any:
    if not fast:
        monkeypatch.setattr(parsing, "clean_label_batch", lambda *a: None)
    monkeypatch.setattr(parsing, "now_ms", lambda: NOW)
    monkeypatch.setattr(validation, "now_ms", lambda: NOW)
    sources = [
        Source("ns.labels.raw", 0, i, CODEC.encode("LabelBatch", r)) for i, r in enumerate(records)
    ]
    out = parse(sources, "ns.inference.raw", CODEC, LIMITS)
    monkeypatch.undo()
    labels = [
        (
            c.tenant,
            c.model_name,
            c.model_version,
            c.event_ids,
            c.ground_truths,
            c.sources,
            c.label_time_ms.tolist(),
            refs,
        )
        for c, refs in out.labels
    ]
    return labels, sorted((ref, f.code, f.event_id) for ref, f in out.dead)


@settings(max_examples=200, deadline=None)
@given(st.lists(label_batches(), min_size=1, max_size=4))
def test_label_batch_shortcut_groups_as_the_row_checks(records: list[dict[str, Any]]) -> None:
    with pytest.MonkeyPatch.context() as mp:
        fast = _parsed(records, mp, fast=True)
    with pytest.MonkeyPatch.context() as mp:
        slow = _parsed(records, mp, fast=False)
    assert fast == slow


def test_clean_label_batches_of_one_model_are_joined_in_order() -> None:
    a, b = (str(uuid.uuid4()) for _ in range(2))
    rec = {
        "tenant": "acme",
        "model_name": "fraud",
        "model_version": "v1",
        "event_ids": [a],
        "ground_truths": ["yes"],
        "sources": ["feed"],
        "label_time_ms": [NOW],
        "prediction_time_ms": [],
    }
    cols = validation.clean_label_batch(rec, LIMITS, NOW)
    assert isinstance(cols, LabelColumns) and cols.event_ids == [a]
    with pytest.MonkeyPatch.context() as mp:
        labels, dead = _parsed([rec, {**rec, "event_ids": [b]}], mp, fast=True)
    assert dead == []
    assert labels == [
        ("acme", "fraud", "v1", [a, b], ["yes", "yes"], ["feed", "feed"], [NOW, NOW], [0, 1])
    ]


def test_a_clean_batch_takes_the_shortcut() -> None:
    n = 50
    cols = PredictionColumns(
        tenant="acme",
        model_name="fraud",
        model_version="v1",
        event_ids=[str(uuid.uuid4()) for _ in range(n)],
        event_time_ms=np.full(n, NOW, np.int64),
        predicted_labels=["yes", "no"] * (n // 2),
        confidences=np.full(n, 0.9),
        ground_truths=[None, "yes"] * (n // 2),
        categorical_features={"c": ["", "red"] * (n // 2)},
    )
    assert validation._rows_clean(cols, LIMITS, NOW)
    assert check_batch_rows(cols, LIMITS, NOW) == []
