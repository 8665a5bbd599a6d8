"""Calibration, risk–coverage and time series per model version, answered from Redis."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import BaseModel

from services.gateway.auth import READ, Principal, require
from services.gateway.schemas import QueryId
from shared.batches import model_key
from shared.window_store import WindowReader

router = APIRouter(prefix="/api", tags=["metrics"])
Window = Literal["5m", "1h", "24h", "7d", "all"]


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


async def _model(request: Request, who: Principal, model_version_id: int) -> str:
    row = await request.app.state.models.by_id(who.tenant, model_version_id)
    if row is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail=f"model version {model_version_id} not found"
        )
    return model_key(who.tenant, row["name"], row["version"])


def _reader(request: Request) -> WindowReader:
    return WindowReader(request.app.state.redis, request.app.state.settings.redis_prefix)


@router.get("/calibration", response_model=CalibrationOut)
async def calibration(
    request: Request,
    who: Annotated[Principal, Depends(require(READ))],
    model_version_id: QueryId,
    window: Annotated[Window, Query()] = "24h",
) -> CalibrationOut:
    """ECE, MCE, Brier, NLL, classwise ECE and the reliability bins of labeled predictions."""
    cal = await _reader(request).calibration(await _model(request, who, model_version_id), window)
    return CalibrationOut(
        model_version_id=model_version_id,
        window=window,
        n_predictions=cal.n_predictions,
        n_labeled=cal.n_labeled,
        ece=cal.ece,
        mce=cal.mce,
        brier=cal.brier,
        nll=cal.nll,
        classwise_ece=cal.classwise_ece,
        accuracy=cal.accuracy,
        coverage=cal.coverage,
        review_rate=cal.review_rate,
        bins=[
            Bin(
                bin_lo=b.lo,
                bin_hi=b.hi,
                confidence=b.confidence,
                accuracy=b.accuracy,
                count=b.count,
            )
            for b in cal.bins
        ],
    )


@router.get("/risk-coverage", response_model=RiskCoverageOut)
async def risk_coverage(
    request: Request,
    who: Annotated[Principal, Depends(require(READ))],
    model_version_id: QueryId,
    window: Annotated[Window, Query()] = "24h",
) -> RiskCoverageOut:
    """The risk–coverage curve (one point per distinct confidence), AURC and E-AURC."""
    rc = await _reader(request).risk_coverage(await _model(request, who, model_version_id), window)
    return RiskCoverageOut(
        model_version_id=model_version_id,
        window=window,
        n_labeled=rc.n_labeled,
        aurc=rc.aurc,
        e_aurc=rc.e_aurc,
        points=[
            PointOut(coverage=p.coverage, risk=p.risk, threshold=p.threshold) for p in rc.points
        ],
    )


@router.get("/timeseries")
async def timeseries(
    request: Request,
    who: Annotated[Principal, Depends(require(READ))],
    model_version_id: QueryId,
    window: Annotated[Window, Query()] = "1h",
) -> dict[str, object]:
    """ECE, Brier, accuracy, coverage and review rate per bucket of the window."""
    points = await _reader(request).timeseries(await _model(request, who, model_version_id), window)
    return {"model_version_id": model_version_id, "window": window, "points": points}
