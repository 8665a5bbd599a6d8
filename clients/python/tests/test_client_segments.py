"""The client's segment rule and fallback chain give exactly what Caliber's policy gives on
the same inputs, and LocalCalibrator follows a version's segment maps."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from caliber_client import LocalCalibrator
from caliber_client.appliers import CalibrationMap
from caliber_client.http import Api
from caliber_client.segments import ClippedMap, calibrate_segments, segment_of

from shared.recalibration.appliers import build
from shared.recalibration.artifact import make_artifact
from shared.recalibration.maps import IDENTITY
from shared.recalibration.segments import ClippedMap as SharedClippedMap
from shared.recalibration.segments import calibrate_segments as shared_calibrate_segments
from shared.recalibration.segments import segment_of as shared_segment_of
from shared.recalibration.segments import segment_values

CLASSES = ["a", "b", "c"]
GOLF = make_artifact("isotonic", "confidence", {"x": [0.5, 0.9], "y": [0.0, 1.0]})
POLO = make_artifact("platt", "confidence", {"a": 2.0, "b": 0.3})
CHESS = make_artifact("temperature", "probabilities", {"beta": 0.6}, CLASSES)
BASE = make_artifact("temperature", "confidence", {"beta": 0.5})
BROKEN = {"kind": "dirichlet", "input": "confidence", "params": {}}


@pytest.mark.parametrize(
    ("features", "metadata"),
    [
        ({"sport": "golf"}, None),
        ({"sport": ""}, {"sport": "polo"}),  # an empty category is missing, not metadata
        ({"sport": 3}, None),
        ({"sport": 3.0}, None),
        ({"sport": -2.0}, None),
        ({"sport": 0.5}, None),
        ({"sport": 1e-7}, None),
        ({"sport": 1e20}, None),
        ({"sport": math.inf}, None),
        ({"sport": math.nan}, {"sport": "golf"}),  # a missing number: no segment
        ({"sport": True}, {"sport": "golf"}),  # not a number: metadata
        ({"sport": None}, {"sport": "golf"}),
        ({"other": 1.0}, {"sport": "golf"}),
        (None, {"sport": "golf"}),
        (None, {"sport": ""}),
        ({}, {}),
        (None, None),
    ],
)
def test_segment_of_equals_caliber(features: Any, metadata: Any) -> None:
    assert segment_of("sport", features, metadata) == shared_segment_of("sport", features, metadata)


def test_numpy_numbers_are_segmented_as_the_policy_segments_them() -> None:
    # a numpy number in a sent event travels as a numeric feature: the policy's batch rule
    values = [np.int64(3), np.float64(0.5), np.float32(2.0), np.float64("nan")]
    policy = segment_values(
        "sport", len(values), {"sport": np.asarray(values, dtype=np.float64)}, {}, None
    )
    assert [segment_of("sport", {"sport": v}, None) for v in values] == policy == [
        "3", "0.5", "2", None
    ]  # fmt: skip


def _inputs() -> tuple[Any, Any, list[str | None]]:
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 2, size=(120, 3))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    conf = probs.max(axis=1)
    conf[:3] = [0.0, 1.0, np.nan]
    probs[4] = np.nan
    segments = [["golf", "polo", "chess", "broken", "darts", None][i % 6] for i in range(120)]
    return conf, probs, segments


def _maps(kind: str) -> tuple[Any, dict[str, Any]]:
    arts = {"golf": GOLF, "polo": POLO, "chess": CHESS}
    if kind == "client":
        maps: dict[str, Any] = {
            s: ClippedMap(CalibrationMap(f"v-{s}", a), 0.1, 0.9) for s, a in arts.items()
        }
        return CalibrationMap("base", BASE), maps
    maps = {s: SharedClippedMap(build(f"v-{s}", a), 0.1, 0.9) for s, a in arts.items()}
    return build("base", BASE), maps


class Raises:
    version = "raises-1"

    def apply(self, *args: Any) -> Any:
        raise ValueError("cannot apply")


@pytest.mark.parametrize("base_fails", [False, True])
def test_the_fallback_chain_equals_caliber(base_fails: bool) -> None:
    conf, probs, segments = _inputs()
    ours_base, ours = _maps("client")
    theirs_base, theirs = _maps("shared")
    ours["broken"] = theirs["broken"] = Raises()  # a failing segment map: the base decides
    if base_fails:
        ours_base = theirs_base = Raises()  # then the raw confidence (identity)
    got = calibrate_segments(ours_base, ours, segments, conf, probs, None, CLASSES)
    want = shared_calibrate_segments(theirs_base, theirs, segments, conf, probs, None, CLASSES)
    np.testing.assert_array_equal(got, want.confidences)
    # hand-checked: golf's isotonic map of 0.7 is 0.5; polo's platt output kept under 0.9
    one = calibrate_segments(ours_base, ours, ["golf", "polo"], np.asarray([0.7, 0.99]))
    assert one[0] == pytest.approx(0.5, abs=1e-12) and one[1] == 0.9


def test_without_segments_or_base_the_raw_confidence() -> None:
    conf, _, _ = _inputs()
    got = calibrate_segments(None, {}, None, conf)
    want = shared_calibrate_segments(IDENTITY, {}, None, conf).confidences
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, conf)
    with pytest.raises(ValueError, match="segments"):
        calibrate_segments(None, {}, ["golf"], conf)


# --- LocalCalibrator against a gateway answering from a dict ---------------------------------


class Gateway:
    """Answers the three routes the calibrator reads, from what a test sets."""

    def __init__(self) -> None:
        self.segment_key: str | None = "sport"
        self.maps: list[dict[str, Any]] = [_item("golf", "v-golf", GOLF)]
        self.segment_maps_down = False
        self.asked: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.asked.append(path)
        if path == "/api/models/7":
            model = {"abstain_threshold": 0.5, "segment_key": self.segment_key,
                     "calibrator_version": "base"}  # fmt: skip
            return httpx.Response(200, json=model)
        if path == "/api/calibration-artifacts/base":
            return httpx.Response(200, json={"artifact": BASE})
        if path == "/api/models/7/segment-maps" and not self.segment_maps_down:
            body = {"model_version_id": 7, "segment_key": self.segment_key,
                    "segment_maps": self.maps}  # fmt: skip
            return httpx.Response(200, json=body)
        return httpx.Response(503, json={"detail": "down"})


def _item(segment: str, version: str, artifact: Any) -> dict[str, Any]:
    artifact = json.loads(json.dumps(artifact))  # as JSON carries it
    return {"segment": segment, "calibrator_version": version, "artifact": artifact,
            "clip_low": 0.2, "clip_high": 0.8}  # fmt: skip


@pytest.fixture
def gateway() -> Iterator[tuple[Gateway, LocalCalibrator]]:
    gw = Gateway()
    with (
        Api("http://gateway", "k", retries=0, transport=httpx.MockTransport(gw)) as api,
        LocalCalibrator(api, 7, background=False) as cal,
    ):
        yield gw, cal


def test_the_calibrator_applies_and_follows_segment_maps(
    gateway: tuple[Gateway, LocalCalibrator], caplog: pytest.LogCaptureFixture
) -> None:
    gw, cal = gateway
    assert (cal.version, cal.segment_key, cal.segment_versions) == (
        "base",
        "sport",
        {"golf": "v-golf"},
    )
    # golf: isotonic 0.7 → 0.5; 0.95 → 1.0 clipped to 0.8; others: beta 0.5 on 0.9 = 0.75
    assert cal.calibrate(0.7, features={"sport": "golf"}) == pytest.approx(0.5, abs=1e-12)
    assert cal.calibrate(0.95, metadata={"sport": "golf"}) == 0.8
    assert cal.calibrate(0.9, features={"sport": "polo"}) == pytest.approx(0.75, abs=1e-12)
    assert cal.calibrate(0.9) == pytest.approx(0.75, abs=1e-12)
    segments = cal.segments(features=[{"sport": "golf"}, {"sport": "polo"}, None])
    assert segments == ["golf", "polo", None]
    batch = cal.calibrate_batch([0.95, 0.9, 0.9], segments=segments)
    np.testing.assert_allclose(batch, [0.8, 0.75, 0.75], atol=1e-12)
    golf = cal._serving.segment_maps["golf"]
    # a refresh with nothing new changes nothing and rebuilds nothing
    assert cal.refresh() is False and cal._serving.segment_maps["golf"] is golf
    # a refit of golf, a new segment polo and an unusable one (it falls back)
    gw.maps = [_item("golf", "v-golf-2", POLO), _item("polo", "v-polo", GOLF),
               _item("chess", "v-bad", BROKEN)]  # fmt: skip
    assert cal.refresh() is True
    assert cal.segment_versions == {"golf": "v-golf-2", "polo": "v-polo"}
    assert cal.calibrate(0.7, features={"sport": "polo"}) == pytest.approx(0.5, abs=1e-12)
    # the segment maps unreachable: the last good ones stay, with a log line
    gw.segment_maps_down = True
    with caplog.at_level("WARNING", logger="caliber_client"):
        assert cal.refresh() is False
    assert "segment maps of model version 7 not refreshed" in caplog.text
    assert cal.segment_versions == {"golf": "v-golf-2", "polo": "v-polo"}
    # segments turned off: no more segment maps, nor asking for them
    gw.segment_key, gw.segment_maps_down = None, False
    assert cal.refresh() is True and (cal.segment_key, cal.segment_versions) == (None, {})
    assert cal.segments(features=[{"sport": "golf"}]) is None
    gw.asked.clear()
    assert cal.refresh() is False and gw.asked == ["/api/models/7"]
    assert cal.calibrate(0.7, features={"sport": "polo"}) == pytest.approx(
        1 / (1 + math.sqrt(3 / 7)), abs=1e-12
    )  # beta 0.5 on 0.7: sqrt(7/3) / (sqrt(7/3) + 1)
