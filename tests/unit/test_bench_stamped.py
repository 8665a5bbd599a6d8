"""The pipeline benchmark's messages encoded ahead: stamping the send time gives the bytes
an encode at that time gives."""

from __future__ import annotations

import numpy as np
import pytest

from bench.pipeline import PLACEHOLDER_MS, VERSIONS, Load, Stamped, Step, _labels
from shared.contracts.batches import PredictionColumns
from shared.contracts.codec import AvroCodec, Decoded
from shared.contracts.topics import Topics
from simulator.generator import ModelSpec, generate

CODEC = AvroCodec()
NOW = 1_796_000_000_123  # 2026-12


def _pool(n: int) -> PredictionColumns:
    spec = ModelSpec(name="m", version="v1", tenant="t", numeric_features=8, categorical_features=2)
    return generate(spec, n, 7, 0).predictions


@pytest.mark.parametrize("n", [1, 2, 47, 48, 300])
def test_a_stamped_prediction_batch_is_the_batch_encoded_at_that_time(n: int) -> None:
    cols = _pool(n)
    cols.event_time_ms = np.full(n, PLACEHOLDER_MS, dtype=np.int64)
    ahead = Stamped.encode(
        CODEC.encode("PredictionBatch", cols.to_columnar_record()), cols.key, n, PLACEHOLDER_MS
    )
    cols.event_time_ms = np.full(n, NOW, dtype=np.int64)
    assert ahead.at(NOW) == CODEC.encode("PredictionBatch", cols.to_columnar_record())
    decoded = CODEC.decode(ahead.at(NOW))
    assert isinstance(decoded, Decoded) and decoded.record["event_time_ms"] == [NOW] * n


def test_stamped_labels_carry_the_label_time_a_second_after_the_send() -> None:
    pool = _pool(10)
    rows = np.arange(0, 10, 2)
    message = CODEC.encode("LabelBatch", _labels(pool, rows, PLACEHOLDER_MS).to_columnar_record())
    ahead = Stamped.encode(message, "k", len(rows), PLACEHOLDER_MS + 1000).stamped(NOW + 1000)
    direct = CODEC.encode("LabelBatch", _labels(pool, rows, NOW).to_columnar_record())
    assert ahead.payload == direct and ahead.key == b"k" and ahead.events == 5


def test_a_time_of_another_width_or_a_placeholder_found_elsewhere_is_refused() -> None:
    cols = _pool(3)
    cols.event_time_ms = np.full(3, PLACEHOLDER_MS, dtype=np.int64)
    message = CODEC.encode("PredictionBatch", cols.to_columnar_record())
    with pytest.raises(ValueError, match="occurs 3 times"):
        Stamped.encode(message, cols.key, 2, PLACEHOLDER_MS)
    with pytest.raises(ValueError, match="between 2005 and 2039"):
        Stamped.encode(message, cols.key, 3, PLACEHOLDER_MS).at(3_000_000_000_000)


def test_the_plan_sends_the_rate_one_message_per_model_version_and_tick() -> None:
    load = Load.__new__(Load)  # no producer: planning only encodes
    load.codec, load.seed, load.topics = CODEC, 1, Topics.for_namespace("t")
    step = Step(rate=1250, seconds=1.0)
    plan = load.plan(step)
    assert len(plan) == 101
    events = sum(p.events for tick in plan[:100] for p, _ in tick)
    labels = sum(lb.events for tick in plan[:100] for _, lb in tick if lb is not None)
    # 3.125 events per version and tick: 3, 3, …, 4 every eighth; labels for every other one
    assert events == 4 * 312 and labels == 4 * 2 * 100
    assert all(len(tick) == len(VERSIONS) for tick in plan)
    assert {p.key for tick in plan for p, _ in tick} == {
        f"load/load/{v}".encode() for v in VERSIONS
    }
