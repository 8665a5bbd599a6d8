"""Validation of inference events and labels, shared by ingest and the gateway.

Structural checks (ids, model identity, sizes) run per event while events are grouped into
columns; numeric checks (confidence, probabilities, features) run vectorised on the columns.
Every rejection is a :class:`~shared.contracts.errors.Fault` naming the field, the value
and what was expected, so a stream turns it into a dead letter and REST into a 422.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from shared.contracts.batches import LabelColumns, PredictionColumns, Record, size_of
from shared.contracts.errors import ErrorCode, Fault
from shared.contracts.limits import (
    DEFAULT_LIMITS,
    Limits,
    int64_fault,
    now_ms,
    number_fault,
    string_fault,
    time_fault,
    time_window,
)

__all__ = ["DEFAULT_LIMITS", "Limits", "Rows"]


@dataclass(slots=True)
class Rows:
    """Columns of one model version and, per row, the caller's reference of its source."""

    columns: PredictionColumns
    refs: list[int]


_IDENTITY = ("tenant", "model_name", "model_version")
LABEL_SOURCES = frozenset({"feed", "review", "event"})


def _name_fault(field: str, value: object, limits: Limits, event_id: str | None) -> Fault | None:
    fault = string_fault(field, value, limits.max_string, event_id)
    if fault is None:
        if field in _IDENTITY and "/" in value:  # type: ignore[operator]
            return Fault(
                ErrorCode.MISSING_MODEL if field != "tenant" else ErrorCode.MISSING_FIELD,
                f"{field} {value!r} must not contain '/'",
                field,
                event_id,
            )
        return None
    if fault.code is ErrorCode.MISSING_FIELD and field.startswith("model"):
        return Fault(ErrorCode.MISSING_MODEL, fault.message, field, event_id)
    return fault


_CANONICAL_UUID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


_CANONICAL_UUID_LINES = re.compile(f"{_CANONICAL_UUID.pattern}(?:\\n{_CANONICAL_UUID.pattern})*")


def all_canonical_uuids(values: Sequence[object]) -> bool:
    """True when every value is a canonical UUID string: one regular-expression pass over the
    batch, where :func:`check_event_id` is a call per event (False may still mean every id
    is acceptable, in another spelling: then check each)."""
    if not values or not all(type(v) is str for v in values):
        return False
    joined = "\n".join(values)  # type: ignore[arg-type]
    # As many ids as values (a value holding a line break and two ids is not one id).
    return (
        len(joined) == 37 * len(values) - 1 and _CANONICAL_UUID_LINES.fullmatch(joined) is not None
    )


def check_event_id(value: object) -> Fault | None:
    if type(value) is str and _CANONICAL_UUID.fullmatch(value):
        return None
    shown = repr(value)[:80] if isinstance(value, str) else type(value).__name__
    if type(value) is str and len(value) <= 64:
        try:
            uuid.UUID(value)
            return None
        except ValueError:
            pass
    return Fault(
        ErrorCode.INVALID_EVENT_ID,
        f"event_id {shown} is not a UUID (expected e.g. 6f1c…-…, 36 characters)",
        "event_id",
    )


def check_time(
    field: str,
    value: object,
    event_id: str | None,
    limits: Limits = DEFAULT_LIMITS,
    now: int | None = None,
) -> Fault | None:
    return time_fault(field, value, limits, now_ms() if now is None else now, event_id)


def _mapping_fault(
    field: str,
    values: object,
    limits: Limits,
    eid: str,
    *,
    max_entries: int,
    max_value_chars: int | None,
) -> Fault | None:
    """A name → value map: entry count, every key a string within bounds, and each value a
    string (``max_value_chars`` given) or a number (None: numbers, or categories for
    features)."""
    if values is None:
        return None
    if not isinstance(values, dict):
        return Fault(ErrorCode.WRONG_TYPE, f"{field} must be an object", field, eid)
    if len(values) > max_entries:
        return Fault(
            ErrorCode.TOO_LARGE,
            f"{field} has {len(values)} entries; at most {max_entries} allowed",
            field,
            eid,
        )
    for k, v in values.items():
        fault = string_fault(f"{field} key", k, limits.max_string, eid)
        if fault:
            return Fault(fault.code, fault.message, field, eid)
        where = f"{field}.{k}"
        if max_value_chars is not None:
            fault = string_fault(where, v, max_value_chars, eid, required=False)
            if fault and fault.code is not ErrorCode.MISSING_FIELD:
                return fault
        elif field == "features" and isinstance(v, str):
            fault = string_fault(where, v, limits.max_string, eid)
            if fault:
                return Fault(
                    ErrorCode.FEATURES_INVALID
                    if fault.code is ErrorCode.MISSING_FIELD
                    else fault.code,
                    fault.message,
                    where,
                    eid,
                )
        else:
            fault = number_fault(where, v, eid)
            if fault:
                return fault
    return None


