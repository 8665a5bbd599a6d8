"""The columnar Avro reader and writer of the batch records, against fastavro.

Bytes written must equal fastavro's for the same record; decoding must give fastavro's values
(numpy arrays where fastavro gives lists of numbers), for every legal block layout, for the
released writer versions, and a corrupt body must come back as a Fault, never an exception.
"""

from __future__ import annotations

import io
import json
import random
import struct
import uuid
from typing import Any

import numpy as np
import pytest
from fastavro import schemaless_reader, schemaless_writer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.contracts.avro_wire import (
    SMALL_ARRAY,
    MalformedBody,
    long_bytes,
    read_long,
    read_varints,
    varints_bytes,
)
from shared.contracts.batches import DecisionColumns, LabelColumns, PredictionColumns
from shared.contracts.codec import (
    HEADER_SIZE,
    MAGIC,
    SCHEMA_DIR,
    AvroCodec,
    CodecError,
    Decoded,
    WriterSchema,
)
from shared.contracts.columnar import UnsupportedSchema, compile_reader, compile_writer
from shared.contracts.errors import ErrorCode, Fault
from shared.contracts.validation import check_batch_record, check_batch_rows, validate_columns

CODEC = AvroCodec()
BATCHES = ("PredictionBatch", "DecisionBatch", "LabelBatch")
INT64 = st.integers(-(2**63), 2**63 - 1)
DOUBLES = st.lists(st.floats(), max_size=6)
LONGS = st.lists(
    st.one_of(INT64, st.sampled_from([0, -1, 63, 64, -64, -65, 2**63 - 1, -(2**63)])),
    max_size=6,
)
TEXT = st.text(max_size=6)
TEXTS = st.lists(TEXT, max_size=5)

