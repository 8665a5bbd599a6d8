"""Drift: current scores, drift alerts, reference uploads and per-feature thresholds.

Ownership. The gateway is the only writer of ``drift_references`` (uploaded reference
profiles, versioned by content digest, newest first) and ``drift_thresholds``; the drift
worker reads both from its evaluation loop and makes the newest upload of a model version
its active profile (in the worker's own Redis keys) within one evaluation cadence. Scores
come from the worker's Redis state (``shared.windows.drift``), drift alerts from the
``alerts`` table the recorder fills. Every query is scoped to the caller's tenant, so
another tenant's model version ids look unknown (404).
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Annotated, Any

import asyncpg
import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from services.gateway.auth import ADMIN, READ, Principal, require
from services.gateway.edge import large_body
from services.gateway.schemas import (
    INT64_MAX,
    DriftAlertOut,
    OptionalQueryId,
    QueryId,
    ReferenceColumnsIn,
    ReferenceEvent,
    ReferenceIn,
    ReferenceOut,
    ThresholdsIn,
)
from services.gateway.state import state_of
from shared.contracts.batches import model_key
from shared.drift.profile import CONFIDENCE_KEY, LABEL_KEY
from shared.drift.profile_builder import build_profile
from shared.drift.profile_codec import profile_to_dict
from shared.windows.drift import MAX_FEATURES, read_collected, read_reference, read_scores

router = APIRouter(prefix="/api", tags=["drift"])


async def _owned(request: Request, who: Principal, model_version_id: int) -> asyncpg.Record:
    row = await state_of(request).pool.fetchrow(
        "SELECT id, tenant_id, name, version FROM model_versions WHERE id = $1 AND tenant_id = $2",
        model_version_id,
        who.tenant,
    )
    if row is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail=f"model version {model_version_id} not found"
        )
    return row


def _unprocessable(loc: list[str | int], msg: str) -> HTTPException:
    return HTTPException(422, detail=[{"loc": loc, "msg": msg, "type": "value"}])


def _columns(events: list[ReferenceEvent]) -> dict[str, Any]:
    """Feature name → numeric array (NaN = missing) or list of categories ("" = missing)."""
    names = sorted({k for e in events for k in (e.features or {})})
    if len(names) > MAX_FEATURES:
        raise _unprocessable(
            ["body", "events"], f"{len(names)} features; a profile holds at most {MAX_FEATURES}"
        )
    out: dict[str, Any] = {}
    for name in names:
        if name in (CONFIDENCE_KEY, LABEL_KEY):
            raise _unprocessable(["body", "events", "features", name], "reserved feature name")
        values = [(e.features or {}).get(name) for e in events]
        present = [v for v in values if v is not None]
        if all(isinstance(v, str) for v in present):
            out[name] = ["" if v is None else str(v) for v in values]
        elif all(not isinstance(v, str) for v in present):
            x = np.array([np.nan if v is None else float(v) for v in values])
            if not np.all(np.isfinite(x[~np.isnan(x)])):
                raise _unprocessable(["body", "events", "features", name], "not finite")
            out[name] = x
        else:
            raise _unprocessable(
                ["body", "events", "features", name], "mixes numbers and categories"
            )
    return out


async def _store(
    request: Request,
    who: Principal,
    model_version_id: int,
    confidences: Any,
    labels: list[str],
    columns: dict[str, Any],
) -> ReferenceOut:
    row = await _owned(request, who, model_version_id)
    key = model_key(row["tenant_id"], row["name"], row["version"])
    try:
        # Off the event loop: 100,000 events take a few hundred milliseconds to profile.
        profile = await asyncio.to_thread(build_profile, key, confidences, labels, columns)
    except ValueError as exc:
        raise _unprocessable(["body", "events"], str(exc)) from exc
    as_dict = profile_to_dict(profile)
    try:
        document = json.dumps(as_dict, allow_nan=False)
    except ValueError:
        # A statistic overflowed (values near ±1.8e308): say which feature.
        bad = [
            name
            for name, feature in as_dict.get("features", {}).items()
            if not _finite_json(feature)
        ]
        raise _unprocessable(
            ["body", "features", *(bad[:1] or ["?"])],
            "values too large to profile (a statistic of them overflows); scale the feature",
        ) from None
    created = await state_of(request).pool.fetchval(
        "INSERT INTO drift_references (tenant_id, model_version_id, version, n_samples, "
        "profile, api_key_id) VALUES ($1, $2, $3, $4, $5::jsonb, $6) RETURNING created_at",
        who.tenant,
        model_version_id,
        profile.version,
        profile.n_samples,
        document,
        who.key_id,
    )
    return ReferenceOut(
        model_version_id=model_version_id,
        reference_version=profile.version,
        n_samples=profile.n_samples,
        features=list(profile.features),
        created_at=created,
    )


def _finite_json(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        return False
    return True


@router.post("/drift/reference", response_model=ReferenceOut, status_code=status.HTTP_201_CREATED)
async def upload_reference(
    request: Request, who: Annotated[Principal, Depends(require(ADMIN))], body: ReferenceIn
) -> ReferenceOut:
    """Build a reference profile from a batch of events and make it the model version's
    active one (it replaces any earlier profile once the drift worker's next evaluation
    picks it up). The version is a digest of the profile's content. Limited by
    CALIBER_GATEWAY_MAX_BODY_BYTES; a large reference goes to ``/api/drift/reference/columns``."""
    columns = _columns(body.events)
    return await _store(
        request,
        who,
        body.model_version_id,
        [e.confidence for e in body.events],
        [e.predicted_label for e in body.events],
        columns,
    )


_COLUMNS_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": ReferenceColumnsIn.model_json_schema()}},
    }
}


@router.post(
    "/drift/reference/columns",
    response_model=ReferenceOut,
    status_code=status.HTTP_201_CREATED,
    openapi_extra=_COLUMNS_BODY,
)
@large_body
async def upload_reference_columns(
    request: Request, who: Annotated[Principal, Depends(require(ADMIN))]
) -> ReferenceOut:
    """The same as ``POST /api/drift/reference``, for a reference sent as columns (up to
    100,000 events, CALIBER_GATEWAY_MAX_REFERENCE_BYTES, default 64 MiB).

    The body is validated straight from its bytes into the columns (no intermediate JSON
    objects), and each column becomes an array as soon as it is checked; a reference costs
    the gateway at most about 12 times its body at the peak (measured 9.4 times)."""
    try:
        body = ReferenceColumnsIn.model_validate_json(await request.body())
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None
    n = len(body.confidence)
    if len(body.predicted_label) != n:
        raise _unprocessable(
            ["body", "predicted_label"], f"{len(body.predicted_label)} labels for {n} confidences"
        )
    columns: dict[str, Any] = {}
    for name in list(body.features):
        values = body.features.pop(name)
        if len(values) != n:
            raise _unprocessable(
                ["body", "features", name], f"{len(values)} values for {n} confidences"
            )
        if name in (CONFIDENCE_KEY, LABEL_KEY):
            raise _unprocessable(["body", "features", name], "reserved feature name")
        columns[name] = _column(name, values)
        del values
    confidences = np.asarray(body.confidence, dtype=np.float64)
    labels, model_version_id = body.predicted_label, body.model_version_id
    del body
    return await _store(request, who, model_version_id, confidences, labels, columns)


def _column(name: str, values: list[Any]) -> Any:
    """A numeric column as an array (NaN = missing), a categorical one as strings."""
    if any(isinstance(v, str) for v in values):
        return ["" if v is None else v for v in values]
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


@router.get("/drift/reference", response_model=ReferenceOut)
async def active_reference(
    request: Request, who: Annotated[Principal, Depends(require(READ))], model_version_id: QueryId
) -> ReferenceOut:
    """The profile the drift worker scores against now (built from the reference window,
    or uploaded); 404 while the model version's reference window is still filling."""
    row = await _owned(request, who, model_version_id)
    key = model_key(row["tenant_id"], row["name"], row["version"])
    ref = await read_reference(
        state_of(request).redis, state_of(request).settings.redis_prefix, key
    )
    if ref is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail=f"model version {model_version_id} has no profile yet"
        )
    profile = ref["profile"]
    return ReferenceOut(
        model_version_id=model_version_id,
        reference_version=profile["version"],
        n_samples=profile["n_samples"],
        features=sorted(profile["features"]),
        source=ref["source"],
    )


