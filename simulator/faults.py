"""Deliberately broken messages, one kind per ingest error code, for tests and the demo."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

from shared.contracts.codec import AvroCodec
from shared.contracts.errors import ErrorCode

Record = dict[str, Any]


def _with(record: Record, **changes: Any) -> Record:
    return {**record, **changes}


def _bad_probabilities(record: Record) -> Record:
    probs = dict(record["probabilities"] or {record["predicted_label"]: record["confidence"]})
    probs[record["predicted_label"]] = record["confidence"]
    first_other = next((k for k in probs if k != record["predicted_label"]), None)
    if first_other is None:
        probs["__extra__"] = 0.4
    else:
        probs[first_other] += 0.3
    return _with(record, probabilities=probs)


FAULTS: dict[ErrorCode, Callable[[AvroCodec, Record], bytes]] = {
    ErrorCode.NOT_AVRO: lambda codec, rec: b'{"event_id": "' + rec["event_id"].encode() + b'"}',
    ErrorCode.UNKNOWN_SCHEMA: lambda codec, rec: b"\xc3\x01" + os.urandom(8) + b"\x00\x02",
    ErrorCode.MALFORMED_AVRO: lambda codec, rec: codec.encode("InferenceEvent", rec)[:14],
    ErrorCode.CONFIDENCE_NOT_FINITE: lambda codec, rec: codec.encode(
        "InferenceEvent", _with(rec, confidence=math.nan, probabilities=None)
    ),
    ErrorCode.CONFIDENCE_OUT_OF_RANGE: lambda codec, rec: codec.encode(
        "InferenceEvent", _with(rec, confidence=1.7, probabilities=None)
    ),
    ErrorCode.PROBABILITIES_NOT_NORMALISED: lambda codec, rec: codec.encode(
        "InferenceEvent", _bad_probabilities(rec)
    ),
    ErrorCode.MISSING_MODEL: lambda codec, rec: codec.encode(
        "InferenceEvent", _with(rec, model_name="")
    ),
    ErrorCode.INVALID_EVENT_ID: lambda codec, rec: codec.encode(
        "InferenceEvent", _with(rec, event_id="not-a-uuid")
    ),
}
"""Error code → a function that breaks a valid InferenceEvent record in that way."""
