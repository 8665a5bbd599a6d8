"""Synthetic inference events whose calibration is known in advance.

A model version is described by the distribution of its confidence (a Beta distribution
stretched over [1/C, 1]) and by its accuracy-versus-confidence curve
``P(correct | c) = clip(c − overconfidence, 0, 1)``: ``overconfidence = 0`` is a perfectly
calibrated model, 0.15 one that claims 15 points more than it delivers. The expected ECE
follows from those two by integration; the realised ECE of a finite sample is computed
from the generated arrays themselves.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy import stats

from shared.contracts.batches import PredictionColumns

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One simulated model version."""

    name: str = "classifier"
    version: str = "1"
    tenant: str = "default"
    classes: tuple[str, ...] = ("cat", "dog", "bird")
    confidence_alpha: float = 4.0
    confidence_beta: float = 1.5
    overconfidence: float = 0.0
    """P(correct | c) = clip(c − overconfidence, 0, 1)."""
    numeric_features: int = 0
    categorical_features: int = 0
    categories: tuple[str, ...] = ("red", "green", "blue")
    with_probabilities: bool = True
    label_share: float = 1.0
    """Share of events whose ground truth is ever delivered."""
    late_label_share: float = 0.0
    """Share of the delivered labels that arrive late (after the other events)."""
    label_delay_s: tuple[float, float] = (60.0, 3 * 3600.0)
    """Event-time delay range of late labels, seconds."""
    feature_shift: dict[str, float] = field(default_factory=dict)
    """Numeric feature name → mean shift in standard deviations, from ``shift_at`` on."""
    shift_at: int | None = None
    confidence_shift: float = 0.0
    """From ``shift_at`` on, confidence moves this share of the way down to 1/C: the shifted
    inputs land where the model is less sure (it stays as calibrated as before)."""

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def p_correct(self, confidence: FloatArray) -> FloatArray:
        return np.clip(confidence - self.overconfidence, 0.0, 1.0)


@dataclass(slots=True)
class Generated:
    """Predictions of one model version, their labels, and what the metrics should say."""

    spec: ModelSpec
    predictions: PredictionColumns
    ground_truth: list[str]
    correct: npt.NDArray[np.bool_]
    labeled: npt.NDArray[np.bool_]
    late: npt.NDArray[np.bool_]
    label_time_ms: npt.NDArray[np.int64]
    expected_ece: float


def expected_ece(spec: ModelSpec, bins: int = 10, grid: int = 200_001) -> float:
    """ECE of an infinite sample of ``spec`` with ``bins`` equal-width bins (integrated)."""
    lo = 1.0 / spec.n_classes
    c = np.linspace(lo, 1.0, grid)
    u = (c - lo) / (1.0 - lo)
    density = stats.beta.pdf(u, spec.confidence_alpha, spec.confidence_beta)
    density = np.nan_to_num(density, posinf=0.0)
    weight = density / density.sum()
    idx = np.minimum(np.floor(c * bins + 1e-9).astype(np.int64), bins - 1)
    mass = np.bincount(idx, weight, bins)
    conf = np.bincount(idx, weight * c, bins)
    acc = np.bincount(idx, weight * spec.p_correct(c), bins)
    nonzero = mass > 0
    return float(np.sum(np.abs(acc[nonzero] - conf[nonzero])))