def _probabilities_fault(rec: Record, limits: Limits, eid: str) -> Fault | None:
    """A probability vector within the class limit, naming the predicted label, finite."""
    probs = rec.get("probabilities")
    if probs is None:
        return None
    if not 0 < len(probs) <= limits.max_classes:
        return Fault(
            ErrorCode.TOO_LARGE if probs else ErrorCode.PROBABILITIES_INVALID,
            f"probabilities has {len(probs)} classes; expected 1 to {limits.max_classes}",
            "probabilities",
            eid,
        )
    if rec["predicted_label"] not in probs:
        return Fault(
            ErrorCode.PROBABILITIES_INCONSISTENT,
            f"predicted_label {rec['predicted_label']!r} has no entry in probabilities",
            "predicted_label",
            eid,
        )
    bad = [k for k, p in probs.items() if not math.isfinite(p)]
    if bad:
        return Fault(
            ErrorCode.PROBABILITIES_INVALID,
            f"probabilities[{bad[0]!r}] is {probs[bad[0]]}; every probability must be finite",
            f"probabilities.{bad[0]}",
            eid,
        )
    return None


def check_event(
    rec: Record, limits: Limits = DEFAULT_LIMITS, now: int | None = None
) -> Fault | None:
    """Structural checks of one InferenceEvent record (numbers are checked on columns)."""
    event_id = rec.get("event_id")
    fault = check_event_id(event_id)
    if fault:
        return fault
    eid = str(event_id)
    for name in ("tenant", "model_name", "model_version", "predicted_label"):
        fault = _name_fault(name, rec.get(name), limits, eid)
        if fault:
            return fault
    fault = int64_fault("model_version_id", rec.get("model_version_id"), eid)
    fault = fault or check_time("event_time_ms", rec.get("event_time_ms"), eid, limits, now)
    fault = fault or number_fault("confidence", rec.get("confidence"), eid)
    fault = fault or number_fault("uncertainty", rec.get("uncertainty"), eid, required=False)
    fault = fault or string_fault(
        "ground_truth", rec.get("ground_truth"), limits.max_string, eid, required=False
    )
    if fault:
        return fault
    unc = rec.get("uncertainty")
    if unc is not None and not math.isfinite(unc):
        return Fault(
            ErrorCode.NUMBER_OUT_OF_RANGE,
            f"uncertainty is {unc}; expected a finite number (omit it if unknown)",
            "uncertainty",
            eid,
        )
    for name in ("probabilities", "logits"):
        fault = _mapping_fault(
            name, rec.get(name), limits, eid, max_entries=limits.max_classes, max_value_chars=None
        )
        if fault:
            return fault
    logits = rec.get("logits")
    if logits and not all(math.isfinite(v) for v in logits.values()):
        return Fault(ErrorCode.NUMBER_OUT_OF_RANGE, "every logit must be finite", "logits", eid)
    fault = _probabilities_fault(rec, limits, eid)
    if fault:
        return fault
    fault = _mapping_fault(
        "features",
        rec.get("features"),
        limits,
        eid,
        max_entries=limits.max_features,
        max_value_chars=None,
    )
    return fault or _mapping_fault(
        "metadata",
        rec.get("metadata"),
        limits,
        eid,
        max_entries=limits.max_metadata,
        max_value_chars=limits.max_metadata_value,
    )


def group_events(
    events: Iterable[tuple[int, Record]], limits: Limits = DEFAULT_LIMITS, now: int | None = None
) -> tuple[list[Rows], list[tuple[int, Fault]]]:
    """Group single InferenceEvent records by model version into columns.

    ``events`` pairs each record with a caller reference (e.g. its index in a consumed
    batch); faults come back with the same reference. Numeric checks are left to
    :func:`validate_columns`.
    """
    groups: dict[tuple[str, str, str], list[tuple[int, Record]]] = {}
    faults: list[tuple[int, Fault]] = []
    now = now_ms() if now is None else now
    for ref, rec in events:
        fault = check_event(rec, limits, now)
        if fault:
            faults.append((ref, fault))
            continue
        groups.setdefault((rec["tenant"], rec["model_name"], rec["model_version"]), []).append(
            (ref, rec)
        )
    out: list[Rows] = []
    for (tenant, name, version), members in groups.items():
        rows, feature_faults = _columns_of(tenant, name, version, members)
        faults.extend(feature_faults)
        if rows is not None:
            out.append(rows)
    return out, faults


