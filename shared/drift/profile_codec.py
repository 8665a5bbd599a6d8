"""A ``ReferenceProfile`` as a JSON-ready dict and back, for storage beside its model version.

Floats go through ``json`` unchanged (Python writes the shortest repr that parses back to
the same double) and no value is infinite (the open outer bins are implicit), so
``profile_from_dict(json.loads(json.dumps(profile_to_dict(p)))) == p``. The dict carries
``"format": 1``; a stored profile of another layout is refused rather than misread.
"""

from __future__ import annotations

from typing import Any

from shared.drift.profile import (
    CategoricalProfile,
    FeatureProfile,
    NumericProfile,
    ReferenceProfile,
)

PROFILE_FORMAT = 1


def profile_to_dict(profile: ReferenceProfile) -> dict[str, Any]:
    return {
        "format": PROFILE_FORMAT,
        "model_version": profile.model_version,
        "version": profile.version,
        "n_samples": profile.n_samples,
        "confidence": feature_to_dict(profile.confidence),
        "predicted_labels": feature_to_dict(profile.predicted_labels),
        "features": {name: feature_to_dict(f) for name, f in profile.features.items()},
    }


def profile_from_dict(data: dict[str, Any]) -> ReferenceProfile:
    """Inverse of ``profile_to_dict``; a missing or ill-typed key raises ValueError naming
    the key's path and what was expected."""
    if data.get("format") != PROFILE_FORMAT:
        raise ValueError(f"format is {data.get('format')!r}; expected {PROFILE_FORMAT}")
    confidence = feature_from_dict(_get(data, "confidence", dict), "confidence")
    labels = feature_from_dict(_get(data, "predicted_labels", dict), "predicted_labels")
    if not isinstance(confidence, NumericProfile):
        raise ValueError("confidence.kind is 'categorical'; expected 'numeric'")
    if not isinstance(labels, CategoricalProfile):
        raise ValueError("predicted_labels.kind is 'numeric'; expected 'categorical'")
    features = {
        str(name): feature_from_dict(f, f"features.{name}")
        for name, f in _get(data, "features", dict).items()
    }
    return ReferenceProfile(
        model_version=_get(data, "model_version", str),
        version=_get(data, "version", str),
        n_samples=_get(data, "n_samples", int),
        confidence=confidence,
        predicted_labels=labels,
        features=features,
    )


def feature_to_dict(f: FeatureProfile) -> dict[str, Any]:
    if isinstance(f, NumericProfile):
        return {
            "kind": "numeric",
            "name": f.name,
            "n_samples": f.n_samples,
            "edges": list(f.edges),
            "proportions": list(f.proportions),
            "fine": {
                "lo": f.fine_lo,
                "hi": f.fine_hi,
                "bins": f.fine_bins,
                "proportions": list(f.fine_proportions),
            },
            "mean": f.mean,
            "std": f.std,
        }
    return {
        "kind": "categorical",
        "name": f.name,
        "n_samples": f.n_samples,
        "categories": list(f.categories),
        "shares": list(f.shares),
    }


def feature_from_dict(data: Any, path: str) -> FeatureProfile:
    if not isinstance(data, dict):
        raise ValueError(f"{path} is {data!r}; expected an object")
    kind = data.get("kind")
    if kind == "numeric":
        fine = _get(data, "fine", dict, path)
        return NumericProfile(
            name=_get(data, "name", str, path),
            n_samples=_get(data, "n_samples", int, path),
            edges=_numbers(data, "edges", path),
            proportions=_numbers(data, "proportions", path),
            fine_lo=_number(fine, "lo", f"{path}.fine"),
            fine_hi=_number(fine, "hi", f"{path}.fine"),
            fine_bins=_get(fine, "bins", int, f"{path}.fine"),
            fine_proportions=_numbers(fine, "proportions", f"{path}.fine"),
            mean=_number(data, "mean", path),
            std=_number(data, "std", path),
        )
    if kind == "categorical":
        categories = _get(data, "categories", list, path)
        if not all(isinstance(c, str) for c in categories):
            raise ValueError(f"{path}.categories is {categories!r}; expected a list of strings")
        return CategoricalProfile(
            name=_get(data, "name", str, path),
            n_samples=_get(data, "n_samples", int, path),
            categories=tuple(categories),
            shares=_numbers(data, "shares", path),
        )
    raise ValueError(f"{path}.kind is {kind!r}; expected 'numeric' or 'categorical'")


def _key(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _get(data: dict[str, Any], key: str, kind: type, path: str = "") -> Any:
    value = data.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"{_key(path, key)} is {value!r}; expected {kind.__name__}")
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(data: dict[str, Any], key: str, path: str) -> float:
    value = data.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(f"{_key(path, key)} is {value!r}; expected a number")
    return float(value)


def _numbers(data: dict[str, Any], key: str, path: str) -> tuple[float, ...]:
    values = _get(data, key, list, path)
    if not all(_is_number(v) for v in values):
        raise ValueError(f"{_key(path, key)} is {values!r}; expected a list of numbers")
    return tuple(float(v) for v in values)