def generate(
    spec: ModelSpec,
    n: int,
    seed: int,
    start_ms: int,
    rate_per_s: float = 1_000.0,
    grid: float | None = None,
) -> Generated:
    """``n`` events of ``spec``, reproducible for a given ``seed``.

    ``grid`` rounds confidences to a multiple of it (e.g. 0.001), so window answers can be
    compared exactly with the pure metric functions.
    """
    rng = np.random.default_rng(seed)
    classes = np.asarray(spec.classes)
    k = spec.n_classes
    lo = 1.0 / k
    conf = lo + (1.0 - lo) * rng.beta(spec.confidence_alpha, spec.confidence_beta, n)
    if spec.confidence_shift and spec.shift_at is not None:
        conf[spec.shift_at :] = lo + (conf[spec.shift_at :] - lo) * (1.0 - spec.confidence_shift)
    if grid:
        conf = np.clip(np.round(conf / grid) * grid, np.ceil(lo / grid) * grid, 1.0)
    correct = rng.random(n) < spec.p_correct(conf)
    pred_idx = rng.integers(0, k, n)
    offset = rng.integers(1, k, n)  # a wrong answer is any other class
    truth_idx = np.where(correct, pred_idx, (pred_idx + offset) % k)
    times = start_ms + (np.arange(n) * (1000.0 / rate_per_s)).astype(np.int64)
    probs = _probabilities(rng, conf, pred_idx, k) if spec.with_probabilities else None
    labeled = rng.random(n) < spec.label_share
    late = labeled & (rng.random(n) < spec.late_label_share)
    delay_ms = np.where(
        late, rng.uniform(spec.label_delay_s[0], spec.label_delay_s[1], n) * 1000, 0
    ).astype(np.int64)
    cols = PredictionColumns(
        tenant=spec.tenant,
        model_name=spec.name,
        model_version=spec.version,
        event_ids=[str(uuid.UUID(int=int(x), version=4)) for x in _uuid_ints(rng, n)],
        event_time_ms=times,
        predicted_labels=classes[pred_idx].tolist(),
        confidences=conf,
        class_labels=list(spec.classes) if probs is not None else [],
        probabilities=probs,
        numeric_features=_numeric(rng, spec, n),
        categorical_features=_categorical(rng, spec, n),
    )
    return Generated(
        spec=spec,
        predictions=cols,
        ground_truth=classes[truth_idx].tolist(),
        correct=correct,
        labeled=labeled,
        late=late,
        label_time_ms=times + delay_ms,
        expected_ece=expected_ece(spec),
    )


def _uuid_ints(rng: np.random.Generator, n: int) -> list[int]:
    hi = rng.integers(0, 2**63, n, dtype=np.int64).astype(object)
    low = rng.integers(0, 2**63, n, dtype=np.int64).astype(object)
    return [(int(h) << 64) | int(x) for h, x in zip(hi, low, strict=True)]


def _probabilities(
    rng: np.random.Generator, conf: FloatArray, pred_idx: npt.NDArray[np.int64], k: int
) -> FloatArray:
    """Probability vectors whose top class is the prediction with probability ``conf``."""
    n = len(conf)
    rest = rng.dirichlet(np.ones(k - 1), n) * (1.0 - conf)[:, None] if k > 1 else np.zeros((n, 0))
    # Where a random split would beat the top class, spread the rest evenly instead.
    even = np.repeat(((1.0 - conf) / max(k - 1, 1))[:, None], k - 1, axis=1)
    rest = np.where((rest.max(axis=1, initial=0.0) > conf)[:, None], even, rest)
    probs = np.empty((n, k))
    rows = np.arange(n)
    probs[rows, pred_idx] = conf
    other = (pred_idx[:, None] + 1 + np.arange(k - 1)[None, :]) % k
    probs[rows[:, None], other] = rest
    return probs


def _numeric(rng: np.random.Generator, spec: ModelSpec, n: int) -> dict[str, FloatArray]:
    out = {}
    for j in range(spec.numeric_features):
        name = f"x{j}"
        values = rng.normal(float(j), 1.0, n)
        shift = spec.feature_shift.get(name)
        if shift and spec.shift_at is not None:
            values[spec.shift_at :] += shift
        out[name] = values
    return out


def _categorical(rng: np.random.Generator, spec: ModelSpec, n: int) -> dict[str, list[str]]:
    cats = np.asarray(spec.categories)
    return {
        f"c{j}": rng.choice(cats, n, p=_shares(len(cats), j)).tolist()
        for j in range(spec.categorical_features)
    }


def _shares(k: int, j: int) -> FloatArray:
    w = np.arange(1, k + 1, dtype=np.float64) ** (1 + j % 3)
    return w / w.sum()
