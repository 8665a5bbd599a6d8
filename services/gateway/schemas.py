"""Request and response bodies of the REST API (pydantic; they make the OpenAPI docs).

Field names follow the original Caliber API (``id``, ``model_version_id``, ``confidence``,
``predicted_label``, ``ground_truth``, ``correct``, ``status``, ...), so its clients keep
working; a prediction's ``id`` is its ``event_id``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Path, Query
from pydantic import BaseModel, ConfigDict, Field

from shared.validation import DEFAULT_LIMITS

Stage = Literal["production", "staging", "archived"]
Decision = Literal["auto", "review"]
Role = Literal["producer", "reviewer", "viewer", "admin"]
NAME_PATTERN = r"^[^/]+$"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
"""Every integer a request carries: PostgreSQL's bigint, Avro's long."""
PathId = Annotated[int, Path(ge=INT64_MIN, le=INT64_MAX)]
QueryId = Annotated[int, Query(ge=INT64_MIN, le=INT64_MAX)]
OptionalQueryId = Annotated[int | None, Query(ge=INT64_MIN, le=INT64_MAX)]


class StrictIn(BaseModel):
    """A request body: a boolean is not a number, a string is not a number, and a number
    is finite (JSON's NaN and Infinity extensions are refused).

    Times and UUIDs, which JSON can only carry as strings, set ``strict=False`` per field.
    """

    model_config = ConfigDict(strict=True, allow_inf_nan=False)


class PredictionIn(StrictIn):
    """One inference event. Name the model by ``model_version_id`` (or name + version)."""

    event_id: uuid.UUID | None = Field(
        default=None, strict=False, description="idempotency key; generated when absent"
    )
    model_version_id: Int64 | None = Field(default=None, description="registry id of the model")
    model_name: str | None = Field(default=None, description="instead of model_version_id")
    model_version: str | None = Field(default=None, description="instead of model_version_id")
    event_time: datetime | None = Field(
        default=None, strict=False, description="default: when received"
    )
    predicted_label: str
    confidence: float = Field(description="top-label probability, in [0, 1]")
    probabilities: dict[str, float] | None = None
    logits: dict[str, float] | None = None
    features: dict[str, float | str] | None = None
    ground_truth: str | None = None
    uncertainty: float | None = None
    metadata: dict[str, str] | None = None


class PredictionBatchIn(StrictIn):
    events: list[PredictionIn] = Field(
        min_length=1,
        description="at most CALIBER_GATEWAY_MAX_REQUEST_EVENTS (default "
        f"{DEFAULT_LIMITS.max_batch_events:,}); one faulty event refuses the whole request",
    )


class DecisionOut(BaseModel):
    """One accepted event and the decision the policy will take on it."""

    event_id: str
    model_version_id: int
    status: Decision
    calibrated_confidence: float
    threshold: float


class PredictionAccepted(DecisionOut):
    """The answer to one event: the event as accepted, and the decision."""

    id: str
    model_name: str
    model_version: str
    predicted_label: str
    confidence: float
    uncertainty: float | None
    ground_truth: str | None
    correct: bool | None
    event_time: datetime
    created_at: datetime


class BatchAccepted(BaseModel):
    accepted: int
    predictions: list[DecisionOut]


class PredictionOut(BaseModel):
    id: str
    event_id: str
    model_version_id: int | None
    model_name: str
    model_version: str
    predicted_label: str
    confidence: float
    calibrated_confidence: float | None
    threshold: float | None
    uncertainty: float | None
    ground_truth: str | None
    correct: bool | None
    label_source: str | None
    status: str
    probabilities: dict[str, float] | None
    features: dict[str, Any] | None
    event_time: datetime
    created_at: datetime
    resolved_at: datetime | None


class ResolutionIn(StrictIn):
    ground_truth: str = Field(min_length=1, max_length=DEFAULT_LIMITS.max_string)


class ResolutionOut(BaseModel):
    id: str
    event_id: str
    model_version_id: int | None
    model_name: str
    model_version: str
    predicted_label: str
    confidence: float
    ground_truth: str
    correct: bool
    status: Literal["resolved"]
    resolved_at: datetime


class ModelVersionIn(StrictIn):
    name: str = Field(min_length=1, max_length=DEFAULT_LIMITS.max_string, pattern=NAME_PATTERN)
    version: str = Field(min_length=1, max_length=DEFAULT_LIMITS.max_string, pattern=NAME_PATTERN)
    stage: Stage = "staging"
    parent_id: Int64 | None = None
    abstain_threshold: float = Field(default=0.7, ge=0, le=1)


class ModelVersionOut(BaseModel):
    id: int
    name: str
    version: str
    stage: Stage
    parent_id: int | None
    abstain_threshold: float
    calibrator_version: str
    created_at: datetime
    updated_at: datetime


class StageChange(StrictIn):
    stage: Stage


class ModelPatch(StrictIn):
    abstain_threshold: float = Field(ge=0, le=1)


class Lineage(BaseModel):
    model: ModelVersionOut
    ancestors: list[ModelVersionOut] = Field(description="parent first, then its parent, ...")
    descendants: list[ModelVersionOut] = Field(description="children first, then theirs, ...")


class Me(BaseModel):
    tenant: str
    roles: list[Role]
    key_id: int


class KeyIn(StrictIn):
    roles: list[Role] = Field(min_length=1)


class KeyOut(BaseModel):
    id: int
    prefix: str
    roles: list[Role]
    created_at: datetime
    revoked_at: datetime | None


class KeyCreated(KeyOut):
    key: str = Field(description="the key itself; shown once, only its hash is stored")
    tenant: str


class DependencyOut(BaseModel):
    name: str
    status: Literal["ok", "down"]
    latency_ms: float
    error: str | None = None


class HealthOut(BaseModel):
    status: Literal["ok", "degraded"]
    dependencies: list[DependencyOut]
