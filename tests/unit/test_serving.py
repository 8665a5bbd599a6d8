"""The serve-time choice (shared.recalibration.serving) and the paired statistics the
aggregator keeps of it (shared.windows.rollout)."""

from __future__ import annotations

import math
import uuid
import zlib
from dataclasses import dataclass

import numpy as np
import pytest

from shared.recalibration.maps import IDENTITY, from_registry
from shared.recalibration.serving import (
    Candidate,
    ServePlan,
    canary_mask,
    candidate_of,
    paired,
    serve,
)
from shared.windows.rollout import decision_fields, label_fields, rollout_stats

HALVE = from_registry("temperature-half", {"kind": "temperature", "params": {"beta": 0.5}})


def ids(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(n)]


def test_canary_arm_is_a_stable_hash_of_the_event_id() -> None:
    events = ids(20_000)
    mask = canary_mask(events, 0.1, "temperature-half")
    assert mask.mean() == pytest.approx(0.1, abs=0.01)
    assert (canary_mask(events, 0.1, "temperature-half") == mask).all()  # a replay
    # the documented rule, for one event
    e = events[0]
    seed = zlib.crc32(b"temperature-half")
    assert mask[0] == (zlib.crc32(e.encode(), seed) % 10_000 < 1000)
    # another candidate draws other events; the shares' ends are exact
    assert (canary_mask(events, 0.1, "other") != mask).any()
    assert not canary_mask(events, 0.0, "x").any() and canary_mask(events, 1.0, "x").all()
    # a bigger share keeps every event of a smaller one (same salt)
    assert (canary_mask(events, 0.3, "temperature-half") | ~mask).all()


def test_shadow_decides_with_the_active_map_and_records_the_candidate() -> None:
    conf = np.array([0.9, 0.75, 0.6])
    plan = ServePlan(0.7, IDENTITY, Candidate(HALVE, "shadow"))
    s = serve(plan, ids(3), conf)
    assert s.confidences.tolist() == conf.tolist()
    assert s.review.tolist() == [False, False, True]
    assert s.calibrator_version == "identity" and s.calibrator_versions is None
    # σ(0.5·logit(0.9)) = σ(1.098612) = 0.75
    assert s.shadow_confidences is not None and s.shadow_review is not None
    assert s.shadow_confidences[0] == pytest.approx(0.75)
    assert s.shadow_review.tolist() == [False, True, True]
    assert s.shadow_calibrator_version == "temperature-half"
    assert s.arms() == ["control"] * 3


def test_canary_decides_its_share_with_the_candidate() -> None:
    events = ids(2000, seed=3)
    conf = np.full(2000, 0.9)
    s = serve(ServePlan(0.7, IDENTITY, Candidate(HALVE, "canary", 0.25)), events, conf)
    mask = canary_mask(events, 0.25, "temperature-half")
    assert s.canary is not None and (s.canary == mask).all()
    assert np.allclose(s.confidences[mask], 0.75) and np.allclose(s.confidences[~mask], 0.9)
    assert s.shadow_confidences is not None
    assert np.allclose(s.shadow_confidences[mask], 0.9)
    assert s.calibrator_versions is not None
    assert {s.calibrator_versions[i] for i in np.flatnonzero(mask)} == {"temperature-half"}
    assert s.arms().count("canary") == int(mask.sum())
    # reading it back gives both maps on every event
    assert s.shadow_review is not None
    p = paired(
        s.confidences, s.review, s.calibrator_versions, s.shadow_calibrator_version,
        s.shadow_confidences, s.shadow_review,
    )  # fmt: skip
    assert p is not None
    assert np.allclose(p.active, 0.9) and np.allclose(p.candidate, 0.75)
    assert (p.canary == mask).all()


def test_no_candidate_serves_the_active_map_alone() -> None:
    s = serve(ServePlan(0.5, HALVE), ids(2), np.array([0.9, 0.5]))
    assert s.shadow_confidences is None and s.arms() == ["active", "active"]
    assert paired(s.confidences, s.review, None, None, None, None) is None


@dataclass
class Entry:
    key: str = "t/m/v"
    candidate_version: str | None = "temperature-half"
    candidate_calibrator: str | None = '{"kind": "temperature", "params": {"beta": 0.5}}'
    rollout_stage: str | None = "canary"
    canary_share: float = 0.1


def test_candidate_of_a_registry_entry() -> None:
    c = candidate_of(Entry())
    assert c is not None and c.stage == "canary" and c.share == 0.1
    assert c.map.version == "temperature-half"
    assert candidate_of(Entry(rollout_stage=None)) is None
    # a candidate that cannot be built never reaches the serve path
    assert candidate_of(Entry(candidate_calibrator='{"kind": "nope"}')) is None
    assert candidate_of(Entry(canary_share=1.5)) is None


