"""The serve-time choice: which calibration map decides each event, and which runs beside it.

One function, used by the policy (every decision) and the gateway (``POST /api/calibrate``,
the decision it predicts for ``POST /api/predictions``), so both apply the same map to the
same event. A model version has an active map and at most one candidate under rollout
(docs/architecture.md, "Calibrator rollout"):

- ``shadow``: both maps run on every event; the active one decides.
- ``canary``: both maps run on every event; the events whose stable hash falls under the
  canary share are decided by the candidate, the rest by the active map.

The active arm is calibrated by segment where the model version names a segment key and a
segment has a fitted map (``shared.recalibration.segments``: the segment's map, else the
version's map, else identity); a candidate is a map of the whole version.

The canary arm of an event is ``crc32(event id, seed = crc32(candidate version)) mod 10,000
< round(share · 10,000)``: the same event gets the same arm in every process and every
replay, and another candidate draws another set of events.

What a decision records (``DecisionBatch``): ``calibrated_confidences`` and ``statuses``
of the map that decided each event, named by ``calibrator_versions[i]`` (or by the batch's
``calibrator_version`` when that list is null), and in ``shadow_confidences`` and
``shadow_statuses`` the output of the other map, so both maps' outputs are known on every
event: the candidate's (``shadow_calibrator_version``) on events the active map decided,
the active map's on canary events.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from shared.contracts.batches import BoolArray, FloatArray
from shared.recalibration.maps import IDENTITY, CalibrationMap, CalibratorError, from_registry
from shared.recalibration.segments import calibrate_segments

logger = logging.getLogger(__name__)

SHADOW = "shadow"
CANARY = "canary"
STAGES = (SHADOW, CANARY)
SHARE_RESOLUTION = 10_000


@dataclass(frozen=True, slots=True)
class Candidate:
    """A calibrator under rollout beside the active one."""

    map: CalibrationMap
    stage: str
    share: float = 0.0
    """Share of events the candidate decides (canary only)."""

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"rollout stage must be one of {STAGES}, got {self.stage!r}")
        if not 0.0 <= self.share <= 1.0:
            raise ValueError(f"canary share must be in [0, 1], got {self.share}")


@dataclass(frozen=True, slots=True)
class ServePlan:
    """What the registry says about one model version's serving."""

    threshold: float
    active: CalibrationMap
    candidate: Candidate | None = None
    segment_maps: Mapping[str, CalibrationMap] = field(default_factory=dict)
    """The active arm's per-segment maps by segment value (``shared.recalibration.segments``):
    a segment with a map is decided by it, every other event by ``active``."""


@dataclass(slots=True)
class Served:
    """Calibrated confidences and decisions of one batch, and what ran beside them."""

    confidences: FloatArray
    review: BoolArray
    calibrator_version: str
    calibrator_versions: list[str] | None = None
    shadow_calibrator_version: str | None = None
    shadow_confidences: FloatArray | None = None
    shadow_review: BoolArray | None = None
    canary: BoolArray | None = None
    """True where the candidate decided (canary arm); None when no event did."""

    def arms(self) -> list[str]:
        """``canary``, ``control`` (active map, a candidate beside it) or ``active``."""
        n = self.confidences.shape[0]
        if self.shadow_calibrator_version is None:
            return ["active"] * n
        if self.canary is None:
            return ["control"] * n
        return ["canary" if c else "control" for c in self.canary.tolist()]


class RolloutFields(Protocol):
    """The registry fields of a model version that name its candidate
    (``shared.registry.view.RegisteredVersion`` has them)."""

    @property
    def key(self) -> str: ...
    @property
    def candidate_version(self) -> str | None: ...
    @property
    def candidate_calibrator(self) -> str | None: ...
    @property
    def rollout_stage(self) -> str | None: ...
    @property
    def canary_share(self) -> float: ...


MapBuilder = Callable[[str, str | None], CalibrationMap]


def candidate_of(entry: RolloutFields, build: MapBuilder = from_registry) -> Candidate | None:
    """The candidate a registry entry names, or None (none, or one that cannot be built:
    a bad candidate never reaches the serve path, the active map goes on alone)."""
    version, stage = entry.candidate_version, entry.rollout_stage
    if not version or stage not in STAGES:
        return None
    try:
        return Candidate(build(version, entry.candidate_calibrator), stage, entry.canary_share)
    except (CalibratorError, ValueError) as exc:
        logger.error(
            "candidate of %s not usable (%s); serving the active map alone", entry.key, exc
        )
        return None


def canary_mask(event_ids: list[str], share: float, salt: str) -> BoolArray:
    """The events a candidate decides at ``share``: a stable hash of each event id."""
    cut = round(share * SHARE_RESOLUTION)
    if cut <= 0:
        return np.zeros(len(event_ids), dtype=np.bool_)
    if cut >= SHARE_RESOLUTION:
        return np.ones(len(event_ids), dtype=np.bool_)
    seed = zlib.crc32(salt.encode())
    crc = zlib.crc32
    hashes = np.array([crc(e.encode(), seed) for e in event_ids], dtype=np.int64)
    mask: BoolArray = (hashes % SHARE_RESOLUTION) < cut
    return mask