PREDICTION_BATCH = st.fixed_dictionaries(
    {
        "model_name": TEXT,
        "model_version": TEXT,
        "event_ids": TEXTS,
        "event_time_ms": LONGS,
        "predicted_labels": TEXTS,
        "confidences": DOUBLES,
    },
    optional={
        "tenant": TEXT,
        "model_version_id": st.none() | INT64,
        "class_labels": TEXTS,
        "probabilities": DOUBLES,
        "logits": DOUBLES,
        "numeric_features": st.dictionaries(TEXT, DOUBLES, max_size=3),
        "categorical_features": st.dictionaries(TEXT, TEXTS, max_size=3),
        "ground_truths": st.lists(st.none() | TEXT, max_size=5),
        "uncertainties": DOUBLES,
        "metadata": st.lists(st.dictionaries(TEXT, TEXT, max_size=3), max_size=4),
    },
)
STATUSES = st.lists(st.sampled_from(["auto", "review"]), max_size=6)
DECISION_BATCH = st.fixed_dictionaries(
    {
        "predictions": PREDICTION_BATCH,
        "calibrated_confidences": DOUBLES,
        "statuses": STATUSES,
        "threshold": st.floats(),
        "threshold_source": st.sampled_from(["registry", "default"]),
        "calibrator_version": TEXT,
        "decided_at_ms": INT64,
    },
    optional={
        "calibrator_versions": st.none() | TEXTS,
        "segment_key": st.none() | TEXT,
        "segments": st.none() | st.lists(st.none() | TEXT, max_size=5),
        "shadow_calibrator_version": st.none() | TEXT,
        "shadow_confidences": st.none() | DOUBLES,
        "shadow_statuses": st.none() | STATUSES,
    },
)
LABEL_BATCH = st.fixed_dictionaries(
    {
        "event_ids": TEXTS,
        "ground_truths": TEXTS,
        "sources": st.lists(st.sampled_from(["feed", "review", "event"]), max_size=5),
        "label_time_ms": LONGS,
    },
    optional={
        "tenant": TEXT,
        "model_name": st.none() | TEXT,
        "model_version": st.none() | TEXT,
        "prediction_time_ms": LONGS,
    },
)
RECORDS = st.one_of(
    st.tuples(st.just("PredictionBatch"), PREDICTION_BATCH),
    st.tuples(st.just("DecisionBatch"), DECISION_BATCH),
    st.tuples(st.just("LabelBatch"), LABEL_BATCH),
)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _fastavro_body(name: str, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    schemaless_writer(buf, CODEC.schema(name).parsed, record)
    return buf.getvalue()


def _fastavro_decode(writer: WriterSchema, data: bytes) -> Any:
    reader = CODEC.schema(writer.name)
    body = io.BytesIO(data[HEADER_SIZE:])
    out = schemaless_reader(body, writer.parsed, None if reader is writer else reader.parsed)
    assert body.tell() == len(data) - HEADER_SIZE
    return out


def _same(a: Any, b: Any) -> bool:
    """Equal values, floats bit for bit (NaN payloads and the sign of zero included)."""
    if isinstance(a, float) or isinstance(b, float):
        return (
            isinstance(a, float)
            and isinstance(b, float)
            and struct.pack("<d", a) == struct.pack("<d", b)
        )
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


def _lists(value: Any) -> Any:
    """A columnar value in fastavro's shape: numpy arrays as lists."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_lists(v) for v in value]
    return value


def _numpy(value: Any) -> Any:
    """``value`` with every numeric array as a numpy array (what the workers encode)."""
    if isinstance(value, dict):
        return {k: _numpy(v) for k, v in value.items()}
    if isinstance(value, list) and value and isinstance(value[0], float | int):
        return np.asarray(value)
    return value


def _columnar(name: str, data: bytes) -> Decoded:
    decoded = CODEC.decode(data, columnar=True)
    assert isinstance(decoded, Decoded), decoded
    assert decoded.name == name
    return decoded


def _numeric_arrays(record: dict[str, Any]) -> list[np.ndarray]:
    out = []
    for v in record.values():
        if isinstance(v, np.ndarray):
            out.append(v)
        elif isinstance(v, dict):
            out.extend(_numeric_arrays(v))
    return out


# --- byte equality and round trips ---------------------------------------------------------


@SETTINGS
@given(RECORDS)
def test_bytes_equal_fastavro_and_columnar_decode_gives_its_values(case: Any) -> None:
    name, record = case
    data = CODEC.encode(name, record)
    assert data[:HEADER_SIZE] == MAGIC + CODEC.schema(name).fingerprint
    assert data[HEADER_SIZE:] == _fastavro_body(name, record)
    decoded = _columnar(name, data)
    expected = _fastavro_decode(CODEC.schema(name), data)
    assert _same(_lists(decoded.record), expected)
    plain = CODEC.decode(data)
    assert isinstance(plain, Decoded)
    assert _same(plain.record, expected)
    assert not _numeric_arrays(plain.record)


@SETTINGS
@given(RECORDS)
def test_numpy_arrays_encode_to_the_same_bytes_as_lists(case: Any) -> None:
    name, record = case
    as_numpy = _numpy(record)
    assert CODEC.encode(name, as_numpy) == CODEC.encode(name, record)


def test_columnar_decode_gives_numpy_arrays_of_the_schema_types() -> None:
    record = {
        "model_name": "m",
        "model_version": "1",
        "event_ids": ["a", "b"],
        "event_time_ms": [1, -(2**63)],
        "predicted_labels": ["x", "y"],
        "confidences": [0.5, float("nan")],
        "numeric_features": {"f": [1.0, -0.0]},
    }
    rec = _columnar("PredictionBatch", CODEC.encode("PredictionBatch", record)).record
    assert rec["event_time_ms"].dtype == np.int64
    assert rec["event_time_ms"].tolist() == [1, -(2**63)]
    assert rec["confidences"].dtype == np.float64
    assert np.isnan(rec["confidences"][1])
    assert np.signbit(rec["numeric_features"]["f"][1])
    assert rec["probabilities"].dtype == np.float64 and len(rec["probabilities"]) == 0
    assert rec["model_version_id"] is None
    assert rec["tenant"] == "default"
    rec["confidences"][0] = 1.0  # arrays are writable copies, not views of the message
    assert rec["confidences"][0] == 1.0


def test_columns_round_trip_without_lists() -> None:
    cols = PredictionColumns(
        tenant="t",
        model_name="m",
        model_version="1",
        event_ids=["a", "b", "c"],
        event_time_ms=np.array([1, 2, 3], np.int64),
        predicted_labels=["x", "y", "x"],
        confidences=np.array([0.9, 0.6, np.nan]),
        class_labels=["x", "y"],
        probabilities=np.array([[0.9, 0.1], [0.4, 0.6], [np.nan, np.nan]]),
        numeric_features={"age": np.array([1.0, np.nan, 3.0])},
        categorical_features={"c": ["r", "", "b"]},
        uncertainties=np.array([0.1, 0.2, 0.3]),
    )
    decisions = DecisionColumns(
        cols,
        np.array([0.8, 0.5, 0.7]),
        np.array([False, True, False]),
        0.65,
        "registry",
        "v2",
        42,
        shadow_confidences=np.array([0.1, 0.2, 0.3]),
        shadow_review=np.array([True, True, False]),
    )
    data = CODEC.encode("DecisionBatch", decisions.to_columnar_record())
    assert data == CODEC.encode("DecisionBatch", decisions.to_record())
    back = DecisionColumns.from_record(_columnar("DecisionBatch", data).record)
    assert back.review.tolist() == [False, True, False]
    assert back.shadow_review is not None and back.shadow_review.tolist() == [True, True, False]
    assert back.threshold == 0.65 and back.decided_at_ms == 42
    p = back.predictions
    assert p.probabilities is not None and p.probabilities.shape == (3, 2)
    np.testing.assert_array_equal(p.probabilities, cols.probabilities)
    np.testing.assert_array_equal(p.confidences, cols.confidences)
    np.testing.assert_array_equal(p.numeric_features["age"], cols.numeric_features["age"])
    assert p.uncertainties is not None and p.uncertainties.tolist() == [0.1, 0.2, 0.3]
    assert p.logits is None and p.ground_truths is None and p.metadata is None

    labels = LabelColumns("t", None, None, ["a"], ["x"], ["feed"], np.array([5], np.int64))
    lrec = _columnar("LabelBatch", CODEC.encode("LabelBatch", labels.to_columnar_record()))
    back_labels = LabelColumns.from_record(lrec.record)
    assert back_labels.label_time_ms.tolist() == [5]
    assert back_labels.prediction_time_ms is None
    assert labels.to_record()["label_time_ms"] == [5]


def test_validation_sees_the_same_record_either_way() -> None:
    record = {
        "model_name": "m",
        "model_version": "1",
        "event_ids": ["a", "b"],
        "event_time_ms": [1, 2],
        "predicted_labels": ["x", "y"],
        "confidences": [0.5, 0.7],
        "class_labels": ["x", "y"],
        "probabilities": [0.5, 0.5, 0.3],  # 3 values for 2 events x 2 classes
        "uncertainties": [0.1],
    }
    data = CODEC.encode("PredictionBatch", record)
    plain = CODEC.decode(data)
    assert isinstance(plain, Decoded)
    fault = check_batch_record(_columnar("PredictionBatch", data).record)
    assert fault == check_batch_record(plain.record)
    assert fault is not None and fault.code is ErrorCode.BATCH_SHAPE
    assert fault.field == "uncertainties"


def test_row_checks_find_the_same_faults_either_way() -> None:
    now = 1_765_000_000_000
    record = {
        "model_name": "m",
        "model_version": "1",
        "event_ids": [str(uuid.UUID(int=i + 1, version=4)) for i in range(5)],
        "event_time_ms": [now, now, now, -1, now],
        "predicted_labels": ["x", "y", "x", "x", "y"],
        "confidences": [float("nan"), 1.5, 0.9, 0.8, 0.6],
        "class_labels": ["x", "y"],
        "probabilities": [0.5, 0.5, 0.2, 0.8, 0.9, 0.1, 0.8, 0.2, 0.7, 0.7],
        "numeric_features": {"f": [1.0, float("inf"), float("nan"), 2.0, -0.0]},
    }
    data = CODEC.encode("PredictionBatch", record)
    plain = CODEC.decode(data)
    assert isinstance(plain, Decoded)
    a = PredictionColumns.from_record(_columnar("PredictionBatch", data).record)
    b = PredictionColumns.from_record(plain.record)
    mask_a, faults_a = validate_columns(a)
    mask_b, faults_b = validate_columns(b)
    assert mask_a.tolist() == mask_b.tolist()
    assert faults_a == faults_b
    assert {row for row, _ in faults_a} >= {0, 1}  # NaN and 1.5 confidences
    assert check_batch_rows(a, now=now) == check_batch_rows(b, now=now)
    assert [row for row, _ in check_batch_rows(a, now=now)] == [3]  # the negative time


# --- every legal block layout --------------------------------------------------------------


class _BlockyWriter:
    """A deliberately general Avro writer: arrays and maps in random blocks, some with
    negative counts and byte sizes, as other libraries may write them."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.named: dict[str, Any] = {}

    def register(self, schema: Any) -> None:
        """Learn the named types defined anywhere in ``schema``."""
        if isinstance(schema, list):
            for branch in schema:
                self.register(branch)
        elif isinstance(schema, dict):
            if "name" in schema:
                self.named.setdefault(schema["name"], schema)
            for f in schema.get("fields", ()):
                self.register(f["type"])
            for key in ("items", "values"):
                if key in schema:
                    self.register(schema[key])

    def write(self, schema: Any, value: Any) -> bytes:
        if isinstance(schema, str) and schema in self.named:
            schema = self.named[schema]
        if isinstance(schema, dict) and "name" in schema:
            self.named.setdefault(schema["name"], schema)
        kind = (
            schema
            if isinstance(schema, str)
            else "union"
            if isinstance(schema, list)
            else schema["type"]
        )
        if kind == "null":
            return b""
        if kind in ("long", "int"):
            return long_bytes(value)
        if kind == "double":
            return struct.pack("<d", value)
        if kind == "string":
            raw = value.encode()
            return long_bytes(len(raw)) + raw
        if kind == "enum":
            return long_bytes(schema["symbols"].index(value))
        if kind == "union":
            index = next(i for i, b in enumerate(schema) if (b == "null") == (value is None))
            return long_bytes(index) + self.write(schema[index], value)
        if kind == "record":
            return b"".join(
                self.write(f["type"], value.get(f["name"], f.get("default")))
                for f in schema["fields"]
            )
        if kind == "array":
            return self._blocks([self.write(schema["items"], v) for v in value])
        assert kind == "map", kind
        return self._blocks(
            [self.write("string", k) + self.write(schema["values"], v) for k, v in value.items()]
        )

    def _blocks(self, items: list[bytes]) -> bytes:
        out = b""
        i = 0
        while i < len(items):
            n = self.rng.randint(1, len(items) - i)
            body = b"".join(items[i : i + n])
            if self.rng.random() < 0.5:
                out += long_bytes(-n) + long_bytes(len(body)) + body
            else:
                out += long_bytes(n) + body
            i += n
        return out + b"\x00"


@SETTINGS
@given(RECORDS, st.randoms(use_true_random=False))
def test_any_block_layout_decodes_like_fastavro(case: Any, rng: random.Random) -> None:
    name, record = case
    ws = CODEC.schema(name)
    writer = _BlockyWriter(rng)
    for other in CODEC.writers():
        if other.version == "current":
            writer.register(other.parsed)
    data = MAGIC + ws.fingerprint + writer.write(ws.parsed, record)
    expected = _fastavro_decode(ws, data)
    assert _same(_lists(_columnar(name, data).record), expected)
    assert _same(
        _lists(_columnar(name, data).record), _fastavro_decode(ws, CODEC.encode(name, record))
    )


def test_negative_block_count_with_a_wrong_byte_size_is_a_fault() -> None:
    body = CODEC.encode(
        "LabelBatch", {"event_ids": [], "ground_truths": [], "sources": [], "label_time_ms": []}
    )
    # tenant "default", two null unions, then event_ids as one block of -1 item with size 5.
    head = body[: HEADER_SIZE + 1 + len("default") + 2]
    bad = head + long_bytes(-1) + long_bytes(5) + b"\x02a" + b"\x00" + body[len(head) + 1 :]
    fault = CODEC.decode(bad, columnar=True)
    assert isinstance(fault, Fault) and fault.code is ErrorCode.MALFORMED_AVRO
    assert "says it holds 5 bytes" in fault.message
    good = head + long_bytes(-1) + long_bytes(2) + b"\x02a" + b"\x00" + body[len(head) + 1 :]
    decoded = _columnar("LabelBatch", good)
    assert decoded.record["event_ids"] == ["a"]


# --- older writer versions -----------------------------------------------------------------


def _older(name: str, dropped: tuple[str, ...]) -> dict[str, Any]:
    """The current schema of ``name`` without some defaulted fields: an older writer."""
    raw = json.loads((SCHEMA_DIR / f"{name}.avsc").read_text())
    raw["fields"] = [f for f in raw["fields"] if f["name"] not in dropped]
    return raw


OLDER = AvroCodec(
    extra_writers={
        "PredictionBatch": [_older("PredictionBatch", ("uncertainties", "metadata"))],
        "LabelBatch": [_older("LabelBatch", ("prediction_time_ms",))],
    }
)
OLD_RECORDS: dict[str, dict[str, Any]] = {
    "PredictionBatch": {
        "model_name": "m",
        "model_version": "1",
        "event_ids": ["a"],
        "event_time_ms": [7],
        "predicted_labels": ["x"],
        "confidences": [0.25],
        "numeric_features": {"f": [1.5]},
    },
    "LabelBatch": {
        "event_ids": ["a"],
        "ground_truths": ["x"],
        "sources": ["feed"],
        "label_time_ms": [9],
    },
}
OLD_RECORDS["DecisionBatch"] = {
    "predictions": OLD_RECORDS["PredictionBatch"],
    "calibrated_confidences": [0.5],
    "statuses": ["review"],
    "threshold": 0.7,
    "threshold_source": "default",
    "calibrator_version": "identity",
    "decided_at_ms": 3,
}


@pytest.mark.parametrize("name", BATCHES)
def test_older_writer_versions_still_decode_columnar(name: str) -> None:
    older = [w for w in OLDER.writers() if w.name == name and w.version != "current"]
    assert older, f"no older writer of {name}"
    for writer in older:
        buf = io.BytesIO()
        schemaless_writer(buf, writer.parsed, OLD_RECORDS[name])
        data = MAGIC + writer.fingerprint + buf.getvalue()
        decoded = OLDER.decode(data, columnar=True)
        assert isinstance(decoded, Decoded), decoded
        assert decoded.writer_version == writer.version
        plain = OLDER.decode(data)
        assert isinstance(plain, Decoded)
        assert _same(_lists(decoded.record), plain.record)
        arrays = _numeric_arrays(decoded.record)
        assert arrays and all(a.dtype in (np.float64, np.int64) for a in arrays)
        assert not _numeric_arrays(plain.record)
    if name == "DecisionBatch":  # schemas/released/DecisionBatch/1.avsc
        assert decoded.record["shadow_confidences"] is None
        cols = DecisionColumns.from_record(decoded.record)
        assert cols.review.tolist() == [True]
        assert cols.predictions.event_time_ms.tolist() == [7]
        np.testing.assert_array_equal(cols.predictions.numeric_features["f"], [1.5])
    elif name == "PredictionBatch":
        assert decoded.record["uncertainties"].tolist() == []
        assert decoded.record["metadata"] == []
    else:
        assert decoded.record["prediction_time_ms"].dtype == np.int64
        assert LabelColumns.from_record(decoded.record).prediction_time_ms is None


# --- corrupt bodies ------------------------------------------------------------------------


def _sample_message() -> bytes:
    record = {
        "model_name": "m",
        "model_version": "1",
        "event_ids": ["a", "bé"],
        "event_time_ms": [1_700_000_000_000, -5],
        "predicted_labels": ["x", "y"],
        "confidences": [0.5, 0.25],
        "numeric_features": {"f": [1.0, 2.0]},
        "ground_truths": [None, "y"],
        "metadata": [{"k": "v"}, {}],
    }
    return CODEC.encode("PredictionBatch", record)


def test_every_truncation_is_a_malformed_fault() -> None:
    data = _sample_message()
    for cut in range(HEADER_SIZE, len(data)):
        fault = CODEC.decode(data[:cut], columnar=True)
        assert isinstance(fault, Fault), cut
        assert fault.code is ErrorCode.MALFORMED_AVRO
        assert "PredictionBatch (current)" in fault.message


def test_trailing_bytes_are_a_fault() -> None:
    fault = CODEC.decode(_sample_message() + b"\x00", columnar=True)
    assert isinstance(fault, Fault) and fault.code is ErrorCode.MALFORMED_AVRO
    assert "1 bytes left over" in fault.message


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"\x0edefault\x02m\x021\x02" + b"\xff" * 11, "longer than 10 bytes"),
        (b"\x0edefault\x03", "a string of -2 bytes"),
        (b"\x0edefault\x02m\x021\x00\xfe\xff\xff\xff\x0f", "cannot fit"),  # huge count
        (b"\x0edefault\x02m\x021\x04", "union branch 2"),
    ],
)
def test_corrupt_bodies_are_faults_with_a_reason(body: bytes, words: str) -> None:
    data = MAGIC + CODEC.schema("PredictionBatch").fingerprint + body
    fault = CODEC.decode(data, columnar=True)
    assert isinstance(fault, Fault), fault
    assert fault.code is ErrorCode.MALFORMED_AVRO
    assert words in fault.message


