"""Calibration maps: how a model version's raw confidence becomes a calibrated one.

The policy applies the map of each model version before comparing with its threshold and
records the map's version with every decision; the gateway predicts the same decision with
the same map. A map is built from the registry's ``calibrator`` (JSON
``{"kind": "...", ...parameters}``) and ``calibrator_version`` fields of a ModelVersion;
a null ``calibrator`` means identity. The recalibration service adds kinds by registering a
builder in :data:`BUILDERS`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from shared.recalibration import appliers as recalibration_maps

FloatArray = npt.NDArray[np.float64]

IDENTITY_VERSION = "identity"


class CalibrationMap(Protocol):
    """A fitted map from a model version's outputs to calibrated top-label confidence."""

    @property
    def version(self) -> str:
        """What a decision records as its ``calibrator_version``."""
        ...

    def apply(
        self,
        confidences: FloatArray,
        probabilities: FloatArray | None,
        logits: FloatArray | None,
        class_labels: list[str],
    ) -> FloatArray:
        """Calibrated top-label confidence of every row (vectorised over the batch).

        ``confidences`` has shape (N,); ``probabilities`` and ``logits``, when present,
        (N, len(class_labels)), a NaN row meaning that event did not carry them.
        """
        ...


@dataclass(frozen=True, slots=True)
class IdentityMap:
    """Calibrated confidence = raw confidence."""

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

Builder = Callable[[str, Mapping[str, Any]], CalibrationMap]
"""Builds a map from (calibrator_version, the parsed ``calibrator`` JSON object)."""

BUILDERS: dict[str, Builder] = {"identity": lambda version, _spec: IdentityMap(version)}
"""Calibrator kinds Caliber can apply, by the ``kind`` field of the ``calibrator`` JSON."""


def _artifact_builder(version: str, spec: Mapping[str, Any]) -> CalibrationMap:
    try:
        return recalibration_maps.build(version, spec)
    except recalibration_maps.ArtifactError as exc:
        raise CalibratorError(str(exc)) from exc


BUILDERS.update(dict.fromkeys(recalibration_maps.KINDS, _artifact_builder))


class CalibratorError(ValueError):
    """A registry entry names a calibration map Caliber cannot build."""


def from_registry(version: str, calibrator: str | Mapping[str, Any] | None) -> CalibrationMap:
    """The map of a registry entry (its ``calibrator_version`` and ``calibrator`` fields).

    A null or empty ``calibrator`` is the identity map, whose decisions record
    ``identity`` whatever ``calibrator_version`` says, because identity is what ran.
    Raises :class:`CalibratorError` naming the version and kind when the JSON is malformed
    or its kind is not in :data:`BUILDERS`.
    """
    if calibrator is None or calibrator == "":
        return IDENTITY
    if isinstance(calibrator, str):
        try:
            spec = json.loads(calibrator)
        except json.JSONDecodeError as exc:
            raise CalibratorError(
                f"calibrator of version {version!r} is not JSON ({exc}): {calibrator[:80]!r}"
            ) from exc
    else:
        spec = calibrator
    if not isinstance(spec, Mapping):
        raise CalibratorError(
            f"calibrator of version {version!r} must be a JSON object with a 'kind', "
            f"got {type(spec).__name__}"
        )
    kind = spec.get("kind")
    builder = BUILDERS.get(kind) if isinstance(kind, str) else None
    if builder is None:
        raise CalibratorError(
            f"calibrator kind {kind!r} of version {version!r} is not supported; "
            f"expected one of {sorted(BUILDERS)}"
        )
    return builder(version, spec)
