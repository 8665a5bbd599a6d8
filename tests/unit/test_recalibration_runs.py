"""Calibration sets, the gate, the advice and one whole run, without a store."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from services.calibrator.processing import RunConfig, run_calibration
from shared.recalibration.gate import (
    advise,
    discrimination,
    gate,
    held_out_metrics,
    paired_bootstrap,
)
from shared.recalibration.maps import IDENTITY
from shared.recalibration.sets import CalibrationSet, build_set

FIELDS = {
    "tenant": "t",
    "model_name": "m",
    "model_version": "v1",
    "model_version_id": 7,
    "window_start_ms": 0,
    "window_end_ms": 10**9,
    "label_cutoff_ms": 10**9,
}


def _rows(n: int, seed: int, overconfidence: float, probabilities: bool = True) -> list[dict]:
    rng = np.random.default_rng(seed)
    conf = np.round(rng.uniform(0.5, 1.0, n), 3)
    correct = rng.random(n) < np.clip(conf - overconfidence, 0, 1)
    rows = []
    for i in range(n):
        pred = "a" if i % 2 else "b"
        other = "b" if pred == "a" else "a"
        rows.append(
            {
                "event_id": str(uuid.UUID(int=seed * 10**7 + i)),
                "event_time_ms": 1000 * i,
                "confidence": float(conf[i]),
                "predicted_label": pred,
                "ground_truth": pred if correct[i] else other,
                "probabilities": (
                    {pred: float(conf[i]), other: float(1 - conf[i])} if probabilities else None
                ),
            }
        )
    return rows


def test_set_hash_is_content_addressed_and_order_free() -> None:
    rows = _rows(500, 1, 0.1)
    a = build_set(FIELDS, rows, 500, 1000)
    b = build_set(FIELDS, list(reversed(rows)), 500, 1000)
    assert a.hash == b.hash and len(a.hash) == 64
    changed = [dict(r) for r in rows]
    changed[3]["ground_truth"] = "zz"
    assert build_set(FIELDS, changed, 500, 1000).hash != a.hash
    assert build_set({**FIELDS, "label_cutoff_ms": 1}, rows, 500, 1000).hash != a.hash
    assert a.manifest.classes == ("a", "b")
    assert a.manifest.sampling == {"method": "all", "available": 500, "max_rows": 1000}


def test_set_round_trips_through_its_stored_form() -> None:
    cal = build_set(FIELDS, _rows(300, 2, 0.1), 300, 1000)
    back = CalibrationSet.from_stored(cal.manifest, cal.compressed_rows())
    assert back.hash == cal.hash
    np.testing.assert_array_equal(back.probabilities, cal.probabilities)
    no_vectors = build_set(FIELDS, _rows(300, 2, 0.1, probabilities=False), 300, 1000)
    again = CalibrationSet.from_stored(no_vectors.manifest, no_vectors.compressed_rows())
    assert again.hash == no_vectors.hash and again.probabilities.shape == (300, 0)
    assert not no_vectors.fit_data().has_vectors and cal.fit_data().has_vectors


def test_bootstrap_interval_hand_checked() -> None:
    diff = np.full(200, 0.25)
    assert paired_bootstrap(diff, 1, 200) == pytest.approx((0.25, 0.25))
    lo, hi = paired_bootstrap(np.r_[np.ones(100), -np.ones(100)], 1, 500)
    assert lo < 0 < hi


def test_gate_rejects_a_worse_candidate_and_passes_a_better_one() -> None:
    rng = np.random.default_rng(3)
    conf = rng.uniform(0.5, 1.0, 4000)
    correct = rng.random(4000) < conf - 0.2
    better = np.clip(conf - 0.2, 0.01, 0.99)
    verdict, before, after = gate(conf, better, correct, 200, 1)
    assert verdict.passed and after.ece < before.ece and verdict.interval[0] > 0
    verdict, *_ = gate(better, conf, correct, 200, 1)
    assert not verdict.passed and "NLL not lower" in verdict.reason
    verdict, *_ = gate(conf[:50], better[:50], correct[:50], 200, 1)
    assert not verdict.passed and "50 held-out rows" in verdict.reason


def test_held_out_metrics_hand_computed() -> None:
    m = held_out_metrics(np.array([0.8, 0.8, 0.4, 0.4]), np.array([True, False, False, False]))
    assert m.brier == pytest.approx((0.04 + 0.64 + 0.16 + 0.16) / 4)
    assert m.ece == pytest.approx(0.5 * 0.3 + 0.5 * 0.4)  # bins 8: |0.5−0.8|, 4: |0−0.4|


def test_advice() -> None:
    rng = np.random.default_rng(4)
    conf = rng.uniform(0.5, 1.0, 5000)
    ref = discrimination(conf, rng.random(5000) < conf)
    over = discrimination(conf, rng.random(5000) < conf - 0.2)
    collapsed = discrimination(conf, rng.random(5000) < 0.6)
    assert advise(ref, over, 0.05).advice == "recalibrate"
    assert advise(ref, collapsed, 0.05).advice == "retrain"
    assert advise(ref, discrimination(conf, rng.random(5000) < conf), 0.05).advice == "healthy"


CONFIG = RunConfig(
    methods=["temperature", "platt", "isotonic", "histogram", "beta", "vector_scaling"],
    min_samples=200,
    holdout_fraction=0.3,
    ece_slo=0.05,
)


def test_run_stages_a_fix_for_overconfidence() -> None:
    reference = build_set(FIELDS, _rows(2000, 5, 0.0), 2000, 5000)
    cal = build_set(FIELDS, _rows(6000, 6, 0.15), 6000, 10000)
    out = run_calibration(cal, reference, IDENTITY, CONFIG)
    assert out.verdict == "staged", out.reason
    assert out.advice == "recalibrate"
    assert out.result["after"]["ece"] < 0.05 < out.result["before"]["ece"]
    assert set(out.result["candidates"]) == set(CONFIG.methods)
    assert out.artifact_version is not None
    again = run_calibration(cal, reference, IDENTITY, CONFIG)
    assert again.artifact_version == out.artifact_version  # same set + method → same bytes


def test_run_on_collapsed_discrimination_is_not_staged() -> None:
    reference = build_set(FIELDS, _rows(2000, 7, 0.0), 2000, 5000)
    rows = _rows(6000, 8, 0.0)
    rng = np.random.default_rng(9)
    for r in rows:  # the truth no longer follows the confidence
        r["ground_truth"] = r["predicted_label"] if rng.random() < 0.55 else "zz"
    out = run_calibration(build_set(FIELDS, rows, 6000, 10000), reference, IDENTITY, CONFIG)
    assert out.advice == "retrain"
    assert out.verdict in ("not_staged", "rejected")


@pytest.mark.parametrize("case", ["one_class", "ten_rows"])
def test_bad_sets_are_failed_runs_with_a_reason(case: str) -> None:
    rows = _rows(1000, 10, 0.1)
    if case == "one_class":
        for r in rows:
            r["ground_truth"] = "a"
    else:
        rows = rows[:10]
    out = run_calibration(build_set(FIELDS, rows, len(rows), 5000), None, IDENTITY, CONFIG)
    assert out.verdict == "failed"
    assert ("one_class" in out.reason) if case == "one_class" else ("10 labeled rows" in out.reason)


@pytest.mark.parametrize(
    ("kind", "metric", "severity", "trigger"),
    [
        ("calibration", "ece", "critical", "calibration_alert"),
        ("calibration", "brier", "warning", "calibration_alert"),
        ("calibration", "ece", "resolved", None),
        ("calibration", "ece_anomaly", "warning", None),
        ("drift", "psi", "warning", "drift_alert"),
        ("recalibration", "ece", "warning", None),  # its own announcements never loop
        ("performance", "accuracy", "critical", None),
    ],
)
def test_which_alerts_start_a_run(kind: str, metric: str, severity: str, trigger: str) -> None:
    from services.calibrator.triggers import trigger_of

    assert trigger_of({"kind": kind, "metric": metric, "severity": severity}) == trigger


def test_trigger_run_ids_are_stable_per_trigger() -> None:
    from services.calibrator.store import trigger_run_id

    a = trigger_run_id("t", 1, "schedule", {"slot": 5})
    assert a == trigger_run_id("t", 1, "schedule", {"slot": 5})
    assert a != trigger_run_id("t", 1, "schedule", {"slot": 6})
    assert a != trigger_run_id("u", 1, "schedule", {"slot": 5})