def test_paired_fields_and_stats_by_hand() -> None:
    active = np.array([0.9, 0.6])
    candidate = np.array([0.8, 0.5])
    correct = np.array([True, False])
    canary = np.array([False, True])
    f = label_fields(active, candidate, correct, canary)
    f.update(
        decision_fields(
            np.array([False, True]), np.array([False, True]), canary, np.array([False, True])
        )
    )
    s = rollout_stats(f)
    # NLL: active −ln 0.9 = 0.105361, −ln 0.4 = 0.916291; candidate −ln 0.8 = 0.223144,
    # −ln 0.5 = 0.693147 → d = (−0.117783, 0.223144), Σd = 0.105361
    assert s.labeled == 2
    assert s.nll_diff.total == pytest.approx(0.105361, abs=1e-6)
    assert s.nll_diff.squares == pytest.approx(0.117783**2 + 0.223144**2, abs=1e-6)
    # Brier: active 0.01, 0.36; candidate 0.04, 0.25 → d = (−0.03, 0.11)
    assert s.brier_diff.total == pytest.approx(0.08)
    assert s.brier_diff.squares == pytest.approx(0.013)
    assert s.active.brier == pytest.approx(0.185) and s.candidate.brier == pytest.approx(0.145)
    assert s.active.nll == pytest.approx((0.105361 + 0.916291) / 2, abs=1e-6)
    # ECE of the active map: bins 0.9 (acc 1) and 0.6 (acc 0): (0.1 + 0.6) / 2
    assert s.active.ece == pytest.approx(0.35)
    assert s.events == 2 and s.review_rate_delta == 0.0
    assert s.canary.events == 1 and s.canary.reviews == 1 and s.canary.labeled == 1
    assert s.control.labeled == 1 and s.control.ece == pytest.approx(0.1)
    assert s.candidate.aurc is not None and not math.isnan(s.candidate.aurc)


def test_an_empty_rollout_hash_reads_as_zeros() -> None:
    s = rollout_stats({})
    assert s.labeled == 0 and s.active.ece is None and s.review_rate_delta is None


@dataclass(frozen=True)
class Constant:
    version: str
    value: float

    def apply(self, confidences, probabilities, logits, class_labels):  # type: ignore[no-untyped-def]
        return np.full(len(confidences), self.value)


def test_segment_maps_decide_the_active_arm_and_a_canary_keeps_its_events() -> None:
    """The active arm is the version's map with its segment maps; the canary's events are
    the candidate's whatever their segment, and paired() still finds them."""
    events = ids(400, seed=3)
    segments = ["golf" if i % 2 else None for i in range(400)]
    plan = ServePlan(
        0.5, Constant("base", 0.6), Candidate(Constant("cand", 0.9), "canary", 0.25),
        {"golf": Constant("golf-map", 0.2)},
    )  # fmt: skip
    s = serve(plan, events, np.full(400, 0.7), segments=segments)
    mask = canary_mask(events, 0.25, "cand")
    assert 50 < mask.sum() < 150
    expected = [0.9 if m else (0.2 if g else 0.6) for m, g in zip(mask, segments, strict=True)]
    assert s.confidences.tolist() == expected
    assert s.review.tolist() == [c < 0.5 for c in expected]
    assert s.calibrator_versions == [
        "cand" if m else ("golf-map" if g else "base") for m, g in zip(mask, segments, strict=True)
    ]
    # without a candidate the segment maps alone name each event's map
    alone = serve(ServePlan(0.5, Constant("base", 0.6), None, plan.segment_maps), events[:4],
                  np.full(4, 0.7), segments=segments[:4])  # fmt: skip
    assert alone.calibrator_versions == ["base", "golf-map", "base", "golf-map"]
    assert serve(ServePlan(0.5, Constant("base", 0.6)), events[:2], np.full(2, 0.7),
                 segments=["golf", "golf"]).calibrator_versions is None  # fmt: skip
    pair = paired(s.confidences, s.review, s.calibrator_versions, "cand",
                  s.shadow_confidences, s.shadow_review)  # fmt: skip
    assert pair is not None
    assert pair.canary.tolist() == mask.tolist()
    assert pair.candidate.tolist() == [0.9] * 400
    assert pair.active.tolist() == [0.2 if g else 0.6 for g in segments]


def test_a_candidate_that_fails_to_apply_leaves_the_active_map_serving_alone() -> None:
    """A candidate that builds but raises (a missing parameter) or answers the wrong shape
    never reaches the decision: the active map decides every event, nothing runs beside."""
    missing = from_registry("platt-broken", {"kind": "platt", "params": {}})
    conf = np.array([0.9, 0.6])
    for bad in (missing, _Short()):
        for stage, share in (("shadow", 0.0), ("canary", 1.0)):
            s = serve(ServePlan(0.7, HALVE, Candidate(bad, stage, share)), ids(2), conf)
            # σ(0.5·logit(c)) = √c / (√c + √(1 − c)): 0.75 and √0.6 / (√0.6 + √0.4)
            assert s.confidences.tolist() == pytest.approx([0.75, 0.5505102572])
            assert s.review.tolist() == [False, True]
            assert s.shadow_calibrator_version is None and s.canary is None
            assert s.calibrator_versions is None and s.arms() == ["active", "active"]


@dataclass(frozen=True)
class _Short:
    version: str = "short"

    def apply(self, confidences, probabilities, logits, class_labels):  # type: ignore[no-untyped-def]
        return np.full(len(confidences) - 1, 0.9)
