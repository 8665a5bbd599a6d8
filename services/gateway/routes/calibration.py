"""Calibration, risk–coverage and time series per model version, answered from Redis."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status

from services.gateway.auth import READ, Principal, require
from services.gateway.schemas import Bin, CalibrationOut, PointOut, QueryId, RiskCoverageOut
from services.gateway.state import state_of
from shared.contracts.batches import model_key
from shared.windows.calibration import WindowReader
from shared.windows.names import WindowName

router = APIRouter(prefix="/api", tags=["metrics"])
Window = WindowName


async def _model(request: Request, who: Principal, model_version_id: int) -> str:
    row = await state_of(request).models.by_id(who.tenant, model_version_id)
    if row is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail=f"model version {model_version_id} not found"
        )
    return model_key(who.tenant, row["name"], row["version"])


def _reader(request: Request) -> WindowReader:
    return WindowReader(state_of(request).redis, state_of(request).settings.redis_prefix)


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
