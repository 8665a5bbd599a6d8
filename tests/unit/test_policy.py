"""The abstain decision, the calibration-map factory and the policy's registry rules."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from services.policy.metrics import PolicyMetrics
from services.policy.processing import PolicyProcessor, decide
from services.policy.registry_state import UNREGISTERED, RegistryState
from shared.contracts.batches import PredictionColumns
from shared.contracts.codec import AvroCodec, Decoded
from shared.contracts.topics import Topics
from shared.recalibration.maps import (
    BUILDERS,
    IDENTITY,
    CalibratorError,
    FloatArray,
    IdentityMap,
    from_registry,
)
from shared.registry.view import RegisteredVersion

TOPICS = Topics.for_namespace("unit")
NOTHING: dict[str, RegisteredVersion] = {}
CODEC = AvroCodec()


def cols(confidences: list[float], version: str = "v") -> PredictionColumns:
    n = len(confidences)
    return PredictionColumns(
        tenant="t",
        model_name="m",
        model_version=version,
        event_ids=[f"e{i}" for i in range(n)],
        event_time_ms=np.full(n, 1_000, dtype=np.int64),
        predicted_labels=["a"] * n,
        confidences=np.asarray(confidences, dtype=np.float64),
    )


def entry(version: str = "v", threshold: float = 0.6, **changes: object) -> RegisteredVersion:
    base = RegisteredVersion(
        id=7,
        tenant="t",
        name="m",
        version=version,
        stage="production",
        parent_id=None,
        abstain_threshold=threshold,
        calibrator_version="identity",
        calibrator=None,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


# --- decide -------------------------------------------------------------------------------


def test_below_threshold_is_review_and_exactly_at_threshold_is_auto() -> None:
    d = decide(cols([0.0, 0.69, 0.7, 0.71, 1.0]), 0.7, IDENTITY, "registry", 123)
    assert d.review.tolist() == [True, True, False, False, False]
    assert d.threshold == 0.7 and d.decided_at_ms == 123 and d.threshold_source == "registry"
    assert d.calibrator_version == "identity"
    record = d.to_record()
    assert record["statuses"] == ["review", "review", "auto", "auto", "auto"]
    np.testing.assert_array_equal(d.calibrated_confidences, [0.0, 0.69, 0.7, 0.71, 1.0])


@pytest.mark.parametrize(
    ("confidences", "threshold", "review"),
    [
        ([0.0, 0.5], 0.0, [False, False]),  # threshold 0 accepts everything
        ([0.99, 1.0], 1.0, [True, False]),  # threshold 1 withholds all but certainty
        ([0.3], 0.3, [False]),
        ([0.29999999], 0.3, [True]),
        ([], 0.5, []),
    ],
)
def test_threshold_edges(confidences: list[float], threshold: float, review: list[bool]) -> None:
    assert decide(cols(confidences), threshold, IDENTITY, "default", 0).review.tolist() == review


@dataclass(frozen=True)
class Halve:
    version: str = "halve-1"

    def apply(
        self,
        confidences: FloatArray,
        probabilities: FloatArray | None,
        logits: FloatArray | None,
        class_labels: list[str],
    ) -> FloatArray:
        return confidences / 2


@dataclass(frozen=True)
class Broken:
    version: str = "broken"
    value: float = math.nan
    length: int | None = None

    def apply(
        self,
        confidences: FloatArray,
        probabilities: FloatArray | None,
        logits: FloatArray | None,
        class_labels: list[str],
    ) -> FloatArray:
        n = len(confidences) if self.length is None else self.length
        return np.full(n, self.value)


def test_the_threshold_applies_to_calibrated_confidence_and_the_map_version_is_recorded() -> None:
    d = decide(cols([0.9, 0.8, 0.7]), 0.4, Halve(), "registry", 0)
    np.testing.assert_allclose(d.calibrated_confidences, [0.45, 0.4, 0.35])
    assert d.review.tolist() == [False, False, True]  # 0.40 == threshold → auto
    assert d.calibrator_version == "halve-1"
    np.testing.assert_array_equal(d.predictions.confidences, [0.9, 0.8, 0.7])  # raw kept


def test_a_calibrated_confidence_that_is_not_a_number_is_withheld() -> None:
    assert decide(cols([0.9, 0.95]), 0.5, Broken(), "registry", 0).review.tolist() == [True, True]


def test_a_map_that_fails_to_apply_decides_with_identity_and_records_it() -> None:
    """A map answering the wrong number of rows, or raising (a parameter missing from its
    artifact), never stops the policy: identity decides, and each decision says so."""
    missing = from_registry("platt-broken", {"kind": "platt", "params": {}})
    for bad in (Broken(value=0.9, length=1), missing):
        d = decide(cols([0.9, 0.3]), 0.5, bad, "registry", 0)
        assert d.calibrated_confidences.tolist() == [0.9, 0.3]
        assert d.review.tolist() == [False, True]
        assert d.calibrator_versions == ["identity", "identity"]


# --- the calibration-map factory ----------------------------------------------------------


def test_factory_null_or_empty_calibrator_is_identity() -> None:
    assert from_registry("identity", None) is IDENTITY
    assert from_registry("identity", "") is IDENTITY
    # identity ran, so identity is what decisions record, whatever the version field says
    assert from_registry("cal-3", None).version == "identity"


def test_factory_builds_known_kinds_from_json_text_or_a_mapping() -> None:
    assert from_registry("cal-7", '{"kind": "identity"}') == IdentityMap("cal-7")
    assert from_registry("cal-7", {"kind": "identity"}).version == "cal-7"
    values = np.array([0.2, 0.9])
    np.testing.assert_array_equal(
        from_registry("cal-7", '{"kind": "identity"}').apply(values, None, None, []), values
    )


@pytest.mark.parametrize(
    ("calibrator", "message"),
    [
        ('{"kind": "magic"}', "kind 'magic' of version 'cal-8' is not supported"),
        ('{"kind": "isotonic"}', "calibrator 'cal-8' has no 'params' object"),
        ('{"kind": "platt", "input": "logits", "params": {}}', "kind 'platt' cannot take input"),
        ('{"temperature": 1.5}', "kind None of version 'cal-8' is not supported"),
        ("{", "calibrator of version 'cal-8' is not JSON"),
        ("[1, 2]", "must be a JSON object with a 'kind', got list"),
        ('{"kind": 3}', "kind 3 of version 'cal-8'"),
    ],
)
def test_factory_rejects_what_it_cannot_build(calibrator: str, message: str) -> None:
    with pytest.raises(CalibratorError, match=message.replace("(", r"\(").replace("[", r"\[")):
        from_registry("cal-8", calibrator)


def test_factory_error_lists_the_supported_kinds() -> None:
    kinds = ["beta", "histogram", "identity", "isotonic", "platt", "temperature", "vector_scaling"]
    with pytest.raises(CalibratorError, match=re.escape(f"expected one of {kinds}")):
        from_registry("cal-8", '{"kind": "dirichlet"}')
    assert sorted(BUILDERS) == kinds


# --- registry rules -----------------------------------------------------------------------


def test_a_registered_version_uses_its_threshold_and_an_unknown_one_the_default() -> None:
    registry = {"t/m/v": entry(threshold=0.6)}
    state = RegistryState(registry.get, 0.7)
    rule = state.rule("t/m/v")
    assert (rule.threshold, rule.threshold_source, rule.model_label, rule.model_version_id) == (
        0.6,
        "registry",
        "m",
        7,
    )
    default = state.rule("t/m/other")
    assert (default.threshold, default.threshold_source, default.model_label) == (
        0.7,
        "default",
        UNREGISTERED,
    )
    assert default.calibration is IDENTITY


def test_rules_follow_registry_updates_and_tombstones() -> None:
    registry = {"t/m/v": entry(threshold=0.6)}
    state = RegistryState(registry.get, 0.7)
    assert state.rule("t/m/v").threshold == 0.6
    registry["t/m/v"] = entry(threshold=0.9)
    assert state.rule("t/m/v").threshold == 0.9
    del registry["t/m/v"]
    assert state.rule("t/m/v").threshold_source == "default"


def test_an_unbuildable_calibrator_falls_back_to_identity_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = {"t/m/v": entry(calibrator='{"kind": "magic"}', calibrator_version="m-1")}
    rule = RegistryState(registry.get, 0.7).rule("t/m/v")
    assert rule.calibration is IDENTITY and rule.threshold == 0.6
    assert "kind 'magic' of version 'm-1' is not supported" in caplog.text


def test_default_threshold_outside_unit_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="default_threshold must be in"):
        RegistryState(NOTHING.get, 1.5)


# --- the processing step ------------------------------------------------------------------


@dataclass
class Msg:
    """What the processing step reads of a consumed message."""

    _value: bytes
    _offset: int = 0

    def value(self) -> bytes:
        return self._value

    def topic(self) -> str:
        return TOPICS.predictions

    def partition(self) -> int:
        return 3

    def offset(self) -> int:
        return self._offset


async def test_processor_emits_one_decision_batch_per_prediction_batch_and_counts_it() -> None:
    registry = CollectorRegistry()
    metrics = PolicyMetrics(registry)
    state = RegistryState({"t/m/v1": entry("v1", threshold=0.6)}.get, 0.7)
    processor = PolicyProcessor(TOPICS, CODEC, state, metrics)
    batches = [cols([0.5, 0.65, 0.9], "v1"), cols([0.65, 0.7], "v9")]
    messages = [Msg(CODEC.encode("PredictionBatch", c.to_record())) for c in batches]
    messages.append(Msg(b"not avro", 41))
    out = await processor(messages)  # type: ignore[arg-type]
    assert [o.topic for o in out] == [TOPICS.decisions, TOPICS.decisions, TOPICS.deadletter]
    assert [o.key for o in out[:2]] == [b"t/m/v1", b"t/m/v9"]
    first, second = (CODEC.decode(o.value) for o in out[:2])
    assert isinstance(first, Decoded) and isinstance(second, Decoded)
    assert first.record["statuses"] == ["review", "auto", "auto"]
    assert (first.record["threshold"], first.record["threshold_source"]) == (0.6, "registry")
    assert first.record["predictions"]["model_version_id"] == 7
    assert second.record["statuses"] == ["review", "auto"]
    assert (second.record["threshold"], second.record["threshold_source"]) == (0.7, "default")
    dead = CODEC.decode(out[2].value)
    assert isinstance(dead, Decoded)
    assert (dead.record["error_code"], dead.record["source_offset"]) == ("not_avro", 41)

    # Nothing is counted until the iteration has committed (batch_done).
    assert registry.get_sample_value("caliber_policy_unregistered_predictions_total") == 0
    processor.batch_done(3, 0.004)

    def decisions(model: str, status: str) -> float | None:
        return registry.get_sample_value(
            "caliber_policy_decisions_total", {"model": model, "status": status}
        )

    assert (decisions("m", "review"), decisions("m", "auto")) == (1, 2)
    assert (decisions(UNREGISTERED, "review"), decisions(UNREGISTERED, "auto")) == (1, 1)
    assert registry.get_sample_value("caliber_policy_unregistered_predictions_total") == 2
    assert registry.get_sample_value("caliber_policy_dead_letters_total", {"code": "not_avro"}) == 1
    assert registry.get_sample_value("caliber_policy_decision_latency_seconds_count") == 5
    assert registry.get_sample_value("caliber_policy_batch_seconds_count") == 1


async def test_a_retried_iteration_counts_once() -> None:
    registry = CollectorRegistry()
    processor = PolicyProcessor(
        TOPICS, CODEC, RegistryState(NOTHING.get, 0.7), PolicyMetrics(registry)
    )
    message = Msg(CODEC.encode("PredictionBatch", cols([0.1, 0.9]).to_record()))
    await processor([message])  # type: ignore[list-item]
    await processor([message])  # type: ignore[list-item]  # the transaction aborted; again
    processor.batch_done(1, 0.01)
    assert registry.get_sample_value("caliber_policy_unregistered_predictions_total") == 2


async def test_a_batch_with_ragged_arrays_is_a_dead_letter() -> None:
    processor = PolicyProcessor(TOPICS, CODEC, RegistryState(NOTHING.get, 0.7))
    record = cols([0.1, 0.9]).to_record()
    record["confidences"] = [0.1]
    out = await processor([Msg(CODEC.encode("PredictionBatch", record))])  # type: ignore[list-item]
    assert [o.topic for o in out] == [TOPICS.deadletter]
    dead = CODEC.decode(out[0].value)
    assert isinstance(dead, Decoded)
    assert dead.record["error_code"] == "batch_shape"
    assert "confidences" in dead.record["message"]


def test_a_fitted_artifact_in_the_registry_is_what_the_policy_applies() -> None:
    artifact = '{"format":1,"input":"confidence","kind":"platt","params":{"a":1.0,"b":-1.0}}'
    registry = {"t/m/v": entry(calibrator=artifact, calibrator_version="platt-0123")}
    rule = RegistryState(registry.get, 0.7).rule("t/m/v")
    assert rule.calibration.version == "platt-0123"
    out = rule.calibration.apply(np.array([0.5, 0.9]), None, None, [])
    # σ(logit(c) − 1): 0.5 → σ(−1), 0.9 → σ(ln 9 − 1) = 9/(9 + e)
    np.testing.assert_allclose(out, [1 / (1 + np.e), 9 / (9 + np.e)])


async def test_decisions_beside_a_candidate_are_counted_per_arm() -> None:
    registry = CollectorRegistry()
    spec = '{"kind": "temperature", "params": {"beta": 0.5}}'
    state = RegistryState(
        {"t/m/v1": entry("v1", threshold=0.6, candidate_version="temperature-c",
                         candidate_calibrator=spec, rollout_stage="canary",
                         canary_share=1.0)}.get,
        0.7,
    )  # fmt: skip
    processor = PolicyProcessor(TOPICS, CODEC, state, PolicyMetrics(registry))
    out = await processor(
        [Msg(CODEC.encode("PredictionBatch", cols([0.9, 0.8], "v1").to_record()))]
    )  # type: ignore[list-item]
    decided = CODEC.decode(out[0].value)
    assert isinstance(decided, Decoded)
    # share 1.0: the candidate decides every event; the active map's output is the shadow
    assert decided.record["calibrator_versions"] == ["temperature-c", "temperature-c"]
    assert decided.record["shadow_confidences"] == [0.9, 0.8]
    assert decided.record["calibrated_confidences"][0] == pytest.approx(0.75)
    processor.batch_done(1, 0.001)
    arms = {
        arm: registry.get_sample_value(
            "caliber_policy_arm_decisions_total", {"model": "m", "arm": arm}
        )
        for arm in ("canary", "control")
    }
    assert arms == {"canary": 2, "control": None}
