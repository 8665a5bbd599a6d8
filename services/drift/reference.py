"""Reference profiles from a model version's first events, and their JSON forms in Redis.

While a model version has no profile, its first ``reference_events`` events are kept as
JSON chunks (:func:`chunk`); the batch that completes them builds the profile from exactly
those events (:func:`build_from_chunks`), so a replay after a crash builds the same profile
with the same content-digest version. At most ``shared.windows.drift.MAX_FEATURES`` features
are profiled, the first by name; a feature with no value in the reference is left out.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from shared.contracts.batches import PredictionColumns
from shared.drift.profile import ReferenceProfile
from shared.drift.profile_builder import build_profile
from shared.drift.profile_codec import profile_from_dict, profile_to_dict
from shared.windows.drift import MAX_FEATURES

logger = logging.getLogger(__name__)


def chunk(cols: PredictionColumns, rows: slice) -> dict[str, Any]:
    return {
        "c": cols.confidences[rows].tolist(),
        "l": cols.predicted_labels[rows],
        "n": {k: v[rows].tolist() for k, v in cols.numeric_features.items()},
        "k": {k: v[rows] for k, v in cols.categorical_features.items()},
    }


def chunk_size(data: dict[str, Any]) -> int:
    return len(data["c"])


def build_from_chunks(model: str, chunks: Sequence[dict[str, Any]]) -> ReferenceProfile:
    """The profile of the events in ``chunks`` (in order); a feature absent from a chunk
    counts as missing there."""
    conf = np.concatenate([np.asarray(c["c"], dtype=np.float64) for c in chunks])
    labels = [label for c in chunks for label in c["l"]]
    numeric = sorted({k for c in chunks for k in c["n"]})
    categorical = sorted({k for c in chunks for k in c["k"]} - set(numeric))
    features: dict[str, Any] = {}
    for name in sorted(numeric + categorical):
        if name in numeric:
            col: Any = np.concatenate(
                [
                    np.asarray(c["n"][name], dtype=np.float64)
                    if name in c["n"]
                    else np.full(chunk_size(c), np.nan)
                    for c in chunks
                ]
            )
            present = bool(np.isfinite(col).any())
        else:
            col = [v for c in chunks for v in (c["k"].get(name) or [""] * chunk_size(c))]
            present = any(col)
        if present:
            features[name] = col
    if len(features) > MAX_FEATURES:
        logger.warning(
            "%s has %d features; profiling the first %d by name", model, len(features), MAX_FEATURES
        )
        features = dict(list(features.items())[:MAX_FEATURES])
    return build_profile(model, conf, labels, features)


def reference_json(profile: ReferenceProfile, source: str, upload_id: int = 0) -> str:
    body = {"source": source, "upload_id": upload_id, "profile": profile_to_dict(profile)}
    return json.dumps(body, allow_nan=False)


def parse_reference(raw: str | bytes) -> tuple[ReferenceProfile, str, int]:
    """(profile, source, upload id) of a stored reference."""
    data = json.loads(raw)
    return profile_from_dict(data["profile"]), str(data["source"]), int(data["upload_id"])
