"""Avro single-object codec: round trips, schema evolution, and faults as values."""

from __future__ import annotations

import copy
import json
import math
import uuid
from typing import Any

import pytest
from fastavro.utils import generate_one

from shared.contracts.codec import HEADER_SIZE, MAGIC, SCHEMA_DIR, AvroCodec, CodecError, Decoded
from shared.contracts.errors import ErrorCode, Fault

CODEC = AvroCodec()


def _sample(name: str) -> dict[str, Any]:
    record = generate_one(CODEC.schema(name).parsed)
    assert isinstance(record, dict)
    return record


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@pytest.mark.parametrize("name", CODEC.names)
def test_round_trip_of_every_schema(name: str) -> None:
    record = _sample(name)
    data = CODEC.encode(name, record)
    assert data[:2] == MAGIC
    assert data[2:HEADER_SIZE] == CODEC.schema(name).fingerprint
    decoded = CODEC.decode(data)
    assert isinstance(decoded, Decoded)
    assert decoded.name == name
    assert _same(decoded.record, record)


def test_fingerprint_is_crc64_avro_little_endian() -> None:
    # The Avro specification's fingerprint of the schema "int" is 0x7275d51a3f395c8f,
    # written little-endian after C3 01.
    from fastavro.schema import fingerprint

    assert bytes.fromhex(fingerprint('"int"', "CRC-64-AVRO")) == bytes.fromhex("8f5c393f1ad57572")


def test_older_writer_version_decodes_into_current_reader() -> None:
    current = json.loads((SCHEMA_DIR / "Label.avsc").read_text())
    older = copy.deepcopy(current)
    # An older Label that had no model fields and no source enum.
    older["fields"] = [
        f for f in older["fields"] if f["name"] not in ("model_name", "model_version", "source")
    ]
    codec = AvroCodec(extra_writers={"Label": [older]})
    old_writer = next(w for w in codec.writers() if w.version == "extra0")
    import io

    from fastavro import schemaless_writer

    buf = io.BytesIO()
    buf.write(MAGIC + old_writer.fingerprint)
    eid = str(uuid.uuid4())
    schemaless_writer(
        buf,
        old_writer.parsed,
        {"event_id": eid, "tenant": "t", "ground_truth": "cat", "label_time_ms": 5},
    )
    decoded = codec.decode(buf.getvalue())
    assert isinstance(decoded, Decoded)
    assert decoded.writer_version == "extra0"
    assert decoded.record == {
        "event_id": eid,
        "tenant": "t",
        "model_name": None,
        "model_version": None,
        "ground_truth": "cat",
        "source": "feed",
        "label_time_ms": 5,
    }


def test_unknown_fingerprint_is_a_fault() -> None:
    result = CODEC.decode(MAGIC + b"\x01" * 8 + b"\x00")
    assert isinstance(result, Fault)
    assert result.code is ErrorCode.UNKNOWN_SCHEMA
    assert "0101010101010101" in result.message


@pytest.mark.parametrize("cut", [0, 1, 5, HEADER_SIZE, HEADER_SIZE + 3, -1])
def test_truncated_bytes_are_a_fault(cut: int) -> None:
    data = CODEC.encode("Label", _sample("Label"))
    result = CODEC.decode(data[:cut])
    assert isinstance(result, Fault)
    assert result.code in (ErrorCode.NOT_AVRO, ErrorCode.MALFORMED_AVRO)


def test_trailing_bytes_are_a_fault() -> None:
    data = CODEC.encode("Label", _sample("Label"))
    result = CODEC.decode(data + b"\x00")
    assert isinstance(result, Fault) and result.code is ErrorCode.MALFORMED_AVRO


@pytest.mark.parametrize("data", [None, b"", b"{}", b'{"event_id": 1}'])
def test_non_avro_is_a_fault(data: bytes | None) -> None:
    result = CODEC.decode(data)
    assert isinstance(result, Fault) and result.code is ErrorCode.NOT_AVRO


def test_unexpected_type_is_a_fault() -> None:
    data = CODEC.encode("Label", _sample("Label"))
    result = CODEC.decode(data, expected={"InferenceEvent"})
    assert isinstance(result, Fault) and result.code is ErrorCode.UNEXPECTED_TYPE


def test_encoding_a_bad_record_raises_codec_error() -> None:
    with pytest.raises(CodecError, match="Label"):
        CODEC.encode("Label", {"event_id": 3})
    with pytest.raises(CodecError, match="unknown record type"):
        CODEC.encode("Nope", {})
