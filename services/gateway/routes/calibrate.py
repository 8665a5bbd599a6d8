"""``POST /api/calibrate``: calibrated confidence inline, for a model server.

The answer is the map the policy applies to each event, segment maps and canary arm
included: the same registry and segment-map views (``ModelCache``) and the same
:func:`shared.recalibration.serving.serve`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Request, status
from pydantic import BaseModel, Field

from services.gateway.auth import PRODUCE, Principal, require
from services.gateway.schemas import StrictIn
from services.gateway.state import state_of
from shared.recalibration.segments import segment_of
from shared.recalibration.serving import serve

router = APIRouter(prefix="/api", tags=["rollout"])
_404: dict[int | str, dict[str, Any]] = {404: {"description": "not found in this tenant"}}
MAX_CALIBRATE_EVENTS = 1000


def _field_error(field: str, msg: str, kind: str, code: int = 422) -> HTTPException:
    return HTTPException(code, detail=[{"loc": ["body", field], "msg": msg, "type": kind}])


class CalibrateEvent(StrictIn):
    event_id: str = Field(min_length=1, max_length=200, description="as sent with the event")
    confidence: float = Field(ge=0, le=1, description="raw top-label confidence")
    probabilities: dict[str, float] | None = Field(
        default=None, max_length=1000, description="label → raw probability"
    )
    features: dict[str, float | str] | None = Field(
        default=None,
        max_length=256,
        description="the event's features: the model version's segment key is read here",
    )
    metadata: dict[str, str] | None = Field(
        default=None,
        max_length=32,
        description="the event's metadata: the segment key is read here when no feature has it",
    )


class CalibrateIn(StrictIn):
    model_version_id: int = Field(ge=1, description="registry id of the model version")
    events: list[CalibrateEvent] = Field(min_length=1, max_length=MAX_CALIBRATE_EVENTS)


class Calibrated(BaseModel):
    event_id: str
    calibrated_confidence: float | None
    status: Literal["auto", "review"]
    calibrator_version: str
    arm: Literal["active", "control", "canary"]


class CalibrateOut(BaseModel):
    model_version_id: int
    threshold: float
    candidate_version: str | None
    rollout_stage: str | None
    results: list[Calibrated]
    answered_at: datetime


def _probability_matrix(events: list[CalibrateEvent]) -> tuple[list[str], Any]:
    first = next((e.probabilities for e in events if e.probabilities), None)
    if first is None:
        return [], None
    labels = list(first)
    matrix = np.full((len(events), len(labels)), np.nan)
    for i, e in enumerate(events):
        if not e.probabilities:
            continue
        if set(e.probabilities) != set(labels):
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_ENTITY,
                detail=[{"loc": ["body", "events", i, "probabilities"],
                         "msg": f"labels must be those of the first event: {sorted(labels)}",
                         "type": "class_labels_differ"}],
            )  # fmt: skip
        matrix[i] = [e.probabilities[k] for k in labels]
    return labels, matrix


@router.post("/calibrate", response_model=CalibrateOut, responses=_404)
async def calibrate(
    body: CalibrateIn, request: Request, who: Annotated[Principal, Depends(require(PRODUCE))]
) -> CalibrateOut:
    """Calibrated confidence, decision, calibrator version and arm of each event: the map
    the policy applies to it (shadow candidates run beside, canary arm by event id)."""
    state = state_of(request)
    ref = await state.models.by_id(who.tenant, body.model_version_id)
    if ref is None:
        raise _field_error(
            "model_version_id", f"model version {body.model_version_id} not found",
            "unknown_model", 404,
        )  # fmt: skip
    labels, probs = _probability_matrix(body.events)
    ids = [e.event_id for e in body.events]
    key = ref.segment_key
    segments = (
        None if key is None else [segment_of(key, e.features, e.metadata) for e in body.events]
    )
    served = serve(
        ref.plan(),
        ids,
        np.array([e.confidence for e in body.events], dtype=np.float64),
        probs,
        None,
        labels,
        segments,
    )
    versions = served.calibrator_versions or [served.calibrator_version] * len(ids)
    conf = served.confidences.tolist()
    results = [
        Calibrated(
            event_id=eid,
            calibrated_confidence=c if c == c else None,
            status="review" if r else "auto",
            calibrator_version=v,
            arm=arm,  # type: ignore[arg-type]
        )
        for eid, c, r, v, arm in zip(
            ids, conf, served.review.tolist(), versions, served.arms(), strict=True
        )
    ]
    candidate = ref.candidate
    return CalibrateOut(
        model_version_id=ref.id,
        threshold=ref.abstain_threshold,
        candidate_version=None if candidate is None else candidate.map.version,
        rollout_stage=None if candidate is None else candidate.stage,
        results=results,
        answered_at=datetime.now().astimezone(),
    )
