"""The schemas shipped in the client are Caliber's, byte for byte, and its messages decode."""

from __future__ import annotations

from pathlib import Path

import pytest
from caliber_client.codec import SCHEMAS, Encoder, schema_text
from caliber_client.events import Event, LabelEvent, label_batch, prediction_batch

from shared.contracts.batches import LabelColumns, PredictionColumns
from shared.contracts.codec import AvroCodec, Decoded

REPO_SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"


@pytest.mark.parametrize("name", SCHEMAS)
def test_shipped_schema_equals_the_repository_schema(name: str) -> None:
    assert schema_text(name) == (REPO_SCHEMAS / f"{name}.avsc").read_text()


@pytest.mark.parametrize("name", SCHEMAS)
def test_fingerprints_are_caliber_current_ones(name: str) -> None:
    assert Encoder().fingerprint(name) == AvroCodec().schema(name).fingerprint


def test_a_prediction_batch_decodes_as_caliber_reads_it() -> None:
    events = [
        Event("digits", "v1", "3", 0.9, probabilities={"3": 0.9, "5": 0.1},
              features={"x": 1.5, "channel": "web"}, ground_truth="3", event_time_ms=1000),
        Event("digits", "v1", "5", 0.6, probabilities={"3": 0.4, "5": 0.6},
              features={"x": -2.0, "channel": "app"}, metadata={"k": "v"}, event_time_ms=2000),
    ]  # fmt: skip
    data = Encoder().encode("PredictionBatch", prediction_batch("acme", events))
    decoded = AvroCodec().decode(data)
    assert isinstance(decoded, Decoded) and decoded.name == "PredictionBatch"
    cols = PredictionColumns.from_record(decoded.record)
    assert (cols.tenant, cols.key, len(cols)) == ("acme", "acme/digits/v1", 2)
    assert cols.event_ids == [e.event_id for e in events]
    assert cols.class_labels == ["3", "5"]
    assert cols.probabilities is not None and cols.probabilities.tolist() == [
        [0.9, 0.1],
        [0.4, 0.6],
    ]
    assert cols.numeric_features["x"].tolist() == [1.5, -2.0]
    assert cols.categorical_features["channel"] == ["web", "app"]
    assert cols.ground_truths == ["3", None]
    assert cols.metadata == [{}, {"k": "v"}]
    assert cols.event_time_ms.tolist() == [1000, 2000]


def test_a_label_batch_decodes_as_caliber_reads_it() -> None:
    labels = [LabelEvent("e1", "3", label_time_ms=5), LabelEvent("e2", "5", label_time_ms=6)]
    data = Encoder().encode("LabelBatch", label_batch("acme", labels))
    decoded = AvroCodec().decode(data)
    assert isinstance(decoded, Decoded) and decoded.name == "LabelBatch"
    cols = LabelColumns.from_record(decoded.record)
    assert (cols.event_ids, cols.ground_truths, cols.sources) == (
        ["e1", "e2"], ["3", "5"], ["feed", "feed"]
    )  # fmt: skip
    assert cols.model_name is None and cols.label_time_ms.tolist() == [5, 6]


PACKAGE = Path(__file__).resolve().parents[1] / "src" / "caliber_client"


def test_the_client_imports_nothing_of_the_server() -> None:
    """It installs on its own: no module of it imports Caliber's server packages."""
    for source in PACKAGE.glob("*.py"):
        text = source.read_text()
        for server in ("shared", "services", "tooling", "simulator", "bench"):
            assert f"from {server}" not in text and f"import {server}" not in text, (
                source.name,
                server,
            )
