"""The drift worker's pure parts: bucketed counting, reference building, alert hysteresis."""

from __future__ import annotations

import json

import numpy as np
import pytest

from services.drift.alerts import HYSTERESIS, alert_record, transition
from services.drift.binning import (
    bucketed_counts,
    decode_fields,
    encode_fields,
    hashes_to_fields,
    parts,
)
from services.drift.reference import build_from_chunks, chunk
from shared.contracts.batches import PredictionColumns
from shared.drift.profile import bin_batch
from shared.drift.profile_builder import build_profile
from shared.drift.scores import DriftMethod, DriftScore
from shared.drift.stats import js_distance, ks_from_histograms, psi
from shared.windows.names import window_name


def columns(n: int, seed: int, start_ms: int = 1_000_000, step_ms: int = 100) -> PredictionColumns:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    x[::17] = np.nan
    cats = rng.choice(["a", "b", "c", ""], size=n).tolist()
    return PredictionColumns(
        tenant="t",
        model_name="m",
        model_version="v1",
        event_ids=[f"e{i}" for i in range(n)],
        event_time_ms=start_ms + step_ms * np.arange(n, dtype=np.int64),
        predicted_labels=rng.choice(["cat", "dog"], size=n).tolist(),
        confidences=rng.uniform(0.3, 1.0, size=n),
        numeric_features={"x": x},
        categorical_features={"c": cats},
    )


def test_bucketed_counts_equal_the_profile_counts_per_bucket() -> None:
    ref = columns(3000, 1)
    profile = build_profile(
        "t/m/v1",
        ref.confidences,
        ref.predicted_labels,
        {"x": ref.numeric_features["x"], "c": ref.categorical_features["c"]},
    )
    cur = [columns(700, 2), columns(500, 3, start_ms=1_070_000)]
    counts = bucketed_counts(profile, cur, bucket_s=30)
    assert sorted(counts) == [990, 1020, 1050, 1080, 1110]
    # Summed over buckets, the counts are what bin_batch gives for the whole batch.
    whole: dict[str, np.ndarray] = {}
    for c in cur:
        for k, v in bin_batch(
            profile,
            c.confidences,
            c.predicted_labels,
            {"x": c.numeric_features["x"], "c": c.categorical_features["c"]},
        ).items():
            whole[k] = whole.get(k, 0) + v
    names = {p.index: p.name for p in parts(profile)}
    widths = {p.index: p.profile.n_cells for p in parts(profile)}
    hashes = [
        {k.encode(): str(v).encode() for k, v in encode_fields(b).items()} for b in counts.values()
    ]
    summed = decode_fields(*hashes_to_fields(hashes), widths)
    for index, name in names.items():
        np.testing.assert_array_equal(summed[index], whole[name])
    # Missing values are not counted: NaN every 17th number, "" for a category.
    x_part = next(p.index for p in parts(profile) if p.name == "x")
    n_x = int(sum(np.isfinite(c.numeric_features["x"]).sum() for c in cur))
    assert summed[x_part][: profile.features["x"].n_bins].sum() == n_x  # type: ignore[union-attr]


def test_bucketed_counts_of_many_batches_are_the_sums_of_each_batch_alone() -> None:
    """Joined per part, a feature missing from one batch still counts only where it is."""
    ref = columns(3000, 1)
    profile = build_profile(
        "t/m/v1",
        ref.confidences,
        ref.predicted_labels,
        {"x": ref.numeric_features["x"], "c": ref.categorical_features["c"]},
    )
    no_x = columns(40, 5, start_ms=1_020_000)
    no_x.numeric_features = {}
    cur = [columns(7, 2), no_x, columns(0, 4), columns(300, 3, start_ms=1_025_000)]
    joined = bucketed_counts(profile, cur, bucket_s=30)
    alone: dict[int, dict[int, np.ndarray]] = {}
    for c in cur:
        for start, by_part in bucketed_counts(profile, [c], bucket_s=30).items():
            slot = alone.setdefault(start, {})
            for part, counts in by_part.items():
                slot[part] = slot.get(part, 0) + counts
    assert sorted(joined) == sorted(alone) == [990, 1020, 1050]
    for start, by_part in alone.items():
        assert sorted(joined[start]) == sorted(by_part)
        for part, counts in by_part.items():
            np.testing.assert_array_equal(joined[start][part], counts)
    x_part = next(p.index for p in parts(profile) if p.name == "x")
    n_x = int(np.isfinite(cur[0].numeric_features["x"]).sum()) + int(
        np.isfinite(cur[3].numeric_features["x"]).sum()
    )
    n_bins = profile.features["x"].n_bins  # type: ignore[union-attr]
    assert sum(int(b[x_part][:n_bins].sum()) for b in joined.values()) == n_x