def _sample_decisions() -> bytes:
    cols = PredictionColumns.from_record(_columnar("PredictionBatch", _sample_message()).record)
    decisions = DecisionColumns(
        cols,
        np.array([0.5, 0.7]),
        np.array([True, False]),
        0.6,
        "registry",
        "v1",
        9,
        calibrator_versions=["v1", "v2"],
        segment_key="region",
        segments=[None, "eu"],
        shadow_calibrator_version="v3",
        shadow_confidences=np.array([0.1, 0.9]),
        shadow_review=np.array([True, False]),
    )
    return CODEC.encode("DecisionBatch", decisions.to_columnar_record())


def _sample_labels() -> bytes:
    labels = LabelColumns(
        "t", "m", "1", ["a", "b"], ["x", "y"], ["feed", "event"], np.array([5, 2**40]), None
    )
    return CODEC.encode("LabelBatch", labels.to_columnar_record())


SAMPLES = {
    "PredictionBatch": _sample_message(),
    "DecisionBatch": _sample_decisions(),
    "LabelBatch": _sample_labels(),
}


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(BATCHES), st.data())
def test_random_corruption_never_raises_and_never_invents_values(
    name: str, data: st.DataObject
) -> None:
    message = bytearray(SAMPLES[name])
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(HEADER_SIZE, len(message) - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            message[i] = data.draw(st.integers(0, 255))
        elif action == "cut":
            del message[i]
        else:
            message.insert(i, data.draw(st.integers(0, 255)))
    decoded = CODEC.decode(bytes(message), columnar=True)
    if isinstance(decoded, Fault):
        assert decoded.code is ErrorCode.MALFORMED_AVRO
        return
    # What the columnar reader accepts, fastavro reads to the same values.
    expected = _fastavro_decode(CODEC.schema(name), bytes(message))
    assert _same(_lists(decoded.record), expected)


# --- encoding errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("confidences", [0.5, None]),
        ("confidences", ["0.5"]),
        ("event_time_ms", [float("nan")]),
        ("event_time_ms", [1e19]),
        ("event_time_ms", [2**63]),
        ("event_time_ms", np.array([2**63], np.uint64)),
        ("event_ids", [1]),
        ("event_ids", ["\ud800"]),
        ("confidences", np.zeros((1, 1))),
    ],
)
def test_a_record_that_does_not_match_raises_codec_error(field: str, value: Any) -> None:
    record: dict[str, Any] = {
        "model_name": "m",
        "model_version": "1",
        "event_ids": ["a"],
        "event_time_ms": [1],
        "predicted_labels": ["x"],
        "confidences": [0.5],
    }
    record[field] = value
    with pytest.raises(CodecError, match="PredictionBatch"):
        CODEC.encode("PredictionBatch", record)