def _columns_of(
    tenant: str, name: str, version: str, members: Sequence[tuple[int, Record]]
) -> tuple[Rows | None, list[tuple[int, Fault]]]:
    numeric_names: set[str] = set()
    categorical_names: set[str] = set()
    faults: list[tuple[int, Fault]] = []
    kept: list[tuple[int, Record]] = []
    for ref, rec in members:
        feats = rec.get("features") or {}
        num = {k for k, v in feats.items() if not isinstance(v, str)}
        cat = feats.keys() - num
        clash = (num & categorical_names) | (cat & numeric_names)
        if clash:
            f = sorted(clash)[0]
            faults.append(
                (
                    ref,
                    Fault(
                        ErrorCode.FEATURES_INVALID,
                        f"feature {f!r} is a number in some events and a category in others "
                        f"of {name}/{version}; a feature must keep one type",
                        f"features.{f}",
                        rec["event_id"],
                    ),
                )
            )
            continue
        numeric_names |= num
        categorical_names |= cat
        kept.append((ref, rec))
    if not kept:
        return None, faults
    recs = [r for _, r in kept]
    n = len(recs)
    classes = sorted({k for r in recs for k in (r.get("probabilities") or ())})
    probs = _class_matrix(recs, "probabilities", classes) if classes else None
    logit_classes = classes or sorted({k for r in recs for k in (r.get("logits") or ())})
    logits = (
        _class_matrix(recs, "logits", logit_classes) if any(r.get("logits") for r in recs) else None
    )
    has_gt = any(r.get("ground_truth") is not None for r in recs)
    has_unc = any(r.get("uncertainty") is not None for r in recs)
    has_meta = any(r.get("metadata") for r in recs)
    nan = math.nan
    cols = PredictionColumns(
        tenant=tenant,
        model_name=name,
        model_version=version,
        model_version_id=recs[0].get("model_version_id"),
        event_ids=[r["event_id"] for r in recs],
        event_time_ms=np.fromiter((r["event_time_ms"] for r in recs), np.int64, n),
        predicted_labels=[r["predicted_label"] for r in recs],
        confidences=np.fromiter((r["confidence"] for r in recs), np.float64, n),
        class_labels=logit_classes,
        probabilities=probs,
        logits=logits,
        numeric_features={
            f: np.fromiter(((r.get("features") or {}).get(f, nan) for r in recs), np.float64, n)
            for f in sorted(numeric_names)
        },
        categorical_features={
            f: [str((r.get("features") or {}).get(f, "")) for r in recs]
            for f in sorted(categorical_names)
        },
        ground_truths=[r.get("ground_truth") for r in recs] if has_gt else None,
        uncertainties=np.fromiter(
            (nan if r.get("uncertainty") is None else r["uncertainty"] for r in recs),
            np.float64,
            n,
        )
        if has_unc
        else None,
        metadata=[dict(r.get("metadata") or {}) for r in recs] if has_meta else None,
    )
    return Rows(cols, [ref for ref, _ in kept]), faults


def _class_matrix(recs: Sequence[Record], field: str, classes: list[str]) -> np.ndarray:
    """N x C matrix; a class an event did not list is 0 (NaN row when the event has none)."""
    index = {c: j for j, c in enumerate(classes)}
    out = np.full((len(recs), len(classes)), np.nan)
    for i, r in enumerate(recs):
        values = r.get(field)
        if values:
            out[i] = 0.0
            for k, v in values.items():
                out[i, index[k]] = v
    return out


