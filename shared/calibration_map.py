"""Calibration maps: how a model version's raw confidence becomes a calibrated one.

The policy applies the map of each model version before comparing with its threshold, and
records the map's version with every decision. A map comes from the registry's
``calibrator`` JSON (``{"kind": "...", ...parameters}``); none means identity.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

IDENTITY_VERSION = "identity"


class CalibrationMap(Protocol):
    @property
    def version(self) -> str: ...

    def apply(
        self,
        confidences: FloatArray,
        probabilities: FloatArray | None,
        logits: FloatArray | None,
        class_labels: list[str],
    ) -> FloatArray:
        """Calibrated top-label confidence of every row (vectorised)."""
        ...


@dataclass(frozen=True, slots=True)
class IdentityMap:
    version: str = IDENTITY_VERSION

    def apply(
        self,
        confidences: FloatArray,
        probabilities: FloatArray | None,
        logits: FloatArray | None,
        class_labels: list[str],
    ) -> FloatArray:
        return confidences


IDENTITY = IdentityMap()


class CalibratorError(ValueError):
    """A registry entry names a calibration map Caliber cannot build."""


def from_registry(version: str, calibrator: str | None) -> CalibrationMap:
    """The map of a registry entry: identity when ``calibrator`` is null."""
    if calibrator is None or calibrator == "":
        return IDENTITY if version == IDENTITY_VERSION else IdentityMap(version)
    try:
        spec = json.loads(calibrator)
    except json.JSONDecodeError as exc:
        raise CalibratorError(f"calibrator of version {version!r} is not JSON: {exc}") from exc
    kind = spec.get("kind") if isinstance(spec, dict) else None
    if kind == "identity":
        return IdentityMap(version)
    raise CalibratorError(
        f"calibrator kind {kind!r} of version {version!r} is not supported; expected 'identity'"
    )
