"""What a calibration method fits on, and what a fit returns (an artifact or a failure).

A fit never raises for bad data: one class, too few samples, non-finite inputs or
parameters and an optimiser that does not converge are :class:`FitFailure` values with a
reason code and a message, so a worker records them and goes on.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

EPS = 1e-12
"""Probabilities are kept in [EPS, 1 − EPS] before a logarithm or a logit."""


class FailureReason(StrEnum):
    ONE_CLASS = "one_class"
    TOO_FEW_SAMPLES = "too_few_samples"
    NON_FINITE = "non_finite"
    NO_CONVERGENCE = "no_convergence"
    NEEDS_VECTORS = "needs_probability_vectors"


@dataclass(frozen=True, slots=True)
class FitData:
    """Labeled predictions of one model version, as arrays.

    ``confidences`` (N,) raw top-label confidence and ``correct`` (N,) ground truth equals
    predicted label. ``scores`` (N, K), when every row carries a vector, holds logits or
    log-probabilities (``score_input`` says which) in ``classes`` order, and ``true_index``
    (N,) the index of each row's ground truth in ``classes``.
    """

    confidences: FloatArray
    correct: BoolArray
    classes: tuple[str, ...] = ()
    scores: FloatArray | None = None
    true_index: IntArray | None = None
    score_input: str = "probabilities"

    def __len__(self) -> int:
        return int(self.confidences.shape[0])

    @property
    def has_vectors(self) -> bool:
        return self.scores is not None and self.true_index is not None and len(self.classes) >= 2

    def take(self, rows: npt.NDArray[Any]) -> FitData:
        return FitData(
            confidences=self.confidences[rows],
            correct=self.correct[rows],
            classes=self.classes,
            scores=None if self.scores is None else self.scores[rows],
            true_index=None if self.true_index is None else self.true_index[rows],
            score_input=self.score_input,
        )


def log_scores(probabilities: FloatArray) -> FloatArray:
    """log(p + EPS): softmax ignores a per-row shift, so scaling these equals scaling logits."""
    return np.log(np.asarray(probabilities, dtype=np.float64) + EPS)


@dataclass(frozen=True, slots=True)
class Fitted:
    """A fitted map: ``artifact`` is its JSON object (see ``shared.recalibration.artifact``)."""

    method: str
    artifact: dict[str, Any]


@dataclass(frozen=True, slots=True)
class FitFailure:
    method: str
    reason: FailureReason
    message: str


FitResult = Fitted | FitFailure


def check_binary(method: str, data: FitData, min_samples: int) -> FitFailure | None:
    """The failures every top-label fit shares: too few rows, non-finite input, one class."""
    n = len(data)
    if n < min_samples:
        return FitFailure(
            method, FailureReason.TOO_FEW_SAMPLES, f"{n} labeled rows, need {min_samples}"
        )
    if not np.isfinite(data.confidences).all():
        bad = int((~np.isfinite(data.confidences)).sum())
        return FitFailure(method, FailureReason.NON_FINITE, f"{bad} confidences are not finite")
    positives = int(data.correct.sum())
    if positives in (0, n):
        which = "correct" if positives else "wrong"
        return FitFailure(method, FailureReason.ONE_CLASS, f"all {n} predictions are {which}")
    return None


def check_vectors(method: str, data: FitData, min_samples: int) -> FitFailure | None:
    """The failures of a fit on probability or logit vectors."""
    if not data.has_vectors:
        return FitFailure(
            method,
            FailureReason.NEEDS_VECTORS,
            "needs a probability or logit vector and a known true class on every row",
        )
    assert data.scores is not None and data.true_index is not None
    n = len(data)
    if n < min_samples:
        return FitFailure(
            method, FailureReason.TOO_FEW_SAMPLES, f"{n} labeled rows, need {min_samples}"
        )
    if not np.isfinite(data.scores).all():
        return FitFailure(method, FailureReason.NON_FINITE, "probability vectors are not finite")
    if np.unique(data.true_index).size < 2:
        return FitFailure(method, FailureReason.ONE_CLASS, "every row has the same true class")
    return None
