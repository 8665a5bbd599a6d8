"""Serve-time calibration in the model server's own process.

:class:`LocalCalibrator` fetches a model version's active calibrator from the registry
(``GET /api/models/{id}``: its ``calibrator_version`` and ``abstain_threshold``, then
``GET /api/calibration-artifacts/{version}``),
applies it in-process (:mod:`caliber_client.appliers`) and checks the registry again every
``refresh_seconds`` on a background thread, so an activation (a promotion, a rollback to
``identity``) reaches the model server within that time. Whatever fails (the gateway
unreachable, an artifact it cannot read, a map that raises) never fails the caller: it
keeps the last good map, or answers the raw confidence, and logs a line saying why.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from caliber_client.appliers import CalibrationMap, FloatArray
from caliber_client.errors import CaliberError
from caliber_client.http import Api

logger = logging.getLogger(__name__)

IDENTITY = "identity"


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
        self._map: CalibrationMap | None = None
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

    def refresh(self) -> bool:
        """Ask the registry for the active calibrator now; True when the map changed."""
        try:
            model = self._api.request("GET", f"/api/models/{self.model_version_id}", retries=0)
            self.threshold = float(model["abstain_threshold"])
            active = model["calibrator_version"]
            if active == self.version:
                return False
            new = None
            if active != IDENTITY:
                body = self._api.request("GET", f"/api/calibration-artifacts/{active}", retries=0)
                new = CalibrationMap(active, body["artifact"])
        except (CaliberError, ValueError, KeyError, TypeError, AttributeError) as exc:
            # ValueError: a body that is not JSON (a proxy's page), or an unusable artifact
            logger.warning(
                "caliber: calibrator of model version %s not refreshed (%s); keeping %s",
                self.model_version_id, exc, self.version or "the raw confidence",
            )  # fmt: skip
            return False
        with self._lock:
            self._map, self.version = new, active
        logger.info("caliber: model version %s now calibrates with %s", self.model_version_id,
                    active)  # fmt: skip
        return True

    def calibrate_batch(
        self,
        confidences: Sequence[float] | FloatArray,
        probabilities: FloatArray | None = None,
        class_labels: Sequence[str] = (),
        logits: FloatArray | None = None,
    ) -> FloatArray:
        """Calibrated confidences of a batch; the raw ones (and a log line) on any failure."""
        raw = np.asarray(confidences, dtype=np.float64)
        with self._lock:
            current = self._map
        if current is None:
            return raw
        try:
            out = current.apply(raw, probabilities, logits, class_labels)
        except Exception as exc:  # a serve path never fails on its calibrator
            logger.warning("caliber: calibrator %s failed (%s); raw confidence used",
                           current.version, exc)  # fmt: skip
            return raw
        if not np.isfinite(out[np.isfinite(raw)]).all():
            logger.warning("caliber: calibrator %s gave a non-finite value; raw confidence used",
                           current.version)  # fmt: skip
            return raw
        return out

    def calibrate(
        self, confidence: float, probabilities: Mapping[str, float] | None = None
    ) -> float:
        """The calibrated confidence of one prediction."""
        labels: list[str] = sorted(probabilities) if probabilities else []
        vec = None if not labels else np.asarray([[probabilities[c] for c in labels]])  # type: ignore[index]
        return float(self.calibrate_batch([confidence], vec, labels)[0])

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