def test_floats_for_longs_go_towards_zero_as_fastavro_writes_them() -> None:
    record: dict[str, Any] = {
        "predictions": {
            "model_name": "m",
            "model_version": "1",
            "model_version_id": 7,
            "event_ids": ["a", "b", "c"],
            "event_time_ms": [1.5, -2.7, 3.0],
            "predicted_labels": ["x", "y", "z"],
            "confidences": [1, 0, True],
        },
        "calibrated_confidences": [0.5, 0.5, 0.5],
        "statuses": ["auto", "auto", "review"],
        "threshold": 1,
        "threshold_source": "default",
        "calibrator_version": "identity",
        "decided_at_ms": -4.5,
    }
    data = CODEC.encode("DecisionBatch", record)
    assert data[HEADER_SIZE:] == _fastavro_body("DecisionBatch", record)
    as_numpy = _numpy(record)
    assert isinstance(as_numpy["predictions"]["event_time_ms"], np.ndarray)
    assert CODEC.encode("DecisionBatch", as_numpy) == data
    rec = _columnar("DecisionBatch", data).record
    assert rec["predictions"]["event_time_ms"].tolist() == [1, -2, 3]
    assert rec["decided_at_ms"] == -4 and rec["predictions"]["model_version_id"] == 7
    # A union of null and long is stricter in fastavro: it refuses a float.
    record["predictions"]["model_version_id"] = 7.9
    with pytest.raises(ValueError, match="do not match"):
        _fastavro_body("DecisionBatch", record)
    with pytest.raises(CodecError, match="does not match"):
        CODEC.encode("DecisionBatch", record)


