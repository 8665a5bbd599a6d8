"""Calibration artifacts: the canonical JSON of a fitted map, and its version.

An artifact is a small JSON object any language can apply (formulas in
``docs/recalibration.md``)::

    {"format": 1, "kind": "<method>", "input": "confidence" | "probabilities" | "logits",
     "classes": [...],          # vector inputs only, the column order of the parameters
     "params": {...}}

Canonical form: keys sorted, no whitespace, floats rounded to 12 significant digits (so a
refit on the same set gives the same bytes however the last bits of a sum fall). The
version is ``<kind>-`` + the first 16 hex digits of the SHA-256 of those bytes: the same set
fitted with the same method gives the same artifact version, byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

FORMAT = 1
SIGNIFICANT_DIGITS = 12


def _round(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"artifact holds a non-finite number {value!r}")
        rounded = float(f"{value:.{SIGNIFICANT_DIGITS}g}")
        return 0.0 if rounded == 0.0 else rounded  # no "-0.0"
    if isinstance(value, Mapping):
        return {str(k): _round(v) for k, v in value.items()}
    if isinstance(value, Sequence):
        return [_round(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return _round(value.tolist())
    raise TypeError(f"artifact value of type {type(value).__name__} is not JSON")


def canonical(artifact: Mapping[str, Any]) -> bytes:
    """The canonical bytes of an artifact (raises ValueError on NaN or infinity)."""
    return json.dumps(
        _round(artifact), sort_keys=True, separators=(",", ":"), allow_nan=False
    ).encode()


def artifact_version(artifact: Mapping[str, Any]) -> str:
    return f"{artifact['kind']}-{hashlib.sha256(canonical(artifact)).hexdigest()[:16]}"


def make_artifact(
    kind: str, input_: str, params: Mapping[str, Any], classes: Sequence[str] = ()
) -> dict[str, Any]:
    """The artifact of a fit, already in canonical (rounded) form."""
    body: dict[str, Any] = {"format": FORMAT, "kind": kind, "input": input_, "params": params}
    if input_ != "confidence":
        body["classes"] = list(classes)
    out: dict[str, Any] = json.loads(canonical(body))
    return out
