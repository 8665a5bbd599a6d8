"""Serve-time calibration in the model server's own process.

:class:`LocalCalibrator` fetches a model version's active calibrator from the registry
(``GET /api/models/{id}``: its ``calibrator_version``, ``abstain_threshold`` and
``segment_key``, then ``GET /api/calibration-artifacts/{version}``) and, when the version
names a segment key, its segment maps (``GET /api/models/{id}/segment-maps``); applies them
in-process (:mod:`caliber_client.appliers`, :mod:`caliber_client.segments`: each event by
its segment's map, else the version's map, else the raw confidence, as the policy does) and
checks the registry again every ``refresh_seconds`` on a background thread, so an
activation (a promotion, a rollback to ``identity``) or a segment's refit reaches the model
server within that time. Whatever fails (the gateway unreachable, an artifact it cannot
read, a map that raises) never fails the caller: it keeps the last good maps, or answers
the raw confidence, and logs a line saying why.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from caliber_client.appliers import ArtifactError, CalibrationMap, FloatArray
from caliber_client.errors import CaliberError
from caliber_client.http import Api
from caliber_client.segments import ClippedMap, calibrate_segments, segment_of

logger = logging.getLogger(__name__)

IDENTITY = "identity"


@dataclass(frozen=True, slots=True)
class _Serving:
    """The maps applied now, swapped as one so a call never mixes two refreshes."""

    base: CalibrationMap | None = None
    """The version's map; None: identity (the raw confidence)."""
    segment_key: str | None = None
    segment_maps: Mapping[str, ClippedMap] = field(default_factory=dict)


def _same(m: ClippedMap, item: Mapping[str, Any]) -> bool:
    return (m.version, m.low, m.high) == (
        item["calibrator_version"], float(item["clip_low"]), float(item["clip_high"])
    )  # fmt: skip