def validate_columns(
    cols: PredictionColumns, limits: Limits = DEFAULT_LIMITS
) -> tuple[np.ndarray, list[tuple[int, Fault]]]:
    """Vectorised numeric checks. Returns the mask of valid rows and (row, fault) pairs."""
    n = len(cols)
    faults: dict[int, Fault] = {}

    def flag(rows: np.ndarray, make: object) -> None:
        for i in np.flatnonzero(rows).tolist():
            if i not in faults:
                faults[i] = make(i)  # type: ignore[operator]

    conf = cols.confidences
    eids = cols.event_ids
    flag(
        ~np.isfinite(conf),
        lambda i: Fault(
            ErrorCode.CONFIDENCE_NOT_FINITE,
            f"confidence is {conf[i]}; expected a finite number in [0, 1]",
            "confidence",
            eids[i],
        ),
    )
    flag(
        (conf < 0) | (conf > 1),
        lambda i: Fault(
            ErrorCode.CONFIDENCE_OUT_OF_RANGE,
            f"confidence is {conf[i]}; expected a number in [0, 1]",
            "confidence",
            eids[i],
        ),
    )
    if cols.probabilities is not None:
        _check_probabilities(cols, limits, flag)
    for fname, values in cols.numeric_features.items():
        flag(
            np.isinf(values),
            lambda i, fname=fname, values=values: Fault(
                ErrorCode.FEATURES_INVALID,
                f"feature {fname!r} is {values[i]}; numbers must be finite (omit it if missing)",
                f"features.{fname}",
                eids[i],
            ),
        )
    if cols.uncertainties is not None:
        unc = cols.uncertainties
        flag(
            np.isinf(unc),
            lambda i: Fault(
                ErrorCode.NUMBER_OUT_OF_RANGE,
                f"uncertainty is {unc[i]}; expected a finite number (omit it if unknown)",
                "uncertainty",
                eids[i],
            ),
        )
    if cols.logits is not None:
        lg = cols.logits
        flag(
            np.any(np.isinf(lg), axis=1),
            lambda i: Fault(
                ErrorCode.NUMBER_OUT_OF_RANGE, "every logit must be finite", "logits", eids[i]
            ),
        )
    mask = np.ones(n, dtype=np.bool_)
    if faults:
        mask[list(faults)] = False
    return mask, sorted(faults.items())


def _check_probabilities(cols: PredictionColumns, limits: Limits, flag: object) -> None:
    p = cols.probabilities
    assert p is not None
    eids = cols.event_ids
    tol = limits.probability_tolerance
    present = ~np.all(np.isnan(p), axis=1)
    bad_value = present & np.any(~np.isfinite(p) | (p < 0) | (p > 1), axis=1)
    flag(  # type: ignore[operator]
        bad_value,
        lambda i: Fault(
            ErrorCode.PROBABILITIES_INVALID,
            "every probability must be a finite number in [0, 1]",
            "probabilities",
            eids[i],
        ),
    )
    ok = present & ~bad_value
    sums = np.where(ok, np.nansum(p, axis=1), 1.0)
    flag(  # type: ignore[operator]
        ok & (np.abs(sums - 1.0) > tol),
        lambda i: Fault(
            ErrorCode.PROBABILITIES_NOT_NORMALISED,
            f"probabilities sum to {sums[i]:.6f}; expected 1 within {tol}",
            "probabilities",
            eids[i],
        ),
    )
    index = {c: j for j, c in enumerate(cols.class_labels)}
    col = np.fromiter((index.get(lbl, -1) for lbl in cols.predicted_labels), np.int64, len(cols))
    missing = ok & (col < 0)
    flag(  # type: ignore[operator]
        missing,
        lambda i: Fault(
            ErrorCode.PROBABILITIES_INCONSISTENT,
            f"predicted_label {cols.predicted_labels[i]!r} has no entry in probabilities",
            "predicted_label",
            eids[i],
        ),
    )
    rows = np.arange(len(cols))
    p_pred = np.where(col >= 0, p[rows, np.maximum(col, 0)], np.nan)
    p_max = np.where(ok, np.nanmax(np.where(ok[:, None], p, 0.0), axis=1), np.nan)
    conf = cols.confidences
    flag(  # type: ignore[operator]
        ok & ~missing & ((np.abs(p_pred - conf) > tol) | (p_pred < p_max - tol)),
        lambda i: Fault(
            ErrorCode.PROBABILITIES_INCONSISTENT,
            f"confidence {conf[i]} should be the probability of predicted_label "
            f"{cols.predicted_labels[i]!r} ({p_pred[i]}) and the largest one ({p_max[i]})",
            "confidence",
            eids[i],
        ),
    )


def check_batch_record(rec: Record, limits: Limits = DEFAULT_LIMITS) -> Fault | None:
    """Whole-message checks of a PredictionBatch record: identity, sizes and array shapes."""
    for name in ("tenant", "model_name", "model_version"):
        fault = _name_fault(name, rec.get(name), limits, None)
        if fault:
            return fault
    n = len(rec["event_ids"])
    width = len(rec.get("class_labels") or ())
    return (
        _batch_size_fault(n, width, limits)
        or _batch_names_fault(rec, limits)
        or _batch_shape_fault(rec, n, width)
    )