@router.put("/drift/thresholds")
async def set_thresholds(
    request: Request, who: Annotated[Principal, Depends(require(ADMIN))], body: ThresholdsIn
) -> dict[str, Any]:
    """Set thresholds per feature of one model version (unnamed features keep the worker's
    defaults: PSI 0.2, Cohen's w 0.3); returns every threshold the version has."""
    await _owned(request, who, body.model_version_id)
    async with state_of(request).pool.acquire() as conn, conn.transaction():
        for feature, threshold in body.thresholds.items():
            if not feature or not math.isfinite(threshold):
                raise _unprocessable(
                    ["body", "thresholds", feature], "expected a name and a number"
                )
            await conn.execute(
                "INSERT INTO drift_thresholds (model_version_id, feature, threshold) "
                "VALUES ($1, $2, $3) ON CONFLICT (model_version_id, feature) DO UPDATE "
                "SET threshold = EXCLUDED.threshold, updated_at = now()",
                body.model_version_id,
                feature,
                threshold,
            )
        rows = await conn.fetch(
            "SELECT feature, threshold FROM drift_thresholds WHERE model_version_id = $1 "
            "ORDER BY feature",
            body.model_version_id,
        )
    return {
        "model_version_id": body.model_version_id,
        "thresholds": {r["feature"]: r["threshold"] for r in rows},
    }


