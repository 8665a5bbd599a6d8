"""Before labels: the estimated performance of a window and a threshold with a risk guarantee.

- ``GET /api/models/{id}/performance-estimate?window=`` — the CBPE estimate (expected
  accuracy from calibrated confidence, with its ±z·sd band) of every prediction and of the
  auto-accepted ones, and, for the labeled ones, the estimate beside the realised accuracy
  with the gap between them.
- ``GET /api/models/{id}/threshold-advice?target_risk=&delta=&window=`` — the lowest abstain
  threshold (on calibrated confidence, what the policy compares) whose auto-accepted
  predictions have selective risk ≤ ``target_risk`` with probability ≥ 1 − ``delta``
  (Learn then Test, see ``shared.estimation.risk_threshold``); ``threshold`` null with a
  ``reason`` when the window's labeled events cannot support the target.

Both read the aggregator's Redis window state; another tenant's model ids look unknown (404).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from pydantic import BaseModel, Field

from services.gateway.auth import READ, Principal, require
from services.gateway.routes.calibration import Window
from services.gateway.state import state_of
from shared.contracts.batches import model_key
from shared.estimation.cbpe import Estimate, Realised
from shared.estimation.report import report
from shared.estimation.risk_threshold import ASSUMPTION, METHOD, advise
from shared.windows.calibration import WindowReader

router = APIRouter(prefix="/api/models", tags=["estimation"])
_404: dict[int | str, dict[str, Any]] = {404: {"description": "unknown model version"}}


class EstimateOut(BaseModel):
    n: int = Field(description="predictions the estimate covers")
    accuracy: float = Field(description="expected accuracy: mean calibrated confidence")
    risk: float = Field(description="expected error rate, 1 − accuracy")
    sd: float = Field(description="sqrt(Σ c(1 − c)) / n")
    band: float = Field(description="half-width of the band, z·sd")
    lower: float
    upper: float


class RealisedOut(BaseModel):
    estimate: EstimateOut
    realised_accuracy: float
    gap: float = Field(description="realised − estimated accuracy")
    gap_in_bands: float = Field(description="|gap| / band; above 1 the estimate was off")
    outside_band: bool


class PerformanceEstimateOut(BaseModel):
    model_version_id: int
    window: str
    z: float = Field(description="band half-width in standard deviations")
    n_predictions: int
    estimated: EstimateOut | None = Field(description="every prediction, labeled or not")
    estimated_auto: EstimateOut | None = Field(description="auto-accepted predictions only")
    labeled: RealisedOut | None = Field(description="labeled predictions: estimate vs realised")
    labeled_auto: RealisedOut | None
    assumption: str = "calibrated scores and no concept drift (P(y | x) unchanged)"


class ThresholdAdviceOut(BaseModel):
    model_version_id: int
    window: str
    target_risk: float
    delta: float
    threshold: float | None = Field(
        description="lowest abstain threshold on calibrated confidence; null when unsupported"
    )
    current_threshold: float
    coverage: float | None = Field(description="share of the window's labeled events accepted")
    review_rate: float | None
    n_labeled: int
    n_accepted: int
    errors_accepted: int
    empirical_risk: float | None
    risk_bound: float | None
    best_achievable_risk: float | None
    reason: str | None
    method: str = METHOD
    assumption: str = ASSUMPTION


def _estimate(e: Estimate | None) -> EstimateOut | None:
    if e is None:
        return None
    return EstimateOut(
        n=e.n, accuracy=e.accuracy, risk=e.risk, sd=e.sd, band=e.band, lower=e.lower, upper=e.upper
    )


def _realised(r: Realised | None) -> RealisedOut | None:
    if r is None:
        return None
    est = _estimate(r.estimate)
    assert est is not None
    return RealisedOut(
        estimate=est,
        realised_accuracy=r.realised,
        gap=r.gap,
        gap_in_bands=r.gap_in_bands,
        outside_band=r.outside_band,
    )


async def _owned(request: Request, who: Principal, model_id: int) -> tuple[str, float]:
    ref = await state_of(request).models.by_id(who.tenant, model_id)
    if ref is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail=f"model_id: model version {model_id} not found"
        )
    return model_key(who.tenant, ref.name, ref.version), float(ref.abstain_threshold)


def _reader(request: Request) -> WindowReader:
    return WindowReader(state_of(request).redis, state_of(request).settings.redis_prefix)


ModelId = Annotated[int, Path(description="model version id")]


@router.get(
    "/{model_id}/performance-estimate", response_model=PerformanceEstimateOut, responses=_404
)
async def performance_estimate(
    model_id: ModelId,
    request: Request,
    who: Annotated[Principal, Depends(require(READ))],
    window: Annotated[Window, Query()] = "24h",
) -> PerformanceEstimateOut:
    """Estimated accuracy from calibrated confidence, before labels, beside the realised."""
    key, _ = await _owned(request, who, model_id)
    z = state_of(request).settings.estimate_band_z
    rep = report(await _reader(request).totals(key, window), window, z)
    return PerformanceEstimateOut(
        model_version_id=model_id,
        window=window,
        z=z,
        n_predictions=rep.n_predictions,
        estimated=_estimate(rep.estimated),
        estimated_auto=_estimate(rep.estimated_auto),
        labeled=_realised(rep.labeled),
        labeled_auto=_realised(rep.labeled_auto),
    )


@router.get("/{model_id}/threshold-advice", response_model=ThresholdAdviceOut, responses=_404)
async def threshold_advice(
    model_id: ModelId,
    request: Request,
    who: Annotated[Principal, Depends(require(READ))],
    target_risk: Annotated[
        float, Query(gt=0, lt=1, description="selective risk the accepted set may have")
    ] = 0.02,
    delta: Annotated[
        float, Query(gt=0, lt=1, description="allowed probability that the guarantee fails")
    ] = 0.05,
    window: Annotated[Window, Query()] = "7d",
) -> ThresholdAdviceOut:
    """The lowest threshold with selective risk ≤ target_risk with probability ≥ 1 − delta."""
    key, current = await _owned(request, who, model_id)
    histogram = await _reader(request).calibrated_histogram(key, window)
    a = advise(histogram, target_risk, delta)
    return ThresholdAdviceOut(
        model_version_id=model_id,
        window=window,
        target_risk=a.target_risk,
        delta=a.delta,
        threshold=a.threshold,
        current_threshold=current,
        coverage=a.coverage,
        review_rate=a.review_rate,
        n_labeled=a.n_labeled,
        n_accepted=a.n_accepted,
        errors_accepted=a.errors_accepted,
        empirical_risk=a.empirical_risk,
        risk_bound=a.risk_bound,
        best_achievable_risk=a.best_achievable_risk,
        reason=a.reason,
    )