def _batch_size_fault(n: int, width: int, limits: Limits) -> Fault | None:
    if n > limits.max_batch_events:
        return Fault(
            ErrorCode.TOO_LARGE,
            f"batch holds {n} events; at most {limits.max_batch_events} allowed",
            "event_ids",
        )
    if width > limits.max_classes:
        return Fault(
            ErrorCode.TOO_LARGE, f"{width} classes; at most {limits.max_classes}", "class_labels"
        )
    return None


def _batch_names_fault(rec: Record, limits: Limits) -> Fault | None:
    """Class labels, feature names and the registry id of a batch: within their limits."""
    for label in rec.get("class_labels") or ():
        fault = string_fault("class_labels", label, limits.max_string)
        if fault:
            return fault
    names = [*(rec.get("numeric_features") or {}), *(rec.get("categorical_features") or {})]
    if len(names) > limits.max_features:
        return Fault(
            ErrorCode.TOO_LARGE,
            f"{len(names)} features; at most {limits.max_features} allowed",
            "features",
        )
    for fname in names:
        fault = string_fault("features key", fname, limits.max_string)
        if fault:
            return Fault(fault.code, fault.message, "features")
    fault = int64_fault("model_version_id", rec.get("model_version_id"))
    if fault:
        return fault
    return None


def _batch_shape_fault(rec: Record, n: int, width: int) -> Fault | None:
    """The first array whose length does not fit ``n`` events of ``width`` classes."""
    expect = {
        "event_time_ms": n,
        "predicted_labels": n,
        "confidences": n,
    }
    for opt in ("ground_truths", "uncertainties", "metadata"):
        if size_of(rec.get(opt)):
            expect[opt] = n
    for opt in ("probabilities", "logits"):
        if size_of(rec.get(opt)):
            expect[opt] = n * width
    for fname, want in expect.items():
        got = size_of(rec.get(fname))
        if got != want:
            return _shape_fault(fname, got, want)
    for group in ("numeric_features", "categorical_features"):
        for fname, values in (rec.get(group) or {}).items():
            if len(values) != n:
                return _shape_fault(f"{group}.{fname}", len(values), n)
    return None


def _shape_fault(field: str, got: int, want: int) -> Fault:
    return Fault(
        ErrorCode.BATCH_SHAPE,
        f"{field} has {got} entries; the batch's event_ids say it should have {want}",
        field,
    )


def check_batch_rows(
    cols: PredictionColumns, limits: Limits = DEFAULT_LIMITS, now: int | None = None
) -> list[tuple[int, Fault]]:
    """Per-event structural checks of a decoded batch: ids, labels, times, ground truths,
    category values and metadata, each row on its own (one bad row costs only that row)."""
    now = now_ms() if now is None else now
    if _rows_clean(cols, limits, now):
        return []
    faults: list[tuple[int, Fault]] = []
    truths = cols.ground_truths
    metadata = cols.metadata
    cats = list(cols.categorical_features.items())
    for i, (eid, label, t) in enumerate(
        zip(cols.event_ids, cols.predicted_labels, cols.event_time_ms.tolist(), strict=True)
    ):
        fault = check_event_id(eid) or _name_fault("predicted_label", label, limits, eid)
        fault = fault or check_time("event_time_ms", t, eid, limits, now)
        if fault is None and truths is not None:
            fault = string_fault("ground_truth", truths[i], limits.max_string, eid, required=False)
            if fault is not None and fault.code is ErrorCode.MISSING_FIELD:
                fault = None  # an empty ground truth means none
        for fname, values in cats:
            if fault is not None:
                break
            v = values[i]
            if v:  # "" means the event had no value
                fault = string_fault(f"features.{fname}", v, limits.max_string, eid)
        if fault is None and metadata is not None:
            fault = _mapping_fault(
                "metadata",
                metadata[i],
                limits,
                eid,
                max_entries=limits.max_metadata,
                max_value_chars=limits.max_metadata_value,
            )
        if fault:
            faults.append((i, Fault(fault.code, fault.message, fault.field, eid)))
    return faults


