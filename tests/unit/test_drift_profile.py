"""Reference profiles, binning against them and the drift scores of a window's counts."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from shared.drift.profile import (
    CONFIDENCE_KEY,
    LABEL_KEY,
    OTHER,
    CategoricalProfile,
    NumericProfile,
    ReferenceProfile,
    bin_batch,
    bin_counts,
)
from shared.drift.profile_builder import (
    build_profile,
    categorical_profile,
    numeric_profile,
    quantile_edges,
)
from shared.drift.profile_codec import profile_from_dict, profile_to_dict
from shared.drift.scores import (
    DriftMethod,
    DriftScore,
    categorical_drift,
    confidence_drift,
    histogram_mean,
    mean_shift,
    numeric_drift,
    profile_drift,
)


def scores_of(scores: list[DriftScore]) -> dict[str, float]:
    return {s.method.value: s.score for s in scores}


def test_bin_counts_numeric_hand_example() -> None:
    # quantile bins (−inf, 1], (1, 2], (2, inf); fine cells (−inf, 0], (0, 1], (1, 2], (2, inf)
    f = NumericProfile(
        name="x",
        n_samples=4,
        edges=(1.0, 2.0),
        proportions=(0.25, 0.5, 0.25),
        fine_lo=0.0,
        fine_hi=2.0,
        fine_bins=2,
        fine_proportions=(0.0, 0.25, 0.5, 0.25),
        mean=1.5,
        std=0.5,
    )
    values = np.array([0.5, 1.0, 1.5, 2.0, 2.5, np.nan, -np.inf])  # NaN = missing, not counted
    counts = bin_counts(f, values)
    assert counts.tolist() == [3, 2, 1, 1, 2, 2, 1]  # quantile bins, then fine cells
    coarse, fine = f.split(counts)
    assert coarse.tolist() == [3, 2, 1] and fine.tolist() == [1, 2, 2, 1]


def test_micro_batch_counts_add_up_to_the_window() -> None:
    rng = np.random.default_rng(5)
    f = numeric_profile("x", rng.normal(size=2000))
    window = rng.normal(0.3, 1.2, size=1500)
    per_batch = sum(bin_counts(f, batch) for batch in np.array_split(window, 3))
    np.testing.assert_array_equal(per_batch, bin_counts(f, window))


def test_continuous_reference_gets_equal_quantile_bins() -> None:
    f = numeric_profile("x", np.random.default_rng(0).normal(size=1000))
    assert len(f.edges) == 9
    np.testing.assert_allclose(f.proportions, [0.1] * 10)
    assert sum(f.fine_proportions) == pytest.approx(1.0)
    # the robust range leaves 0.1 % of the reference in each of underflow and overflow
    assert f.fine_proportions[0] == pytest.approx(0.001, abs=0.001)


@pytest.mark.parametrize("bins", [2, 10])
def test_constant_feature(bins: int) -> None:
    # all reference values 3.0: edges (3⁻, 3.0) → bins (−inf, 3⁻], (3⁻, 3], (3, inf) = 0, 1, 0
    f = numeric_profile("c", np.full(1000, 3.0), bins=bins)
    assert f.edges == (math.nextafter(3.0, -math.inf), 3.0)
    assert f.proportions == (0.0, 1.0, 0.0)
    assert f.fine_lo < 3.0 < f.fine_hi
    same = scores_of(numeric_drift(f, bin_counts(f, np.full(600, 3.0)), reference_version="v"))
    assert same == {"psi": 0.0, "js_distance": 0.0, "ks": 0.0}
    # all mass moves from the middle bin to an outer one:
    # PSI = (1e-4 − 1)·ln(1e-4/1) + (1 − 1e-4)·ln(1/1e-4) = 2·.9999·9.210340 = 18.418839
    for other in (4.0, 2.0, 3.0001):
        moved = scores_of(
            numeric_drift(f, bin_counts(f, np.full(600, other)), reference_version="v")
        )
        assert moved["psi"] == pytest.approx(18.4188386759, abs=1e-9)
        assert moved["js_distance"] == pytest.approx(1.0) and moved["ks"] == pytest.approx(1.0)


def test_low_cardinality_levels_get_bins_of_their_own() -> None:
    # 0/1 half and half: 0 and 1 each hold ≥ 1/10 of the reference, so each is isolated
    edges = quantile_edges(np.array([0.0] * 50 + [1.0] * 50))
    assert edges.tolist() == [-5e-324, 0.0, math.nextafter(1.0, 0.0), 1.0]
    # 5 % zeros: every quantile is 1.0, which is isolated, so the zeros stay apart from it
    f = numeric_profile("x", np.array([0.0] * 5 + [1.0] * 95))
    assert f.proportions == pytest.approx((0.05, 0.95, 0.0))
    assert bin_counts(f, [0.0, 0.0, 1.0, 2.0])[:3].tolist() == [2, 1, 1]


def test_categorical_profile_counts_and_cap() -> None:
    values = ["a"] * 50 + ["b"] * 30 + ["c"] * 20 + [""] * 3  # "" = missing, left out
    f = categorical_profile("k", values)
    assert (f.categories, f.shares, f.n_samples) == (("a", "b", "c"), (0.5, 0.3, 0.2, 0.0), 100)
    # unseen "d" and "zz" go to __other__ (last cell); "" is not counted
    assert bin_counts(f, ["a", "d", "b", "", "zz", "c", "a"]).tolist() == [2, 1, 1, 2]
    many = [f"c{i:02d}" for i in range(60) for _ in range(60 - i)]  # c00 most frequent
    capped = categorical_profile("k", many, max_categories=50)
    assert capped.categories == tuple(f"c{i:02d}" for i in range(50))
    # c50 … c59 hold 10 + 9 + … + 1 = 55 of 60+59+…+1 = 1830 values
    assert capped.shares[-1] == pytest.approx(55 / 1830)
    assert bin_counts(capped, ["c59", "c00", "new"]).tolist() == [1] + [0] * 49 + [2]


def test_categorical_profile_rejects_other_as_a_name() -> None:
    with pytest.raises(ValueError, match=OTHER):
        CategoricalProfile("k", 1, ("a", OTHER), (0.5, 0.5, 0.0))


def test_chi_squared_drift_with_an_unseen_category() -> None:
    f = categorical_profile("k", ["a"] * 50 + ["b"] * 30 + ["c"] * 20)
    counts = bin_counts(f, ["a"] * 40 + ["b"] * 30 + ["c"] * 20 + ["d"] * 10)
    # same worked example as test_drift_stats: χ² = 9982.01, w = √99.8201 = 9.991001
    score = categorical_drift(f, counts, reference_version="v", min_samples=50)
    assert score.method is DriftMethod.CHI_SQUARED
    assert score.score == pytest.approx(9.9910009509, abs=1e-9)
    assert score.p_value is not None and score.p_value < 1e-100
    assert score.trusted and score.severity(0.3) == "critical"


def normal_figures(seed: int, n_cur: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    f = numeric_profile("x", rng.normal(size=5000))
    same = bin_counts(f, rng.normal(size=n_cur))
    shifted = bin_counts(f, rng.normal(loc=1.0, size=n_cur))
    psi_same = scores_of(numeric_drift(f, same, reference_version="v"))["psi"]
    psi_shifted = scores_of(numeric_drift(f, shifted, reference_version="v"))["psi"]
    return psi_same, psi_shifted


@pytest.mark.parametrize(("seed", "n_cur"), [(7, 2000), (8, 3000), (9, 5000)])
def test_psi_separates_a_one_sd_shift_from_sampling_noise(seed: int, n_cur: int) -> None:
    # N(0, 1) reference of 5,000 vs a window of n_cur. Observed (seeds 7, 8, 9): PSI of the same
    # distribution 0.0043, 0.0073, 0.0044 (sampling noise ≈ 9·(1/n_cur + 1/5000) = 0.006,
    # 0.005, 0.004); of a 1-SD mean shift 0.95, 0.94, 0.88. The usual bands: < 0.1 stable,
    # > 0.2 drifted.
    psi_same, psi_shifted = normal_figures(seed, n_cur)
    assert psi_same < 0.02
    assert psi_shifted > 0.5


def test_confidence_drift_and_mean_shift() -> None:
    rng = np.random.default_rng(11)
    ref_conf = rng.beta(8, 2, size=4000)
    profile = build_profile("m:1", ref_conf, rng.choice(["cat", "dog"], size=4000), version="p1")
    f = profile.confidence
    assert (f.fine_lo, f.fine_hi, f.fine_bins) == (0.0, 1.0, 200)
    cur = rng.beta(5, 3, size=3000)  # mean .625 instead of .8
    counts = bin_counts(f, cur)
    # the fine-cell estimate of the mean is within half a cell (.0025) of the exact mean
    assert histogram_mean(f, f.split(counts)[1]) == pytest.approx(cur.mean(), abs=0.0025)
    exact = mean_shift(f, counts, current_mean=float(cur.mean()))
    assert exact == pytest.approx(cur.mean() - ref_conf.mean(), abs=1e-12)
    assert exact < -0.15
    scores = confidence_drift(f, counts, reference_version=profile.version)
    assert [s.method for s in scores] == [DriftMethod.PSI, DriftMethod.KS, DriftMethod.MEAN_SHIFT]
    assert all(s.feature == CONFIDENCE_KEY and s.reference_version == "p1" for s in scores)
    assert scores_of(scores)["mean_shift"] == pytest.approx(abs(exact), abs=0.0025)
    assert scores_of(scores)["psi"] > 0.2 and scores_of(scores)["ks"] > 0.3
    steady = confidence_drift(f, bin_counts(f, ref_conf), reference_version="p1")
    assert scores_of(steady)["psi"] == 0.0 and scores_of(steady)["ks"] == pytest.approx(0.0)


def make_profile() -> tuple[dict[str, np.ndarray], ReferenceProfile]:
    rng = np.random.default_rng(21)
    n = 3000
    columns = {
        "age": rng.normal(40, 10, n),
        "country": rng.choice(["de", "fr", "it"], n, p=[0.5, 0.3, 0.2]),
        "is_new": rng.integers(0, 2, n),
    }
    conf = rng.uniform(0.5, 1.0, n)
    labels = rng.choice(["spam", "ham"], n)
    return {"conf": conf, "labels": labels, **columns}, build_profile("m:3", conf, labels, columns)


def test_profile_json_round_trip() -> None:
    _, profile = make_profile()
    data = json.loads(json.dumps(profile_to_dict(profile)))
    assert data["features"]["country"]["kind"] == "categorical"
    assert profile_from_dict(data) == profile
    # the content version is stable for the same data and names the data
    cols, again = make_profile()
    assert again.version == profile.version and len(profile.version) == 16
    other = build_profile("m:3", cols["conf"][:-1], cols["labels"][:-1])
    assert other.version != profile.version


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("format",), 2, "format is 2; expected 1"),
        (("n_samples",), "3000", "n_samples is '3000'; expected int"),
        (("features", "age", "fine", "lo"), None, "features.age.fine.lo is None"),
        (("features", "age", "edges"), [1, "x"], "features.age.edges is"),
        (("features", "age", "kind"), "ordinal", "kind is 'ordinal'"),
        (("features", "age", "proportions"), [0.5, 0.5], "2 proportions for 9 edges"),
        (("confidence", "kind"), "categorical", "confidence"),
    ],
)
def test_profile_from_dict_names_the_bad_key(
    path: tuple[str, ...], value: object, message: str
) -> None:
    _, profile = make_profile()
    data = json.loads(json.dumps(profile_to_dict(profile)))
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ValueError, match=message):
        profile_from_dict(data)


def test_build_profile_checks_lengths() -> None:
    with pytest.raises(ValueError, match="age has 2 values; expected 3"):
        build_profile("m", [0.9, 0.8, 0.7], ["a", "b", "a"], {"age": np.array([1.0, 2.0])})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        build_profile("m", [1.2], ["a"])


def test_window_scores_from_batches_and_trust() -> None:
    _, profile = make_profile()
    rng = np.random.default_rng(22)
    window: dict[str, np.ndarray] = {}
    for _ in range(4):  # four micro-batches of 100
        batch = bin_batch(
            profile,
            rng.uniform(0.5, 1.0, 100),
            rng.choice(["spam", "ham"], 100),
            {
                "age": rng.normal(55, 10, 100),  # 1.5 SD shift
                "country": rng.choice(["de", "fr", "it"], 100, p=[0.5, 0.3, 0.2]),
                "unprofiled": rng.normal(size=100),
            },
        )
        assert set(batch) == {CONFIDENCE_KEY, LABEL_KEY, "age", "country"}
        for key, counts in batch.items():
            window[key] = window.get(key, 0) + counts
    scores = profile_drift(profile, window, min_samples=500)
    by_key = {(s.feature, s.method.value): s for s in scores}
    assert set(by_key) == {
        (CONFIDENCE_KEY, "psi"),
        (CONFIDENCE_KEY, "ks"),
        (CONFIDENCE_KEY, "mean_shift"),
        (LABEL_KEY, "chi_squared"),
        ("age", "psi"),
        ("age", "js_distance"),
        ("age", "ks"),
        ("country", "chi_squared"),
    }
    age = by_key[("age", "psi")]
    assert age.n_samples == 400 and not age.trusted
    assert age.score > 1.0 and age.severity(0.2) is None  # untrusted: no alert
    trusted = profile_drift(profile, window, min_samples=400)
    age = next(s for s in trusted if (s.feature, s.method) == ("age", DriftMethod.PSI))
    assert age.trusted and age.severity(0.2) == "critical"
    # a feature absent from the window has zero counts: score 0, not trusted
    age_profile = profile.features["age"]
    assert isinstance(age_profile, NumericProfile)
    empty = numeric_drift(
        age_profile,
        np.zeros(age_profile.n_cells, np.int64),
        reference_version="v",
        min_samples=0,
    )
    assert all(s.score == 0.0 and s.n_samples == 0 and not s.trusted for s in empty)
