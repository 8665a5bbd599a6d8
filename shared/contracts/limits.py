"""The one contract of what Caliber accepts: sizes, counts, numeric ranges and time bounds.

Every boundary (ingest for Kafka, the gateway for REST) checks events against one
:class:`Limits`; a value beyond a bound is refused, never truncated, so what is accepted is
what every store holds and serves back byte-exact. The checks here are the scalar ones
(strings, integers, times); :mod:`shared.contracts.validation` applies them field by field.

Strings: at most ``max_string`` characters (code points), no NUL (PostgreSQL text cannot
hold it) and no lone surrogate (it has no UTF-8 form, so Avro, JSON and PostgreSQL cannot
carry it). Every other code point is kept as sent: 4-byte UTF-8, right-to-left marks,
combining marks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from shared.contracts.errors import ErrorCode, Fault
from shared.settings import Settings

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds of one event, batch message and request; beyond them the input is refused."""

    max_batch_events: int = 10_000
    """Events in one batch message on Kafka."""
    max_request_events: int = 10_000
    """Events in one REST request."""
    max_classes: int = 1_000
    """Entries of a probability or logit vector, and class labels of a batch."""
    max_features: int = 256
    """Features of one event (and feature names of one batch message)."""
    max_string: int = 256
    """Characters of every id, name, version, label, ground truth, feature name, category
    value and metadata key."""
    max_metadata: int = 32
    """Metadata entries of one event."""
    max_metadata_value: int = 1_024
    """Characters of one metadata value."""
    max_event_age_ms: int = 730 * DAY_MS
    """How far in the past an event or label time may lie."""
    max_clock_skew_ms: int = 300_000
    """How far in the future an event or label time may lie (clock skew of a producer)."""
    probability_tolerance: float = 1e-3

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        """The limits a settings object configures (``CALIBER_LIMIT_*``)."""
        return cls(
            max_batch_events=settings.limit_batch_events,
            max_request_events=settings.limit_request_events,
            max_classes=settings.limit_classes,
            max_features=settings.limit_features,
            max_string=settings.limit_string_chars,
            max_metadata=settings.limit_metadata_entries,
            max_metadata_value=settings.limit_metadata_value_chars,
            max_event_age_ms=settings.limit_event_age_seconds * 1000,
            max_clock_skew_ms=settings.limit_clock_skew_seconds * 1000,
        )


DEFAULT_LIMITS = Limits()


def now_ms() -> int:
    return int(time.time() * 1000)


def string_fault(
    field: str,
    value: object,
    max_chars: int,
    event_id: str | None = None,
    *,
    required: bool = True,
) -> Fault | None:
    """Why ``value`` cannot be accepted as the string ``field`` (None: it can)."""
    if type(value) is str:
        if 0 < len(value) <= max_chars and "\x00" not in value and value.isascii():
            return None  # the common case, without building anything
    elif value is None and not required:
        return None
    else:
        if value is None or value == "":
            return Fault(
                ErrorCode.MISSING_FIELD, f"{field} is required: got {value!r}", field, event_id
            )
        return Fault(
            ErrorCode.WRONG_TYPE,
            f"{field} must be a string; got {type(value).__name__}",
            field,
            event_id,
        )
    if not value:
        if not required:
            return None
        return Fault(ErrorCode.MISSING_FIELD, f"{field} is required: got ''", field, event_id)
    if len(value) > max_chars:
        return Fault(
            ErrorCode.TOO_LARGE,
            f"{field} is {len(value)} characters long; at most {max_chars} allowed",
            field,
            event_id,
        )
    if "\x00" in value:
        return Fault(
            ErrorCode.STRING_NUL,
            f"{field} holds a NUL character (at {value.index(chr(0))}); it cannot be stored",
            field,
            event_id,
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return Fault(
            ErrorCode.STRING_SURROGATE,
            f"{field} holds a lone surrogate (at {exc.start}); it is not valid Unicode text",
            field,
            event_id,
        )
    return None


def int64_fault(field: str, value: object, event_id: str | None = None) -> Fault | None:
    """An integer field: a real int (not a bool) within int64."""
    if value is None:
        return None
    if type(value) is not int:
        return Fault(
            ErrorCode.WRONG_TYPE,
            f"{field} must be an integer; got {type(value).__name__}",
            field,
            event_id,
        )
    if not INT64_MIN <= value <= INT64_MAX:
        return Fault(
            ErrorCode.NUMBER_OUT_OF_RANGE,
            f"{field} {value} is outside the 64-bit integer range",
            field,
            event_id,
        )
    return None


def number_fault(
    field: str, value: object, event_id: str | None = None, *, required: bool = True
) -> Fault | None:
    """A float field: an int or float (a bool or a string is not a number)."""
    if value is None and not required:
        return None
    if type(value) is float or type(value) is int:
        if type(value) is int and not -1.7976931348623157e308 <= value <= 1.7976931348623157e308:
            return Fault(
                ErrorCode.NUMBER_OUT_OF_RANGE,
                f"{field} is beyond the range of a double",
                field,
                event_id,
            )
        return None
    return Fault(
        ErrorCode.WRONG_TYPE,
        f"{field} must be a number; got {type(value).__name__}",
        field,
        event_id,
    )


def time_window(limits: Limits, now: int) -> tuple[int, int]:
    """The epoch-ms times accepted at ``now``: [now − max age, now + max clock skew]."""
    return now - limits.max_event_age_ms, now + limits.max_clock_skew_ms


def time_fault(
    field: str, value: object, limits: Limits, now: int, event_id: str | None = None
) -> Fault | None:
    """An epoch-millisecond time within [now − max age, now + max clock skew]."""
    if type(value) is not int:
        return Fault(ErrorCode.WRONG_TYPE, f"{field} must be epoch milliseconds", field, event_id)
    lo, hi = time_window(limits, now)
    if not lo <= value <= hi:
        return Fault(
            ErrorCode.INVALID_TIME,
            f"{field} {value} is outside [now - {limits.max_event_age_ms // 1000} s, "
            f"now + {limits.max_clock_skew_ms // 1000} s] = [{lo}, {hi}] epoch ms",
            field,
            event_id,
        )
    return None
