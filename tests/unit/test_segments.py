"""Per-segment calibration: the labeled window's encoding, refit cadence, fits with
clipping, the serve-time fallback chain, the cap of the policy's view, and the aggregator's
and policy's use of them, with hand-checked numbers."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest

from services.aggregator.processing import Joined, PredictionRecord, segment_windows
from services.aggregator.refit import SegmentRefitter, segment_map_record
from services.aggregator.settings import AggregatorSettings
from services.policy.processing import decide
from shared.contracts.batches import DecisionColumns, PredictionColumns
from shared.contracts.codec import AvroCodec, Decoded
from shared.recalibration.maps import IDENTITY, from_registry
from shared.recalibration.segments import (
    ClippedMap,
    SegmentFitOptions,
    calibrate_segments,
    decode_pairs,
    encode_pair,
    fit_segment,
    refit_due,
    segment_of,
    segment_values,
)
from shared.registry.segment_maps import SegmentMapView, build_segment_map
from shared.settings import Settings

CODEC = AvroCodec()


def constant(version: str, value: float) -> Any:
    """A histogram map with one bin: every confidence becomes ``value``."""
    params = {"bins": 1, "values": [value]}
    return from_registry(version, {"kind": "histogram", "input": "confidence", "params": params})


class Broken:
    version = "broken-1"

    def apply(self, confidences: Any, probabilities: Any, logits: Any, labels: Any) -> Any:
        raise ValueError("cannot apply")


# --- the window ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("confidence", "correct", "encoded"),
    [(0.8731, True, 8731), (0.8731, False, -8732), (1.0, False, -10001), (0.0, True, 0),
     (0.00004, True, 0), (0.99996, True, 10000), (1.7, True, 10000), (float("nan"), False, -1)],
)  # fmt: skip
def test_a_labeled_event_is_one_small_integer(
    confidence: float, correct: bool, encoded: int
) -> None:
    assert encode_pair(confidence, correct) == encoded


def test_pairs_decode_in_order() -> None:
    conf, correct = decode_pairs([8731, b"-8732", "0", -10001])
    assert conf.tolist() == [0.8731, 0.8731, 0.0, 1.0]
    assert correct.tolist() == [True, False, True, False]


@pytest.mark.parametrize(
    ("n", "last", "due"),
    [(49, None, False), (50, None, True), (59, 50, False), (60, 50, True),
     (85, 50, True), (94, 85, False), (95, 85, True), (5, None, False)],
)  # fmt: skip
def test_refit_cadence_m_then_every_n(n: int, last: int | None, due: bool) -> None:
    # M = 50, N = 10: first fit at 50 labels, then after every 10 new ones; 35 arriving at
    # once (50 -> 85) make one fit, and the next is due 10 after that one.
    assert refit_due(n, last, every=10, min_labels=50) is due


# --- fits ------------------------------------------------------------------------------------


def _window(pairs: list[tuple[float, bool, int]]) -> list[int]:
    out: list[int] = []
    for conf, correct, times in pairs:
        out += [encode_pair(conf, correct)] * times
    return out


def test_isotonic_outputs_are_clipped_to_the_band() -> None:
    # 30 wrong at 0.3 and 30 right at 0.9: PAV gives 0 and 1, clipped to 0.01 and 0.99;
    # at 0.6 the line between them gives (0.01 + 0.99) / 2 = 0.5.
    fitted = fit_segment(_window([(0.3, False, 30), (0.9, True, 30)]), SegmentFitOptions())
    assert fitted.version is not None and fitted.version.startswith("isotonic-")
    assert fitted.artifact is not None
    assert fitted.artifact["params"] == {"x": [0.3, 0.9], "y": [0.01, 0.99]}
    assert fitted.rows == 60
    m = ClippedMap(from_registry(fitted.version, fitted.artifact), 0.01, 0.99)
    out = m.apply(np.array([0.1, 0.3, 0.6, 0.9, 1.0]), None, None, [])
    assert out.tolist() == pytest.approx([0.01, 0.01, 0.5, 0.99, 0.99])


def test_an_over_confident_segment_is_pulled_down() -> None:
    # Confidence 0.9 right 60 % of the time, 0.7 right 40 %: the map says 0.6 and 0.4.
    fitted = fit_segment(
        _window([(0.9, True, 30), (0.9, False, 20), (0.7, True, 20), (0.7, False, 30)]),
        SegmentFitOptions(),
    )
    assert fitted.artifact is not None
    assert fitted.artifact["params"]["y"] == pytest.approx([0.4, 0.6])


def test_other_methods_are_clipped_when_applied() -> None:
    fitted = fit_segment(
        _window([(0.3, False, 30), (0.9, True, 29), (0.9, False, 1)]),
        SegmentFitOptions(method="platt", clip_low=0.2, clip_high=0.8),
    )
    assert fitted.version is not None and fitted.version.startswith("platt-")
    record = segment_map_record(
        "t/m/v1", "sport=golf", fitted, 60, SegmentFitOptions(clip_low=0.2, clip_high=0.8), 1
    )
    m = build_segment_map(record)
    assert m is not None
    out = m.apply(np.array([0.01, 0.99]), None, None, [])
    assert out.tolist() == [0.2, 0.8]


@pytest.mark.parametrize(
    ("pairs", "reason"),
    [([(0.6, True, 25), (0.6, False, 24)], "too_few_samples"),
     ([(0.6, True, 60)], "one_class")],
)  # fmt: skip
def test_a_failed_fit_has_no_version_and_says_why(
    pairs: list[tuple[float, bool, int]], reason: str
) -> None:
    fitted = fit_segment(_window(pairs), SegmentFitOptions(min_labels=50))
    assert fitted.version is None and fitted.artifact is None
    assert fitted.reason is not None and fitted.reason.startswith(reason)
    record = segment_map_record("t/m/v1", "sport=golf", fitted, 49, SegmentFitOptions(), 5)
    assert record["calibrator"] is None and record["segment"] == "golf"
    assert build_segment_map(record) is None  # the segment falls back


# --- serving ---------------------------------------------------------------------------------


def test_each_event_by_its_segment_map_else_the_version_map_else_identity() -> None:
    base = constant("hist-base", 0.7)
    maps = {"golf": constant("hist-golf", 0.2), "polo": Broken()}
    conf = np.array([0.9, 0.8, 0.6, 0.55, 0.95])
    got = calibrate_segments(base, maps, ["golf", "chess", None, "polo", "golf"], conf)
    # golf by its map; chess (no map), none and polo (its map fails) by the version's map.
    assert got.confidences.tolist() == [0.2, 0.7, 0.7, 0.7, 0.2]
    assert got.versions == ["hist-golf", "hist-base", "hist-base", "hist-base", "hist-golf"]
    # The version's map failing too leaves identity: the raw confidence, never an error.
    got = calibrate_segments(Broken(), maps, ["golf", "polo"], np.array([0.9, 0.55]))
    assert got.confidences.tolist() == [0.2, 0.55]
    assert got.versions == ["hist-golf", "identity"]


def test_versions_are_null_when_the_batch_map_decided_every_event() -> None:
    base = constant("hist-base", 0.7)
    got = calibrate_segments(base, {"golf": constant("g", 0.1)}, ["chess", None], np.ones(2))
    assert got.versions is None and got.confidences.tolist() == [0.7, 0.7]
    got = calibrate_segments(IDENTITY, {}, None, np.array([0.3]))
    assert got.versions is None and got.confidences.tolist() == [0.3]


def test_segment_values_from_categories_numbers_or_metadata() -> None:
    n = 4
    numeric = {"region": np.array([3.0, 0.5, np.nan, -2.0])}
    cats = {"sport": ["golf", "", "polo", "golf"]}
    meta = [{"league": "a"}, {}, {"league": ""}, {"league": "b"}]
    assert segment_values("sport", n, numeric, cats, meta) == ["golf", None, "polo", "golf"]
    assert segment_values("region", n, numeric, cats, meta) == ["3", "0.5", None, "-2"]
    assert segment_values("league", n, numeric, cats, meta) == ["a", None, None, "b"]
    assert segment_values("other", n, numeric, cats, None) == [None] * 4


def _map_record(segment: str, value: float | None, key: str = "sport") -> dict[str, Any]:
    artifact = (
        None
        if value is None
        else json.dumps(
            {"kind": "histogram", "input": "confidence", "params": {"bins": 1, "values": [value]}}
        )
    )
    return {
        "tenant": "t", "model_name": "m", "model_version": "v1", "segment_key": key,
        "segment": segment, "calibrator_version": None if value is None else f"h-{segment}",
        "calibrator": artifact, "clip_low": 0.01, "clip_high": 0.99, "n_labeled": 60,
        "rows": 60, "reason": None, "fitted_at_ms": 1,
    }  # fmt: skip


def test_the_policy_view_keeps_at_most_the_cap_of_segments() -> None:
    view = SegmentMapView(Settings(), "x.segment-maps", CODEC, cap=2, keep_records=True)
    for seg in ("golf", "polo", "chess"):
        view.put(_map_record(seg, 0.3))
    assert sorted(view.maps_for("t/m/v1", "sport")) == ["golf", "polo"]  # chess: beyond
    view.put(_map_record("eu", 0.3, key="region"))  # the cap is per segment key
    assert list(view.maps_for("t/m/v1", "region")) == ["eu"]
    view.put(_map_record("polo", 1.5))  # a refit of a kept segment still lands (clipped)
    polo = view.maps_for("t/m/v1", "sport")["polo"]
    assert polo.apply(np.array([0.5]), None, None, []).tolist() == [0.99]
    view.put(_map_record("golf", None))  # its fit failed: golf falls back
    assert sorted(view.maps_for("t/m/v1", "sport")) == ["polo"]
    # the records of the maps are kept beside them, under the same cap (the segment-maps route)
    assert list(view.entries_for("t/m/v1", "sport")) == ["polo"]
    polo_entry = view.entries_for("t/m/v1", "sport")["polo"]
    assert (polo_entry.segment, polo_entry.calibrator_version) == ("polo", "h-polo")
    assert (polo_entry.clip_low, polo_entry.clip_high) == (0.01, 0.99)
    assert json.loads(polo_entry.calibrator)["params"]["values"] == [1.5]
    assert view.entries_for("t/m/v1", "league") == {}
    assert view.maps_for("t/m/v1", "league") == {}
    # Through Kafka bytes too.
    value = CODEC.encode("SegmentMap", _map_record("golf", 0.4))
    view.apply(b"t/m/v1#sport=golf", value)
    assert sorted(view.maps_for("t/m/v1", "sport")) == ["golf", "polo"]
    assert sorted(view.entries_for("t/m/v1", "sport")) == ["golf", "polo"]
    # the policy's view keeps the maps only
    policy = SegmentMapView(Settings(), "x.segment-maps", CODEC, cap=2)
    policy.apply(b"t/m/v1#sport=golf", value)
    assert list(policy.maps_for("t/m/v1", "sport")) == ["golf"]
    assert policy.entries_for("t/m/v1", "sport") == {}


# --- the policy and the aggregator -----------------------------------------------------------


def _predictions() -> PredictionColumns:
    return PredictionColumns(
        tenant="t",
        model_name="m",
        model_version="v1",
        event_ids=["e1", "e2", "e3"],
        event_time_ms=np.array([1, 2, 3], dtype=np.int64),
        predicted_labels=["a", "b", "a"],
        confidences=np.array([0.9, 0.8, 0.75]),
        categorical_features={"sport": ["golf", "polo", ""]},
    )


def test_a_decision_records_each_events_segment_and_map() -> None:
    d = decide(
        _predictions(), 0.5, constant("base", 0.7), "registry", 10, None, "sport",
        {"golf": constant("golf-map", 0.2)},
    )  # fmt: skip
    assert d.calibrated_confidences.tolist() == [0.2, 0.7, 0.7]
    assert d.review.tolist() == [True, False, False]
    assert d.calibrator_version == "base"
    assert d.calibrator_versions == ["golf-map", "base", "base"]
    assert d.segments == ["golf", "polo", None]
    decoded = CODEC.decode(CODEC.encode("DecisionBatch", d.to_record()), {"DecisionBatch"})
    assert isinstance(decoded, Decoded)
    back = DecisionColumns.from_record(decoded.record)
    assert back.calibrator_versions == d.calibrator_versions
    assert (back.segment_key, back.segments) == ("sport", ["golf", "polo", None])
    assert back.take([2, 0]).calibrator_versions == ["base", "golf-map"]


def test_the_aggregator_appends_each_labeled_event_to_its_segment() -> None:
    def rec(conf: float, segment: str, model: str = "t/m/v1") -> PredictionRecord:
        return PredictionRecord(model, 0, conf, "a", [], None, segment=segment)

    joined = [
        Joined(rec(0.9, "sport=golf"), "a", 1),
        Joined(rec(0.8, "sport=golf"), "b", 1),
        Joined(rec(0.7, ""), "a", 1),  # no segment: no window
        Joined(rec(0.6, "sport=polo", "t/m/v2"), "a", 1),
    ]
    assert segment_windows(joined) == {
        ("t/m/v1", "sport=golf"): [9000, -8001],
        ("t/m/v2", "sport=polo"): [6000],
    }
    # The segment survives the join record's round trip; an older record has none.
    r = rec(0.9, "sport=golf")
    assert PredictionRecord.decode(r.encode()).segment == "sport=golf"
    old = "\x1f".join(["t/m/v1", "5", "0.9", "a", "", "", "3", "0.8", "1"])
    assert PredictionRecord.decode(old).segment == ""


def test_segment_settings_refuse_a_window_below_the_minimum() -> None:
    with pytest.raises(ValueError, match="CALIBER_SEGMENT_MIN_LABELS=600"):
        AggregatorSettings(segment_min_labels=600)
    with pytest.raises(ValueError, match="CALIBER_SEGMENT_METHOD='magic'"):
        AggregatorSettings(segment_method="magic")


class FakeState:
    def __init__(self, counts: dict[str, int], fits: dict[str, int]) -> None:
        self.c, self.f = counts, fits
        self.read: list[str] = []

    async def models(self) -> list[str]:
        return ["t/m/v1"]

    async def counts(self, model: str) -> tuple[dict[str, int], dict[str, int]]:
        return dict(self.c), dict(self.f)

    async def windows(self, model: str, segments: list[str]) -> list[list[int]]:
        self.read += segments
        golf = _window([(0.3, False, 30), (0.9, True, 30)])
        return [golf if s == "sport=golf" else [encode_pair(0.6, True)] * 60 for s in segments]

    async def mark_fitted(self, model: str, fitted: dict[str, int]) -> None:
        self.f.update(fitted)


class FakeProducer:
    def __init__(self, undelivered: int = 0) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.undelivered = undelivered

    def produce(self, topic: str, value: bytes, key: bytes, on_delivery: Any = None) -> None:
        self.sent.append((topic, value, key))

    def flush(self, timeout: float) -> int:
        return self.undelivered


def test_a_refit_round_fits_the_due_segments_publishes_then_bookmarks() -> None:
    # golf: 60 labels, last fit at 50 (due); polo: 59, last at 50 (not yet); chess: 49 (< M);
    # tennis: 60, never fitted (due, but one class: a failed fit, published to fall back).
    state = FakeState(
        {"sport=golf": 60, "sport=polo": 59, "sport=chess": 49, "sport=tennis": 60,
         "overflow": 500},
        {"sport=golf": 50, "sport=polo": 50},
    )  # fmt: skip
    producer = FakeProducer()
    refitter = SegmentRefitter(
        state,
        producer,
        CODEC,
        "x.segment-maps",
        SegmentFitOptions(),
        10,
        1.0,
    )
    assert asyncio.run(refitter.refit_all(123)) == 2
    assert sorted(state.read) == ["sport=golf", "sport=tennis"]
    assert {key for _, _, key in producer.sent} == {
        b"t/m/v1#sport=golf",
        b"t/m/v1#sport=tennis",
    }
    records = {}
    for _, value, _ in producer.sent:
        decoded = CODEC.decode(value, {"SegmentMap"})
        assert isinstance(decoded, Decoded)
        records[decoded.record["segment"]] = decoded.record
    assert records["golf"]["n_labeled"] == 60 and records["golf"]["fitted_at_ms"] == 123
    assert json.loads(records["golf"]["calibrator"])["params"]["y"] == [0.01, 0.99]
    assert records["tennis"]["calibrator"] is None
    assert records["tennis"]["reason"].startswith("one_class")
    assert state.f == {"sport=golf": 60, "sport=polo": 50, "sport=tennis": 60}
    # Kafka not acknowledging: nothing is bookmarked, the next round fits again.
    state.c["sport=golf"] = 70
    with pytest.raises(ConnectionError):
        asyncio.run(
            SegmentRefitter(
                state, FakeProducer(1), CODEC, "x", SegmentFitOptions(), 10, 1.0
            ).refit_all(1)
        )
    assert state.f["sport=golf"] == 60


@pytest.mark.parametrize(
    ("features", "metadata", "expected"),
    [
        ({"sport": "golf"}, None, "golf"),
        ({"sport": ""}, {"sport": "polo"}, None),
        ({"sport": 3.0}, None, "3"),
        ({"sport": 0.5}, None, "0.5"),
        ({"sport": float("nan")}, None, None),
        ({"other": 1.0}, {"sport": "chess"}, "chess"),
        (None, None, None),
    ],
)
def test_one_events_segment_follows_the_columns_rule(
    features: dict[str, float | str] | None, metadata: dict[str, str] | None, expected: str | None
) -> None:
    """``segment_of`` (POST /api/calibrate) gives what ``segment_values`` (the policy) gives
    for the same event."""
    assert segment_of("sport", features, metadata) == expected
    f = features or {}
    numeric = {k: np.array([v]) for k, v in f.items() if not isinstance(v, str)}
    categorical = {k: [v] for k, v in f.items() if isinstance(v, str)}
    assert segment_values("sport", 1, numeric, categorical, [metadata or {}]) == [expected]