def _apply(
    m: CalibrationMap,
    confidences: FloatArray,
    probabilities: FloatArray | None,
    logits: FloatArray | None,
    class_labels: list[str],
) -> FloatArray:
    out = np.asarray(m.apply(confidences, probabilities, logits, class_labels), dtype=np.float64)
    if out.shape != confidences.shape:
        raise CalibratorError(
            f"calibration map {m.version!r} returned shape {out.shape} "
            f"for {confidences.shape} confidences"
        )
    return out


def withheld(calibrated: FloatArray, threshold: float) -> BoolArray:
    """Review unless the calibrated confidence is shown to reach the threshold (NaN too)."""
    review: BoolArray = ~(calibrated >= threshold)
    return review


def _active(
    plan: ServePlan,
    segments: Sequence[str | None] | None,
    confidences: FloatArray,
    probabilities: FloatArray | None,
    logits: FloatArray | None,
    labels: list[str],
) -> tuple[FloatArray, list[str] | None]:
    """The active arm's output and, where another map than the version's decided some events
    (a segment's, or identity where the version's map failed), each event's map."""
    if segments is None or not plan.segment_maps:
        try:
            return _apply(plan.active, confidences, probabilities, logits, labels), None
        except Exception:  # a map's fault must never reach the serve path
            logger.exception(
                "calibration map %s failed; deciding with identity", plan.active.version
            )
            n = confidences.shape[0]
            return np.array(confidences, dtype=np.float64, copy=True), [IDENTITY.version] * n
    got = calibrate_segments(
        plan.active, plan.segment_maps, segments, confidences, probabilities, logits, labels
    )
    return got.confidences, got.versions


def serve(
    plan: ServePlan,
    event_ids: list[str],
    confidences: FloatArray,
    probabilities: FloatArray | None = None,
    logits: FloatArray | None = None,
    class_labels: list[str] | None = None,
    segments: Sequence[str | None] | None = None,
) -> Served:
    """Apply the active map (by segment, where ``segments`` names each event's segment and the
    plan has maps for them) and the candidate beside it, and decide every event."""
    labels = class_labels or []
    active, active_versions = _active(plan, segments, confidences, probabilities, logits, labels)
    active_review = withheld(active, plan.threshold)
    cand = plan.candidate
    if cand is None:
        return Served(active, active_review, plan.active.version, active_versions)
    try:
        other = _apply(cand.map, confidences, probabilities, logits, labels)
    except Exception:  # a candidate's fault must never reach the serve path
        logger.exception("candidate map %s failed; serving the active map alone", cand.map.version)
        return Served(active, active_review, plan.active.version, active_versions)
    other_review = withheld(other, plan.threshold)
    served = Served(
        active,
        active_review,
        plan.active.version,
        active_versions,
        shadow_calibrator_version=cand.map.version,
        shadow_confidences=other,
        shadow_review=other_review,
    )
    if cand.stage != CANARY:
        return served
    mask = canary_mask(event_ids, cand.share, cand.map.version)
    if not mask.any():
        return served
    served.canary = mask
    served.confidences = np.where(mask, other, active)
    served.review = np.where(mask, other_review, active_review)
    served.shadow_confidences = np.where(mask, active, other)
    served.shadow_review = np.where(mask, active_review, other_review)
    cv = cand.map.version
    decided_by = active_versions or [plan.active.version] * len(event_ids)
    served.calibrator_versions = [
        cv if m else v for m, v in zip(mask.tolist(), decided_by, strict=True)
    ]
    return served


@dataclass(frozen=True, slots=True)
class Paired:
    """Both maps' calibrated confidences on the same events, read back from a decision."""

    active: FloatArray
    candidate: FloatArray
    active_review: BoolArray
    candidate_review: BoolArray
    canary: BoolArray
    candidate_version: str


def paired(
    confidences: FloatArray,
    review: BoolArray,
    calibrator_versions: list[str] | None,
    shadow_version: str | None,
    shadow_confidences: FloatArray | None,
    shadow_review: BoolArray | None,
) -> Paired | None:
    """Undo :func:`serve`'s arm swap: the active and candidate outputs of every event, or
    None when no candidate ran beside the active map."""
    if shadow_version is None or shadow_confidences is None or shadow_review is None:
        return None
    if calibrator_versions is None:
        canary = np.zeros(confidences.shape[0], dtype=np.bool_)
    else:
        canary = np.asarray([v == shadow_version for v in calibrator_versions], dtype=np.bool_)
    return Paired(
        active=np.where(canary, shadow_confidences, confidences),
        candidate=np.where(canary, confidences, shadow_confidences),
        active_review=np.where(canary, shadow_review, review),
        candidate_review=np.where(canary, review, shadow_review),
        canary=canary,
        candidate_version=shadow_version,
    )
