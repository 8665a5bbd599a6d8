"""Stable error codes of every rejected message or request.

A code names one kind of fault and never changes meaning; dashboards and alert rules key on
it. Each dead letter and each REST 4xx carries one code and a message a person can act on.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ErrorCode(StrEnum):
    NOT_AVRO = "not_avro"
    """The bytes do not start with the Avro single-object marker C3 01."""
    UNKNOWN_SCHEMA = "unknown_schema"
    """The writer-schema fingerprint is not one Caliber knows."""
    MALFORMED_AVRO = "malformed_avro"
    """The body does not decode with the writer schema its fingerprint names."""
    UNEXPECTED_TYPE = "unexpected_type"
    """A known record type that this topic does not carry."""
    MISSING_FIELD = "missing_field"
    INVALID_EVENT_ID = "invalid_event_id"
    MISSING_MODEL = "missing_model"
    CONFIDENCE_NOT_FINITE = "confidence_not_finite"
    CONFIDENCE_OUT_OF_RANGE = "confidence_out_of_range"
    PROBABILITIES_INVALID = "probabilities_invalid"
    PROBABILITIES_NOT_NORMALISED = "probabilities_not_normalised"
    PROBABILITIES_INCONSISTENT = "probabilities_inconsistent"
    FEATURES_INVALID = "features_invalid"
    TOO_LARGE = "too_large"
    BATCH_SHAPE = "batch_shape"
    INVALID_TIME = "invalid_time"
    STRING_NUL = "string_nul"
    """A string holds a NUL character, which PostgreSQL text cannot store."""
    STRING_SURROGATE = "string_surrogate"
    """A string holds a lone surrogate: not Unicode text, it has no UTF-8 form."""
    WRONG_TYPE = "wrong_type"
    """A value of the wrong type: a boolean or a string where a number is expected."""
    NUMBER_OUT_OF_RANGE = "number_out_of_range"
    """An integer outside int64, or a number beyond the range of a double."""
    WORKER_CRASH = "worker_crash"
    """A worker crashed on this message repeatedly; it was set aside so the worker goes on."""
    REJECTED_BY_DATABASE = "rejected_by_database"
    """PostgreSQL refused to store the record (a value outside a column's type or check)."""


@dataclass(frozen=True, slots=True)
class Fault:
    """Why one message or event was rejected: a stable code, the field and a human message."""

    code: ErrorCode
    message: str
    field: str | None = None
    event_id: str | None = None