class LocalCalibrator:
    def __init__(
        self,
        api: Api,
        model_version_id: int,
        refresh_seconds: float = 30.0,
        background: bool = True,
    ) -> None:
        self._api = api
        self.model_version_id = model_version_id
        self.refresh_seconds = refresh_seconds
        self._serving = _Serving()
        self.version: str | None = None
        """The active calibrator's version applied now (None until the first fetch)."""
        self.threshold: float | None = None
        """The model version's abstain threshold (None until the first fetch)."""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.refresh()
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._run, name="caliber-calibrator",
                                            daemon=True)  # fmt: skip
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.refresh_seconds):
            self.refresh()

    @property
    def segment_key(self) -> str | None:
        """The feature or metadata key whose values have maps of their own (None: none)."""
        return self._serving.segment_key

    @property
    def segment_versions(self) -> dict[str, str]:
        """Segment value → the calibrator version of its map, for the segments with one."""
        return {s: m.version for s, m in self._serving.segment_maps.items()}

    def refresh(self) -> bool:
        """Ask the registry for the active calibrator and segment maps now; True when a map
        changed."""
        try:
            model = self._api.request("GET", f"/api/models/{self.model_version_id}", retries=0)
            self.threshold = float(model["abstain_threshold"])
            active = model["calibrator_version"]
            new = self._serving.base
            if active != self.version:
                new = None
                if active != IDENTITY:
                    path = f"/api/calibration-artifacts/{active}"
                    new = CalibrationMap(
                        active, self._api.request("GET", path, retries=0)["artifact"]
                    )
        except (CaliberError, ValueError, KeyError, TypeError, AttributeError) as exc:
            # ValueError: a body that is not JSON (a proxy's page), or an unusable artifact
            logger.warning(
                "caliber: calibrator of model version %s not refreshed (%s); keeping %s",
                self.model_version_id, exc, self.version or "the raw confidence",
            )  # fmt: skip
            return False
        changed = active != self.version
        with self._lock:
            self._serving = _Serving(new, self._serving.segment_key, self._serving.segment_maps)
            self.version = active
        if changed:
            logger.info("caliber: model version %s now calibrates with %s",
                        self.model_version_id, active)  # fmt: skip
        return self._refresh_segments(model.get("segment_key")) or changed

    def _refresh_segments(self, key: str | None) -> bool:
        """Fetch the segment maps when the version names a segment key; True when they
        changed."""
        old = self._serving
        maps: dict[str, ClippedMap] = {}
        if key is not None:
            try:
                body = self._api.request(
                    "GET", f"/api/models/{self.model_version_id}/segment-maps", retries=0
                )
                key = body["segment_key"]
                maps = self._segment_maps(body["segment_maps"], old.segment_maps)
            except (CaliberError, KeyError, TypeError, ValueError) as exc:
                logger.warning(
                    "caliber: segment maps of model version %s not refreshed (%s); keeping %d",
                    self.model_version_id, exc, len(old.segment_maps),
                )  # fmt: skip
                return False
        if key == old.segment_key and maps == old.segment_maps:
            return False
        with self._lock:
            self._serving = _Serving(self._serving.base, key, maps)
        logger.info("caliber: model version %s has %d segment maps under %r",
                    self.model_version_id, len(maps), key)  # fmt: skip
        return True

    def _segment_maps(
        self, items: Sequence[Mapping[str, Any]], old: Mapping[str, ClippedMap]
    ) -> dict[str, ClippedMap]:
        """The segment maps of an answer, reusing those already built; a segment whose
        artifact cannot be applied gets none (it falls back to the version's map)."""
        maps: dict[str, ClippedMap] = {}
        for item in items:
            segment = str(item["segment"])
            kept = old.get(segment)
            if kept is not None and _same(kept, item):
                maps[segment] = kept
                continue
            try:
                inner = CalibrationMap(str(item["calibrator_version"]), item["artifact"])
            except ArtifactError as exc:
                logger.warning("caliber: segment map of %r not usable (%s); it falls back",
                               segment, exc)  # fmt: skip
                continue
            maps[segment] = ClippedMap(inner, float(item["clip_low"]), float(item["clip_high"]))
        return maps

    def segments(
        self,
        features: Sequence[Mapping[str, Any] | None] | None = None,
        metadata: Sequence[Mapping[str, str] | None] | None = None,
    ) -> list[str | None] | None:
        """Each event's segment value (for :meth:`calibrate_batch`'s ``segments``) from its
        features and metadata; None when the version has no segment key."""
        key = self.segment_key
        if key is None:
            return None
        n = len(features) if features is not None else len(metadata or [])
        feats = features if features is not None else [None] * n
        meta = metadata if metadata is not None else [None] * n
        return [segment_of(key, f, m) for f, m in zip(feats, meta, strict=True)]

    def calibrate_batch(
        self,
        confidences: Sequence[float] | FloatArray,
        probabilities: FloatArray | None = None,
        class_labels: Sequence[str] = (),
        logits: FloatArray | None = None,
        segments: Sequence[str | None] | None = None,
    ) -> FloatArray:
        """Calibrated confidences of a batch: each event by its segment's map (``segments``:
        each event's value of the version's segment key, see :meth:`segments`), else by
        the version's map; where a map fails, the next in that chain down to the raw
        confidence (and a log line)."""
        with self._lock:
            current = self._serving
        return calibrate_segments(
            current.base,
            current.segment_maps,
            segments,
            np.asarray(confidences, dtype=np.float64),
            probabilities,
            logits,
            class_labels,
        )

    def calibrate(
        self,
        confidence: float,
        probabilities: Mapping[str, float] | None = None,
        features: Mapping[str, Any] | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> float:
        """The calibrated confidence of one prediction (its segment read from ``features``
        or ``metadata`` when the version names a segment key)."""
        labels: list[str] = sorted(probabilities) if probabilities else []
        vec = None if not labels else np.asarray([[probabilities[c] for c in labels]])  # type: ignore[index]
        with self._lock:
            current = self._serving
        key = current.segment_key
        segments = None if key is None else [segment_of(key, features, metadata)]
        raw = np.asarray([confidence], dtype=np.float64)
        out = calibrate_segments(
            current.base, current.segment_maps, segments, raw, vec, None, labels
        )
        return float(out[0])

    def status(self, calibrated: float) -> str:
        """The policy's decision for a calibrated confidence: ``auto`` at or above the
        model version's abstain threshold, else ``review`` (``auto`` before any threshold
        is known)."""
        if self.threshold is None or calibrated >= self.threshold:
            return "auto"
        return "review"

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> LocalCalibrator:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