def test_reference_from_chunks_is_the_profile_of_the_first_events() -> None:
    cols = columns(1000, 4)
    chunks = [json.loads(json.dumps(chunk(cols, slice(0, 400)))), chunk(cols, slice(400, 1000))]
    built = build_from_chunks("t/m/v1", chunks)
    direct = build_profile(
        "t/m/v1",
        cols.confidences,
        cols.predicted_labels,
        {"c": cols.categorical_features["c"], "x": cols.numeric_features["x"]},
    )
    assert built == direct
    assert built.version == direct.version  # content digest: a replay builds the same version


def score(value: float, trusted: bool = True) -> DriftScore:
    return DriftScore("x", DriftMethod.PSI, value, 1000 if trusted else 10, trusted, "ref1")


def test_one_alert_while_drifted_then_recovery_then_cooldown() -> None:
    state = None
    sent = []
    timeline = [(0, 0.05), (1, 0.25), (2, 0.5), (3, 0.3), (4, 0.19), (5, 0.1), (6, 0.3), (70, 0.3)]
    for t, value in timeline:
        state, change = transition(state, score(value), 0.2, t * 1000, cooldown_s=60)
        if change:
            sent.append((t, change.action, change.severity))
    # 0.19 is below the threshold but above HYSTERESIS × 0.2 = 0.16: still drifted.
    assert HYSTERESIS * 0.2 < 0.19
    # Raised once at t=1 (warning), resolved at t=5, quiet at t=6 (cooldown), raised again
    # at t=70 (0.3 = 1.5 × 0.2: critical).
    assert sent == [(1, "raise", "warning"), (5, "resolve", "resolved"), (70, "raise", "critical")]


def test_untrusted_scores_change_nothing_and_critical_is_1_5x() -> None:
    state, change = transition(None, score(5.0, trusted=False), 0.2, 0, 60)
    assert change is None and not state["active"]
    state, change = transition(state, score(0.3), 0.2, 1, 60)
    assert change is not None and change.severity == "critical"


def test_chi_squared_needs_significance_to_raise() -> None:
    noisy = DriftScore("c", DriftMethod.CHI_SQUARED, 0.12, 500, True, "ref1", p_value=0.027)
    _, change = transition(None, noisy, 0.1, 0, 60, max_p_value=0.001)
    assert change is None
    clear = DriftScore("c", DriftMethod.CHI_SQUARED, 0.12, 5000, True, "ref1", p_value=1e-9)
    _, change = transition(None, clear, 0.1, 0, 60, max_p_value=0.001)
    assert change is not None and change.severity == "warning"


def test_alert_record_fields() -> None:
    _, change = transition(None, score(0.31), 0.2, 5_000, 60)
    assert change is not None
    a = alert_record("acme/m/v1", 7, score(0.31), 0.2, change, "10m", 99, {"window_end_ms": "5000"})
    assert a["kind"] == "drift" and a["feature"] == "x" and a["method"] == "psi"
    assert (a["tenant"], a["model_name"], a["model_version"], a["model_version_id"]) == (
        "acme",
        "m",
        "v1",
        7,
    )
    again = alert_record("acme/m/v1", 7, score(0.4), 0.2, change, "10m", 123, {})
    assert again["alert_id"] == a["alert_id"]  # same breach, same id: the recorder dedupes


@pytest.mark.parametrize(("seconds", "name"), [(600, "10m"), (3600, "1h"), (90, "90s")])
def test_window_name(seconds: int, name: str) -> None:
    assert window_name(seconds) == name


def test_scores_by_hand_with_empty_bins() -> None:
    # Reference [.5, .5, 0], current counts [0, 5, 5]: shares [0, .5, .5].
    # PSI (floor 1e-4): (1e-4 − .5)·ln(1e-4/.5) + 0 + (.5 − 1e-4)·ln(.5/1e-4)
    #   = 2 · .4999 · 8.517193 = 8.515490
    assert psi([0.5, 0.5, 0.0], [0, 5, 5]) == pytest.approx(8.5154900, abs=1e-6)
    # JS: m = [.25, .5, .25]; KL(p‖m) = .5·log2(2) = .5, KL(q‖m) = .5; distance = √.5
    assert js_distance([0.5, 0.5, 0.0], [0, 5, 5]) == pytest.approx(0.5**0.5, abs=1e-12)
    # KS: CDFs at the edges .5, 1 vs 0, .5 → .5
    assert ks_from_histograms([0.5, 0.5, 0.0], [0, 5, 5]) == pytest.approx(0.5)
