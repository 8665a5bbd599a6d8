"""The client's in-process maps give exactly what Caliber's policy gives on the same inputs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from caliber_client.appliers import ArtifactError, CalibrationMap

from shared.recalibration.appliers import ArtifactError as SharedArtifactError
from shared.recalibration.appliers import build
from shared.recalibration.artifact import make_artifact

CLASSES = ["a", "b", "c"]
CONFIDENCE_ARTIFACTS = [
    make_artifact("temperature", "confidence", {"beta": 0.5}),
    make_artifact("platt", "confidence", {"a": 1.3, "b": -0.4}),
    make_artifact("beta", "confidence", {"a": 0.8, "b": 1.7, "c": 0.1}),
    make_artifact("isotonic", "confidence", {"x": [0.1, 0.5, 0.9], "y": [0.05, 0.5, 0.8]}),
    make_artifact("histogram", "confidence", {"values": [0.05, 0.2, 0.5, 0.6, 0.9]}),
]
VECTOR_ARTIFACTS = [
    make_artifact("temperature", "probabilities", {"beta": 0.7}, CLASSES),
    make_artifact("temperature", "logits", {"beta": 1.4}, CLASSES),
    make_artifact("vector_scaling", "probabilities",
                  {"w": [0.9, 1.1, 0.7], "b": [0.1, -0.2, 0.05]}, CLASSES),
    make_artifact("isotonic", "probabilities",
                  {"x": [[0.0, 0.5, 1.0], [0.0, 0.3, 1.0], [0.0, 0.6, 1.0]],
                   "y": [[0.0, 0.4, 0.9], [0.1, 0.2, 1.0], [0.0, 0.7, 0.95]]}, CLASSES),
]  # fmt: skip


def _inputs(seed: int) -> tuple[Any, Any, Any]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, size=(200, 3))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    conf = probs.max(axis=1)
    conf[:4] = [0.0, 1.0, 0.5, np.nan]  # the ends, a bin edge, a missing value
    probs[5] = np.nan  # a row without its vector
    return conf, probs, logits


@pytest.mark.parametrize("artifact", CONFIDENCE_ARTIFACTS, ids=lambda a: a["kind"])
def test_confidence_maps_equal_caliber(artifact: dict[str, Any]) -> None:
    conf, _, _ = _inputs(1)
    ours = CalibrationMap("v", artifact).apply(conf)
    theirs = build("v", artifact).apply(conf, None, None, [])
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("artifact", VECTOR_ARTIFACTS, ids=lambda a: f"{a['kind']}-{a['input']}")
@pytest.mark.parametrize("labels", [CLASSES, ["c", "a", "b"], ["a", "b", "x"]])
def test_vector_maps_equal_caliber(artifact: dict[str, Any], labels: list[str]) -> None:
    conf, probs, logits = _inputs(2)
    ours = CalibrationMap("v", artifact).apply(conf, probs, logits, labels)
    theirs = build("v", artifact).apply(conf, probs, logits, labels)
    np.testing.assert_array_equal(ours, theirs)


def test_a_hand_checked_value() -> None:
    # temperature beta 0.5 on 0.9: sigmoid(0.5 * ln 9) = 3 / (3 + 1) = 0.75
    m = CalibrationMap("v", make_artifact("temperature", "confidence", {"beta": 0.5}))
    assert m.apply(np.asarray([0.9]))[0] == pytest.approx(0.75, abs=1e-12)


@pytest.mark.parametrize(
    "artifact",
    [
        {"kind": "dirichlet", "input": "confidence", "params": {}},
        {"kind": "platt", "input": "features", "params": {}},
        {"kind": "platt", "input": "confidence"},
        {"kind": "temperature", "input": "probabilities", "params": {"beta": 1.0}},
    ],
)
def test_both_refuse_the_same_bad_artifacts(artifact: dict[str, Any]) -> None:
    with pytest.raises(ArtifactError):
        CalibrationMap("v", artifact)
    with pytest.raises(SharedArtifactError):
        build("v", artifact)
