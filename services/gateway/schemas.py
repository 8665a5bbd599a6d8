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

from shared.contracts.validation import DEFAULT_LIMITS
from shared.windows.drift import MAX_FEATURES

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
    """One inference event. Name the model by ``model_version_id`` (or name + version).

    Types are strict here; ranges, lengths and finiteness are the shared limits' to judge
    (``shared/contracts/validation.py``), so REST and Kafka refuse the same event with the
    same stable code (``confidence_not_finite``, ``number_out_of_range``, ...).
    """

    model_config = ConfigDict(strict=True, allow_inf_nan=True)

    event_id: uuid.UUID | None = Field(
        default=None, strict=False, description="idempotency key; generated when absent"
    )
    model_version_id: int | None = Field(
        default=None, description="registry id of the model (a 64-bit integer)"
    )
    model_name: str | None = Field(default=None, description="instead of model_version_id")
    model_version: str | None = Field(default=None, description="instead of model_version_id")
    event_time: datetime | None = Field(
        default=None,
        strict=False,
        description="default: when received; within [now - CALIBER_LIMIT_EVENT_AGE_SECONDS, "
        "now + CALIBER_LIMIT_CLOCK_SKEW_SECONDS]",
    )
    predicted_label: str
    confidence: float = Field(description="top-label probability, in [0, 1]")
    probabilities: dict[str, float] | None = None
    logits: dict[str, float] | None = None
    features: dict[str, float | str] | None = Field(
        default=None, description="name → number or category (a boolean is neither)"
    )
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
    status: str = Field(
        description="auto, review (withheld, waiting for a human) or resolved (a withheld "
        "prediction whose ground truth arrived); an auto prediction stays auto when labelled"
    )
    probabilities: dict[str, float] | None
    features: dict[str, Any] | None
    event_time: datetime
    created_at: datetime
    resolved_at: datetime | None = Field(description="when the review of a withheld one closed")
    decision: Decision | None = Field(
        default=None, description="what the policy decided; never changed by a label"
    )
    review_state: Literal["none", "open", "resolved"] = Field(
        default="none", description="none (auto-accepted), open (withheld) or resolved"
    )
    resolved_by: Literal["feed", "review", "event"] | None = Field(
        default=None, description="the source of the label that closed the review"
    )
    reviewer_key_id: int | None = Field(
        default=None, description="the API key that resolved it through POST /api/review"
    )


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
    segment_key: str | None = None


class SegmentMapOut(BaseModel):
    segment: str = Field(description="the segment's value of the version's segment key")
    calibrator_version: str
    artifact: dict[str, Any] = Field(description="the calibrator artifact (JSON object)")
    clip_low: float = Field(description="the map's outputs are clipped to [clip_low, clip_high]")
    clip_high: float


class SegmentMapsOut(BaseModel):
    model_version_id: int
    segment_key: str | None = Field(description="null: the version has no segments")
    segment_maps: list[SegmentMapOut] = Field(
        description="every segment with a map, as the policy applies them; other segments "
        "(and events without a segment value) are decided by the version's calibrator"
    )


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
    key_id: int | None = Field(description="null for anonymous access (no key)")


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


# Calibration and risk–coverage (routes/calibration.py)


class Bin(BaseModel):
    bin_lo: float
    bin_hi: float
    confidence: float | None
    accuracy: float | None
    count: int


class CalibrationOut(BaseModel):
    model_version_id: int
    window: str
    n_predictions: int
    n_labeled: int
    ece: float | None
    mce: float | None
    brier: float | None
    nll: float | None
    classwise_ece: float | None
    accuracy: float | None
    coverage: float | None
    review_rate: float | None
    bins: list[Bin]


class PointOut(BaseModel):
    coverage: float
    risk: float
    threshold: float


class RiskCoverageOut(BaseModel):
    model_version_id: int
    window: str
    n_labeled: int
    aurc: float | None
    e_aurc: float | None
    points: list[PointOut]


# Drift (routes/drift.py)


MAX_REFERENCE_EVENTS = 100_000
MIN_REFERENCE_EVENTS = 100
Text = Annotated[str, Field(min_length=1, max_length=DEFAULT_LIMITS.max_string)]
"""A label, feature name or category: as long as an event's strings may be."""
Category = Annotated[str, Field(max_length=DEFAULT_LIMITS.max_string)]
Features = Annotated[dict[Text, float | Category], Field(max_length=MAX_FEATURES)]


class ReferenceEvent(StrictIn):
    confidence: float = Field(ge=0.0, le=1.0, description="top-label probability")
    predicted_label: Text
    features: Features | None = None


class ReferenceIn(StrictIn):
    model_version_id: Int64
    events: list[ReferenceEvent] = Field(
        min_length=MIN_REFERENCE_EVENTS, max_length=MAX_REFERENCE_EVENTS
    )


class ReferenceColumnsIn(StrictIn):
    """A reference as columns: entry i of every list belongs to event i.

    A numeric feature is a list of numbers (``null``: missing), a categorical one a list
    of strings (``null``: missing). 100,000 events of 20 numeric features take about 40 MB.
    """

    model_version_id: Int64
    confidence: list[Annotated[float, Field(ge=0.0, le=1.0)]] = Field(
        min_length=MIN_REFERENCE_EVENTS, max_length=MAX_REFERENCE_EVENTS
    )
    predicted_label: list[Text] = Field(
        min_length=MIN_REFERENCE_EVENTS, max_length=MAX_REFERENCE_EVENTS
    )
    features: Annotated[
        dict[Text, list[float | None] | list[Category | None]], Field(max_length=MAX_FEATURES)
    ] = Field(default_factory=dict)


class ReferenceOut(BaseModel):
    model_version_id: int
    reference_version: str
    n_samples: int
    features: list[str]
    created_at: datetime | None = None
    source: str = "upload"


class ThresholdsIn(StrictIn):
    model_version_id: Int64
    thresholds: dict[Text, Annotated[float, Field(gt=0, allow_inf_nan=False)]] = Field(
        description="feature (or __confidence__, __predicted_label__) → threshold of its "
        "alerting method (PSI for numbers, Cohen's w for categories)"
    )


class DriftAlertOut(BaseModel):
    model_version_id: int | None
    feature: str | None
    drift_score: float
    threshold: float
    severity: Literal["warning", "critical", "resolved"]
    created_at: datetime
    method: str | None
    window: str
    reference_version: str | None
    n_samples: int