def _rows_clean(cols: PredictionColumns, limits: Limits, now: int) -> bool:
    """Whether every row of ``cols`` passes :func:`check_batch_rows`, shown on the batch
    (ids in one pass, each distinct label or category once, times as an array). False
    means only that the row-by-row check must run, which finds the faults."""
    if cols.metadata is not None or not all_canonical_uuids(cols.event_ids):
        return False
    if not _times_clean(cols.event_time_ms, limits, now):
        return False
    if any(_name_fault("predicted_label", v, limits, None) for v in set(cols.predicted_labels)):
        return False
    if cols.ground_truths is not None and any(
        v is not None and string_fault("ground_truth", v, limits.max_string, required=False)
        for v in set(cols.ground_truths)
    ):
        return False
    return not any(
        v and string_fault("features", v, limits.max_string)
        for values in cols.categorical_features.values()
        for v in set(values)
    )


def _times_clean(times: np.ndarray, limits: Limits, now: int) -> bool:
    """Every epoch-ms time within what :func:`check_time` accepts."""
    lo, hi = time_window(limits, now)
    return bool(times.dtype == np.int64 and np.all((times >= lo) & (times <= hi)))


def clean_label_batch(rec: Record, limits: Limits, now: int) -> LabelColumns | None:
    """A LabelBatch record as columns when every row passes :func:`check_label`, shown on
    the batch; None when some row may not (then check them one by one)."""
    eids = rec["event_ids"]
    truths, sources = rec["ground_truths"], rec["sources"]
    if not (len(truths) == len(sources) == len(rec["label_time_ms"]) == len(eids)):
        return None
    if not all_canonical_uuids(eids) or not set(sources) <= LABEL_SOURCES:
        return None
    names = [("tenant", rec.get("tenant"))] + [
        (n, rec.get(n)) for n in ("model_name", "model_version") if rec.get(n) is not None
    ]
    if any(_name_fault(n, v, limits, None) for n, v in names):
        return None
    if any(_name_fault("ground_truth", v, limits, None) for v in set(truths)):
        return None
    times = np.asarray(rec["label_time_ms"], dtype=np.int64)
    if not _times_clean(times, limits, now):
        return None
    known = rec.get("model_name") is not None and rec.get("model_version") is not None
    return LabelColumns(
        tenant=rec["tenant"],
        model_name=rec["model_name"] if known else None,
        model_version=rec["model_version"] if known else None,
        event_ids=list(eids),
        ground_truths=list(truths),
        sources=list(sources),
        label_time_ms=times,
    )


def check_label(
    rec: Record, limits: Limits = DEFAULT_LIMITS, now: int | None = None
) -> Fault | None:
    """Checks of one Label record."""
    fault = check_event_id(rec.get("event_id"))
    if fault:
        return fault
    eid = str(rec["event_id"])
    fault = _name_fault("tenant", rec.get("tenant"), limits, eid) or _name_fault(
        "ground_truth", rec.get("ground_truth"), limits, eid
    )
    for name in ("model_name", "model_version"):
        if fault is None and rec.get(name) is not None:
            fault = _name_fault(name, rec.get(name), limits, eid)
    if fault is None and rec.get("source") not in LABEL_SOURCES:
        fault = Fault(
            ErrorCode.MISSING_FIELD,
            f"source must be one of {sorted(LABEL_SOURCES)}",
            "source",
            eid,
        )
    return fault or check_time("label_time_ms", rec.get("label_time_ms"), eid, limits, now)


def group_labels(
    labels: Iterable[tuple[int, Record]], limits: Limits = DEFAULT_LIMITS, now: int | None = None
) -> tuple[list[tuple[LabelColumns, list[int]]], list[tuple[int, Fault]]]:
    """Group single Label records by (tenant, model version or unknown) into columns."""
    groups: dict[tuple[str, str | None, str | None], list[tuple[int, Record]]] = {}
    faults: list[tuple[int, Fault]] = []
    now = now_ms() if now is None else now
    for ref, rec in labels:
        fault = check_label(rec, limits, now)
        if fault:
            faults.append((ref, fault))
            continue
        known = rec.get("model_name") is not None and rec.get("model_version") is not None
        key = (
            (rec["tenant"], rec["model_name"], rec["model_version"])
            if known
            else (
                rec["tenant"],
                None,
                None,
            )
        )
        groups.setdefault(key, []).append((ref, rec))
    out = []
    for (tenant, name, version), members in groups.items():
        recs = [r for _, r in members]
        cols = LabelColumns(
            tenant=tenant,
            model_name=name,
            model_version=version,
            event_ids=[r["event_id"] for r in recs],
            ground_truths=[r["ground_truth"] for r in recs],
            sources=[r["source"] for r in recs],
            label_time_ms=np.fromiter((r["label_time_ms"] for r in recs), np.int64, len(recs)),
        )
        out.append((cols, [ref for ref, _ in members]))
    return out, faults