def test_missing_field_without_default_raises_codec_error() -> None:
    with pytest.raises(CodecError, match="no value and no default for model_name"):
        CODEC.encode("PredictionBatch", {"model_version": "1"})


def test_bad_enum_symbol_raises_codec_error() -> None:
    record = {"event_ids": ["a"], "ground_truths": ["x"], "sources": ["mail"], "label_time_ms": [1]}
    with pytest.raises(CodecError, match="'mail' is not one of"):
        CODEC.encode("LabelBatch", record)


# --- varints -------------------------------------------------------------------------------

EDGES = [0, 1, -1, 63, -64, 64, -65, 8191, 8192, 2**31, -(2**31), 2**62, 2**63 - 1, -(2**63)]


def test_varints_match_fastavro_one_by_one_and_vectorised() -> None:
    values = np.array(EDGES, np.int64)
    expected = b"".join(_fastavro_long(int(v)) for v in EDGES)
    assert b"".join(long_bytes(int(v)) for v in EDGES) == expected
    assert varints_bytes(values) == expected
    back, end = read_varints(expected, 0, len(EDGES))
    assert end == len(expected) and back.tolist() == EDGES
    pos = 0
    for v in EDGES:
        got, pos = read_long(expected, pos)
        assert got == v


@settings(max_examples=300, deadline=None)
@given(st.lists(INT64, min_size=1, max_size=3 * SMALL_ARRAY))
def test_vectorised_varints_round_trip(values: list[int]) -> None:
    """Both ways of reading and writing a run of numbers: a loop below ``SMALL_ARRAY``
    numbers, numpy from it on."""
    raw = varints_bytes(np.array(values, np.int64))
    assert raw == b"".join(_fastavro_long(v) for v in values)
    back, end = read_varints(raw + b"\x80", 0, len(values))
    assert back.tolist() == values and end == len(raw)


