"""ModelVersion records for the compacted ``<ns>.model-updates`` topic.

Whoever changes the registry (the gateway today, the calibrator later) publishes the whole
new state of the changed model version, keyed by its model version key, so the compacted
topic always ends with the latest state of every version and a reader rebuilds the registry
by reading it from the beginning (:class:`shared.registry.view.RegistryView`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from shared.contracts.batches import model_key
from shared.contracts.codec import AvroCodec

MODEL_VERSION = "ModelVersion"

REGISTRY_COLUMNS = (
    "id, tenant_id, name, version, stage, parent_id, abstain_threshold, calibrator_version, "
    "calibrator::text AS calibrator, candidate_version, "
    "candidate_calibrator::text AS candidate_calibrator, rollout_stage, canary_share, "
    "created_at, updated_at, segment_key"
)
"""The ``model_versions`` columns :func:`model_version_record` needs, for a SELECT or RETURNING."""


def _ms(value: datetime | int) -> int:
    return value if isinstance(value, int) else int(value.timestamp() * 1000)


def _get(row: Mapping[str, Any], field: str) -> Any:
    """A rollout field of a row (None when the row predates them)."""
    try:
        return row[field]
    except KeyError:
        return None


def model_version_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """The ModelVersion Avro record of one ``model_versions`` row (see REGISTRY_COLUMNS).

    Times may be datetimes (as PostgreSQL returns them) or epoch milliseconds.
    """
    return {
        "id": int(row["id"]),
        "tenant": row["tenant_id"],
        "name": row["name"],
        "version": row["version"],
        "stage": row["stage"],
        "parent_id": row["parent_id"],
        "abstain_threshold": float(row["abstain_threshold"]),
        "calibrator_version": row["calibrator_version"],
        "calibrator": row["calibrator"],
        "candidate_version": _get(row, "candidate_version"),
        "candidate_calibrator": _get(row, "candidate_calibrator"),
        "rollout_stage": _get(row, "rollout_stage"),
        "canary_share": float(_get(row, "canary_share") or 0.0),
        "created_at_ms": _ms(row["created_at"]),
        "updated_at_ms": _ms(row["updated_at"]),
        "segment_key": row.get("segment_key"),
    }


def model_update_message(codec: AvroCodec, row: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """(key, value) of the model-updates message for one registry row."""
    key = model_key(row["tenant_id"], row["name"], row["version"]).encode()
    return key, codec.encode(MODEL_VERSION, model_version_record(row))
