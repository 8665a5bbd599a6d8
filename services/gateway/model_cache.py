"""Which registered model version an event names, without PostgreSQL on the hot path.

The gateway follows the compacted model-updates topic like the policy does
(:class:`~shared.registry.view.RegistryView`), so its answer to ``POST /api/predictions``
uses the same threshold and calibration map the policy will use. A model version the view
has not seen yet (registered a moment ago, or the view still catching up) is read from
PostgreSQL and remembered for a short time, misses included, so unknown ids cannot flood
the database.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from shared.contracts.batches import model_key
from shared.recalibration.maps import IDENTITY, CalibrationMap, CalibratorError, from_registry
from shared.recalibration.serving import Candidate, ServePlan, candidate_of
from shared.registry.segment_maps import SegmentMapView
from shared.registry.view import RegisteredVersion, RegistryView

logger = logging.getLogger(__name__)

FALLBACK_TTL_SECONDS = 1.0
_CACHE_LIMIT = 10_000
_SELECT = (
    "SELECT id, tenant_id AS tenant, name, version, stage, parent_id, abstain_threshold, "
    "calibrator_version, calibrator::text AS calibrator, candidate_version, "
    "candidate_calibrator::text AS candidate_calibrator, rollout_stage, canary_share, "
    "segment_key "
    "FROM model_versions "
)


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A registered model version as the prediction path needs it."""

    id: int
    tenant: str
    name: str
    version: str
    abstain_threshold: float
    calibration: CalibrationMap
    candidate: Candidate | None = None
    """The calibrator under rollout beside the active map, as the policy sees it."""
    segment_key: str | None = None
    """The feature or metadata key whose values have maps of their own, if any."""
    segment_maps: Mapping[str, CalibrationMap] = field(default_factory=dict)
    """Segment value → map, as the policy follows them from ``<ns>.segment-maps``."""

    @property
    def key(self) -> str:
        return model_key(self.tenant, self.name, self.version)

    def plan(self) -> ServePlan:
        """What :func:`shared.recalibration.serving.serve` needs for this version."""
        return ServePlan(
            self.abstain_threshold, self.calibration, self.candidate, self.segment_maps
        )

    def __getitem__(self, field: str) -> Any:
        """Record-style access (``ref["name"]``) for callers written against table rows."""
        return getattr(self, field)


class RegistryIndex(RegistryView):
    """The registry view, also indexed by registry id."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.by_id: dict[int, RegisteredVersion] = {}

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        before = self.versions.get(key.decode()) if key is not None else None
        super().apply(key, value)
        after = self.versions.get(key.decode()) if key is not None else None
        if before is not None and (after is None or after.id != before.id):
            self.by_id.pop(before.id, None)
        if after is not None:
            self.by_id[after.id] = after


class ModelCache:
    def __init__(
        self,
        pool: asyncpg.Pool,
        view: RegistryIndex | None = None,
        segments: SegmentMapView | None = None,
    ) -> None:
        self._pool = pool
        self._view = view
        self._segments = segments
        self._fallback: dict[tuple[Any, ...], tuple[float, ModelRef | None]] = {}
        self._maps: dict[tuple[str, str | None], CalibrationMap] = {}

    def _ref(self, v: RegisteredVersion) -> ModelRef:
        segment_maps = (
            self._segments.maps_for(v.key, v.segment_key)
            if self._segments is not None and v.segment_key is not None
            else {}
        )
        return ModelRef(
            v.id,
            v.tenant,
            v.name,
            v.version,
            v.abstain_threshold,
            self._calibration(v.calibrator_version, v.calibrator),
            candidate_of(v),
            v.segment_key,
            segment_maps,
        )

    def _calibration(self, version: str, calibrator: str | None) -> CalibrationMap:
        key = (version, calibrator)
        found = self._maps.get(key)
        if found is None:
            try:
                found = from_registry(version, calibrator)
            except CalibratorError as exc:
                logger.warning("%s; predicting the decision with the identity map", exc)
                found = IDENTITY
            self._maps[key] = found
        return found

    async def _read(self, cache_key: tuple[Any, ...], where: str, *args: Any) -> ModelRef | None:
        now = time.monotonic()
        hit = self._fallback.get(cache_key)
        if hit is not None and hit[0] > now:
            return hit[1]
        row = await self._pool.fetchrow(_SELECT + where, *args)
        ref = self._ref(RegisteredVersion(**dict(row))) if row is not None else None
        if len(self._fallback) >= _CACHE_LIMIT:
            self._fallback.clear()
        self._fallback[cache_key] = (now + FALLBACK_TTL_SECONDS, ref)
        return ref

    async def by_id(self, tenant: str, model_id: int) -> ModelRef | None:
        """The version ``model_id`` when it belongs to ``tenant`` (others' ids look unknown)."""
        v = self._view.by_id.get(model_id) if self._view is not None else None
        ref = (
            self._ref(v)
            if v is not None
            else await self._read(("id", model_id), "WHERE id = $1", model_id)
        )
        return ref if ref is not None and ref.tenant == tenant else None

    async def by_name(self, tenant: str, name: str, version: str) -> ModelRef | None:
        key = model_key(tenant, name, version)
        v = self._view.get(key) if self._view is not None else None
        if v is not None:
            return self._ref(v)
        return await self._read(
            ("key", key),
            "WHERE tenant_id = $1 AND name = $2 AND version = $3",
            tenant,
            name,
            version,
        )

    def id_of(self, key: str) -> int | None:
        """Registry id of a model version key, when the view knows it (never waits)."""
        v = self._view.get(key) if self._view is not None else None
        return v.id if v is not None else None

    def forget(self) -> None:
        """Drop remembered database answers (this process just changed the registry)."""
        self._fallback.clear()
