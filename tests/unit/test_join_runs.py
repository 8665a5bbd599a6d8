"""Ingest joins the small batches of one model version into fewer, larger messages."""

from __future__ import annotations

import numpy as np

from shared.contracts.batches import PredictionColumns, join_runs


def batch(version: str, ids: list[str], *, with_x: bool = True) -> PredictionColumns:
    n = len(ids)
    return PredictionColumns(
        tenant="t",
        model_name="m",
        model_version=version,
        event_ids=ids,
        event_time_ms=np.arange(n, dtype=np.int64) + 1000 * len(ids[0]),
        predicted_labels=[f"l{i}" for i in ids],
        confidences=np.linspace(0.5, 0.9, n),
        numeric_features={"x": np.arange(n, dtype=np.float64)} if with_x else {},
        categorical_features={"c": [f"c{i}" for i in ids]},
        ground_truths=[None] * (n - 1) + ["yes"],
    )


def test_consecutive_batches_of_one_version_become_one_in_order() -> None:
    a1, b1, a2 = batch("a", ["1", "2"]), batch("b", ["3"]), batch("a", ["4", "5", "6"])
    joined = join_runs([a1, b1, a2])
    assert [j.key for j in joined] == ["t/m/a", "t/m/b"]
    a = joined[0]
    assert a.event_ids == ["1", "2", "4", "5", "6"]
    assert a.event_time_ms.tolist() == [*a1.event_time_ms.tolist(), *a2.event_time_ms.tolist()]
    assert a.numeric_features["x"].tolist() == [0.0, 1.0, 0.0, 1.0, 2.0]
    assert a.categorical_features["c"] == ["c1", "c2", "c4", "c5", "c6"]
    assert a.ground_truths == [None, "yes", None, None, "yes"]
    assert a.predicted_labels == ["l1", "l2", "l4", "l5", "l6"]
    assert joined[1] is b1
    # The joined batch encodes as the rows it holds.
    assert PredictionColumns.from_record(a.to_record()).event_ids == a.event_ids


def test_a_batch_of_another_shape_ends_the_run_and_keeps_the_order() -> None:
    runs = join_runs(
        [batch("a", ["1"]), batch("a", ["2"], with_x=False), batch("a", ["3"]), batch("a", ["4"])]
    )
    assert [r.event_ids for r in runs] == [["1"], ["2"], ["3", "4"]]
    assert [bool(r.numeric_features) for r in runs] == [True, False, True]
