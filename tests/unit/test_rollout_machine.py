"""The calibrator's rollout state machine (next_move), the gateway's registry assignments
of a transition, and the aggregator's join record with a candidate beside."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import numpy as np

from services.aggregator.processing import PredictionRecord
from services.calibrator.rollout import RolloutConfig, next_move, registry_move, transition_alert
from services.calibrator.rollout_store import Rollout
from services.gateway.rollouts import _assignments
from shared.recalibration.sequential import SequentialConfig
from shared.windows.rollout import decision_fields, label_fields, rollout_stats

CONFIG = RolloutConfig(
    SequentialConfig(alpha=0.05, min_events=100, max_events=5000, tuned_for=500, review_band=0.2),
    shadow_min_labeled=150,
    canary_share=0.1,
    canary_min_labeled=20,
)


def rollout(stage: str) -> Rollout:
    return Rollout(1, "acme", 7, "acme/m/v1", "temperature-x", "identity", stage, 0.1)


def stats(n: int, gain: float, canary_share: float = 0.0, seed: int = 0, review: float = 0.3):  # type: ignore[no-untyped-def]
    """Paired statistics of n labeled events where the candidate's confidence is closer to
    the truth by ``gain`` on average (negative: further)."""
    rng = np.random.default_rng(seed)
    correct = rng.random(n) < 0.7
    active = np.clip(rng.uniform(0.6, 0.99, n), 0, 1)
    target = correct.astype(float)
    candidate = np.clip(active + gain * (target - active) * 2, 0.01, 0.99)
    canary = rng.random(n) < canary_share
    f = label_fields(active, candidate, correct, canary)
    rv = rng.random(n) < review
    for k, v in decision_fields(rv, rv, canary, rv).items():
        f[k] = f.get(k, 0) + v
    return rollout_stats(f)


def test_shadow_waits_then_moves_to_canary() -> None:
    assert next_move(rollout("shadow"), stats(100, 0.2), CONFIG) is None
    move = next_move(rollout("shadow"), stats(200, 0.2), CONFIG)
    assert move is not None and move.to_stage == "canary" and move.canary_share == 0.1
    assert move.numbers["labeled"] == 200 and move.trigger == "auto"


def test_shadow_rolls_back_a_worse_candidate_at_once() -> None:
    move = next_move(rollout("shadow"), stats(120, -0.3), CONFIG)
    assert move is not None and move.to_stage == "rolled_back"
    assert move.numbers["test"]["nll"]["hi"] < 0


def test_canary_promotes_only_once_its_arm_has_labels() -> None:
    assert next_move(rollout("canary"), stats(300, 0.2, canary_share=0.0), CONFIG) is None
    move = next_move(rollout("canary"), stats(300, 0.2, canary_share=0.2), CONFIG)
    assert move is not None and move.to_stage == "promoted"
    assert move.numbers["test"]["decision"] == "promote"


def test_review_band_rolls_back() -> None:
    s = stats(300, 0.2, canary_share=0.2)
    s = type(s)(**{**{f: getattr(s, f) for f in s.__dataclass_fields__},
                   "candidate": type(s.candidate)(**{**{f: getattr(s.candidate, f) for f in
                   s.candidate.__dataclass_fields__}, "review_rate": 0.9})})  # fmt: skip
    move = next_move(rollout("canary"), s, CONFIG)
    assert move is not None and move.to_stage == "rolled_back" and "review rate" in move.reason


def test_the_alert_of_a_transition() -> None:
    row = {
        "id": 12, "tenant_id": "acme", "model_version_id": 7, "name": "m", "version": "v1",
        "candidate_version": "temperature-x", "from_stage": "canary", "to_stage": "rolled_back",
        "trigger": "auto", "reason": "worse",
        "numbers": '{"labeled": 300, "test": {"nll": {"mean": -0.2, "lo": -0.3, "hi": -0.1}}}',
        "created_at": dt.datetime(2026, 12, 6, tzinfo=dt.UTC),
    }  # fmt: skip
    a = transition_alert(row)
    assert a["kind"] == "recalibration" and a["severity"] == "critical"
    assert a["window"] == "rolled_back" and a["n_samples"] == 300 and a["value"] == -0.2
    assert a["details"]["nll_diff_hi"] == "-0.1"
    assert transition_alert(row)["alert_id"] == a["alert_id"]  # a replay: the same alert


def test_registry_assignments_of_a_transition() -> None:
    sets, args = _assignments(
        {"candidate_version": None, "candidate_calibrator": None, "rollout_stage": None,
         "canary_share": 0.0, "calibrator_version": "t-1", "calibrator": '{"kind": "x"}'}
    )  # fmt: skip
    assert sets == (
        "candidate_version = $3, candidate_calibrator = $4::jsonb, rollout_stage = $5, "
        "canary_share = $6, calibrator_version = $7, calibrator = $8::jsonb"
    )
    assert args == [None, None, None, 0.0, "t-1", '{"kind": "x"}']


def test_join_record_keeps_both_maps() -> None:
    rec = PredictionRecord("acme/m/v1", 5, 0.9, "yes", [], None, 3, 0.8, True, "sport=golf",
                           "temperature-x", 0.9, 0.8, True)  # fmt: skip
    back = PredictionRecord.decode(rec.encode())
    assert back == rec
    old = PredictionRecord("acme/m/v1", 5, 0.9, "yes", [], None, 3, 0.8, True)
    assert PredictionRecord.decode(old.encode()) == old and old.shadow_version == ""


def test_a_segment_holding_the_field_separator_survives_the_join_record() -> None:
    """A segment value is the caller's text (a category, a metadata value): a unit
    separator or a percent sign in it neither shifts the candidate's fields after it (which
    made every later join of the event raise, a batch the aggregator could never pass) nor
    changes the segment the label is counted in."""
    for segment in ("sport=go\x1flf", "sport=100%1F", "k=%25\x1f%"):
        rec = PredictionRecord("acme/m/v1", 5, 0.9, "yes", [], None, 3, 0.8, True, segment,
                               "platt-2", 0.7, 0.6, True)  # fmt: skip
        assert PredictionRecord.decode(rec.encode()) == rec
        plain = PredictionRecord("acme/m/v1", 5, 0.9, "yes", [], None, 3, 0.8, True, segment)
        assert PredictionRecord.decode(plain.encode()).segment == segment


def test_an_activation_through_the_registry_ends_the_open_rollout() -> None:
    """The candidate activated directly is promoted; another map activated directly (an
    operator's rollback, say) aborts the rollout, whose statistics compared the candidate
    with the map it replaced, so that no later promotion undoes the operator's choice."""
    s = stats(300, 0.2, canary_share=0.2)
    unchanged = replace(rollout("canary"), active_version="identity")
    assert registry_move(unchanged, s) is None
    assert registry_move(rollout("canary"), s) is None  # the registry's map unknown
    took = registry_move(replace(rollout("shadow"), active_version="temperature-x"), s)
    assert took is not None and (took.to_stage, took.trigger) == ("promoted", "manual")
    other = replace(rollout("canary"), active_version="platt-9")
    move = registry_move(other, s)
    assert move is not None and (move.to_stage, move.trigger) == ("aborted", "manual")
    assert "platt-9" in move.reason and "identity" in move.reason
    assert move.numbers["labeled"] == 300
    # next_move alone would have promoted it over the operator's map
    promoted = next_move(other, s, CONFIG)
    assert promoted is not None and promoted.to_stage == "promoted"
