"""Labels over REST: ground truth of earlier predictions, published to labels.raw.

For producers that cannot reach Kafka (the client library's REST fallback): the same
checks as ingest's for a ``Label`` (``shared/contracts/validation.py``), all or none, then
one ``LabelBatch`` message per model version (or per tenant when the model is not named),
acknowledged by Kafka before the answer. A label is keyed by its prediction's event id, so
posting the same labels again counts nothing twice (ingest and the aggregator's join key
on tenant and event id).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from confluent_kafka import KafkaException
from fastapi import APIRouter, Depends, HTTPException, Request, status
from pydantic import BaseModel, Field

from services.gateway.auth import PRODUCE, Principal, require
from services.gateway.schemas import StrictIn
from services.gateway.state import state_of
from shared.contracts.limits import Limits
from shared.contracts.validation import group_labels
from shared.runtime import clock

router = APIRouter(prefix="/api", tags=["predictions"])


class LabelIn(StrictIn):
    event_id: uuid.UUID = Field(strict=False, description="event id of the labelled prediction")
    ground_truth: str
    model_name: str | None = Field(default=None, description="optional; ingest fills it in")
    model_version: str | None = None
    label_time: datetime | None = Field(
        default=None, strict=False, description="default: when received"
    )


class LabelsIn(StrictIn):
    labels: list[LabelIn] = Field(
        min_length=1, description="at most CALIBER_GATEWAY_MAX_REQUEST_EVENTS; all or none"
    )


class LabelsAccepted(BaseModel):
    accepted: int


def _record(label: LabelIn, tenant: str, now_ms: int) -> dict[str, Any]:
    at = label.label_time
    return {
        "event_id": str(label.event_id),
        "tenant": tenant,
        "model_name": label.model_name,
        "model_version": label.model_version,
        "ground_truth": label.ground_truth,
        "source": "feed",
        "label_time_ms": now_ms if at is None else int(at.timestamp() * 1000),
    }


def _unprocessable(detail: list[dict[str, Any]]) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, detail=detail)


@router.post(
    "/labels",
    response_model=LabelsAccepted,
    status_code=status.HTTP_202_ACCEPTED,
    responses={503: {"description": "Kafka did not acknowledge the labels; none was accepted"}},
)
async def post_labels(
    body: LabelsIn, request: Request, who: Annotated[Principal, Depends(require(PRODUCE))]
) -> LabelsAccepted:
    """Validate labels (all or none) and publish them to labels.raw."""
    state = state_of(request)
    most = state.settings.gateway_max_request_events
    if len(body.labels) > most:
        raise _unprocessable(
            [{"loc": ["body", "labels"], "msg": f"at most {most} labels per request",
              "type": "too_large"}]
        )  # fmt: skip
    now = clock.now_ms()
    records = [(i, _record(label, who.tenant, now)) for i, label in enumerate(body.labels)]
    groups, faults = group_labels(records, Limits.from_settings(state.settings), now)
    if faults:
        raise _unprocessable(
            [
                {"loc": ["body", "labels", i, f.field or "label"], "msg": f.message,
                 "type": f.code.value}
                for i, f in faults
            ]
        )  # fmt: skip
    messages: list[tuple[str, bytes | None, bytes]] = [
        (
            state.topics.labels_raw,
            (cols.key or cols.tenant).encode(),
            state.codec.encode("LabelBatch", cols.to_columnar_record()),
        )
        for cols, _ in groups
    ]
    try:
        await state.publisher.send(messages)
    except KafkaException as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail=f"Kafka did not acknowledge the labels, none was accepted: {exc}",
        ) from exc
    return LabelsAccepted(accepted=len(records))