@router.get("/drift")
async def current_drift(
    request: Request, who: Annotated[Principal, Depends(require(READ))], model_version_id: QueryId
) -> dict[str, Any]:
    """Current scores of every profiled feature, the confidence and the predicted-label mix
    over the sliding window: each method's score, the samples it used (trusted once at
    least ``min_samples``), the alerting method's threshold and severity, and the
    reference version they were measured against."""
    row = await _owned(request, who, model_version_id)
    key = model_key(row["tenant_id"], row["name"], row["version"])
    scores = await read_scores(
        state_of(request).redis, state_of(request).settings.redis_prefix, key
    )
    if scores is None:
        collected = await read_collected(
            state_of(request).redis, state_of(request).settings.redis_prefix, key
        )
        return {
            "model_version_id": model_version_id,
            "status": "collecting the reference window" if collected else "no scores yet",
            "reference_collected": collected,
            "features": [],
        }
    scores.pop("model", None)
    return {**scores, "model_version_id": model_version_id, "status": "scored"}


@router.get("/drift-alerts", response_model=list[DriftAlertOut])
async def drift_alerts(
    request: Request,
    who: Annotated[Principal, Depends(require(READ))],
    model_version_id: OptionalQueryId = None,
    feature: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
) -> list[DriftAlertOut]:
    """Drift alerts and recoveries of the tenant's model versions, newest first."""
    rows = await state_of(request).pool.fetch(
        "SELECT coalesce(a.model_version_id, m.id) AS model_version_id, a.feature, a.value, "
        "a.threshold, a.severity, a.created_at, a.method, a.window_name, a.reference_version, "
        "a.n_samples FROM alerts a LEFT JOIN model_versions m ON m.tenant_id = a.tenant_id "
        "AND m.name = a.model_name AND m.version = a.model_version "
        "WHERE a.tenant_id = $1 AND a.kind = 'drift' "
        "AND ($2::bigint IS NULL OR coalesce(a.model_version_id, m.id) = $2) "
        "AND ($3::text IS NULL OR a.feature = $3) "
        "ORDER BY a.created_at DESC, a.id DESC LIMIT $4 OFFSET $5",
        who.tenant,
        model_version_id,
        feature,
        limit,
        offset,
    )
    return [
        DriftAlertOut(
            model_version_id=r["model_version_id"],
            feature=r["feature"],
            drift_score=r["value"],
            threshold=r["threshold"],
            severity=r["severity"],
            created_at=r["created_at"],
            method=r["method"],
            window=r["window_name"],
            reference_version=r["reference_version"],
            n_samples=r["n_samples"],
        )
        for r in rows
    ]