def _fastavro_long(value: int) -> bytes:
    buf = io.BytesIO()
    schemaless_writer(buf, "long", value)
    return buf.getvalue()


# --- schemas the compiler leaves to fastavro ------------------------------------------------


def test_unsupported_schemas_are_refused_at_compile_time() -> None:
    with pytest.raises(UnsupportedSchema):
        compile_writer(["null", "string", "long"])
    with pytest.raises(UnsupportedSchema):
        compile_reader({"type": "long", "logicalType": "timestamp-millis"})
    reader = compile_reader(["null", "string", "long"])
    assert reader(b"\x04\x06", 0) == (3, 2)


def test_numbers_written_in_more_bytes_than_needed_still_read() -> None:
    # 0 and 1 as two-byte varints (0x80 0x00, 0x82 0x00): legal, if no library writes them.
    schema = {"type": "array", "items": ["null", "string"]}
    reader = compile_reader(schema)
    data = b"\x04" + b"\x80\x00" + b"\x82\x00\x82\x00a" + b"\x00"
    assert reader(data, 0) == ([None, "a"], len(data))
    assert schemaless_reader(io.BytesIO(data), schema, None) == [None, "a"]


@pytest.mark.parametrize("n", [SMALL_ARRAY - 1, SMALL_ARRAY])
def test_both_sides_of_the_small_array_bound_agree(n: int) -> None:
    values = [(-1) ** i * (7 ** (i % 23)) for i in range(n)]
    raw = varints_bytes(np.array(values, np.int64))
    assert raw == b"".join(_fastavro_long(v) for v in values)
    back, end = read_varints(raw, 0, n)
    assert back.dtype == np.int64 and back.tolist() == values and end == len(raw)
    with pytest.raises(MalformedBody):
        read_varints(raw[:-1] + b"\x80", 0, n)  # the last number never ends
