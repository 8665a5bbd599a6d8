"""An in-memory view of the per-segment calibration maps, read from ``<ns>.segment-maps``.

The aggregator's refit loop publishes each segment's latest map (``SegmentMap`` records,
keyed by model version and segment) to this compacted topic; the policy follows it in the
background exactly as it follows the registry, so deciding never waits on a store. A map is
built once, when its record arrives; a record that cannot be built, or whose fit failed
(null calibrator), leaves its segment without a map, so it falls back to the model
version's map. At most ``cap`` segments per model version and segment key are kept (the
aggregator keeps no state beyond it either); later ones fall back. With ``keep_records``
(the gateway) the view also keeps each built map's record fields (:class:`SegmentEntry`),
so the gateway can hand the maps to a client that applies them in its own process
(``GET /api/models/{id}/segment-maps``); the policy, which only applies them, does not.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from shared.contracts.batches import model_key
from shared.contracts.codec import AvroCodec, Decoded
from shared.recalibration.maps import CalibrationMap, CalibratorError, from_registry
from shared.recalibration.segments import ClippedMap
from shared.registry.view import RegistryView
from shared.settings import Settings

logger = logging.getLogger(__name__)

SEGMENT_MAP = "SegmentMap"
_EMPTY: Mapping[str, CalibrationMap] = {}


@dataclass(frozen=True, slots=True)
class SegmentEntry:
    """The fields of a segment's ``SegmentMap`` record whose map was built."""

    segment: str
    calibrator_version: str
    calibrator: str
    """The artifact as the record carries it (JSON text)."""
    clip_low: float
    clip_high: float


_NO_ENTRIES: Mapping[str, SegmentEntry] = {}


def segment_map_key(model: str, segment_key: str, value: str) -> bytes:
    """The Kafka key of a segment's map: ``<model version key>#<segment key>=<value>``."""
    return f"{model}#{segment_key}={value}".encode()


def build_segment_map(record: Mapping[str, object]) -> CalibrationMap | None:
    """The clipped map of a ``SegmentMap`` record; None when it has none or is unusable."""
    calibrator, version = record.get("calibrator"), record.get("calibrator_version")
    if not isinstance(calibrator, str) or not isinstance(version, str):
        return None
    try:
        inner = from_registry(version, calibrator)
    except CalibratorError as exc:
        logger.error("segment map %s not usable (%s); the segment falls back", version, exc)
        return None
    return ClippedMap(inner, float(record["clip_low"]), float(record["clip_high"]))  # type: ignore[arg-type]


class SegmentMapView(RegistryView):
    """Maps by model version key, segment key and segment value."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        codec: AvroCodec,
        cap: int,
        keep_records: bool = False,
    ) -> None:
        super().__init__(settings, topic, codec)
        self.cap = cap
        self.keep_records = keep_records
        self.maps: dict[str, dict[str, dict[str, CalibrationMap]]] = {}
        self.entries: dict[str, dict[str, dict[str, SegmentEntry]]] = {}
        """The record of every map in ``maps``, by the same keys (with ``keep_records``)."""
        self._segments: dict[tuple[str, str], set[str]] = {}

    @property
    def described(self) -> str:
        n = sum(len(m) for by_key in self.maps.values() for m in by_key.values())
        return f"{n} segment maps of {len(self.maps)} model versions"

    def maps_for(self, model: str, segment_key: str) -> Mapping[str, CalibrationMap]:
        """Segment value → map of one model version's segments under ``segment_key``."""
        return self.maps.get(model, {}).get(segment_key, _EMPTY)

    def entries_for(self, model: str, segment_key: str) -> Mapping[str, SegmentEntry]:
        """Segment value → record of the maps :meth:`maps_for` answers."""
        return self.entries.get(model, {}).get(segment_key, _NO_ENTRIES)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None or value is None:
            return
        decoded = self._codec.decode(value, {SEGMENT_MAP})
        if not isinstance(decoded, Decoded):
            logger.error("unreadable segment map %r: %s", key, decoded.message)
            return
        self.put(decoded.record)

    def put(self, r: Mapping[str, object]) -> None:
        model = model_key(str(r["tenant"]), str(r["model_name"]), str(r["model_version"]))
        key, value = str(r["segment_key"]), str(r["segment"])
        known = self._segments.setdefault((model, key), set())
        if value not in known:
            if len(known) >= self.cap:
                return  # beyond the cap: the segment falls back
            known.add(value)
        by_key = self.maps.setdefault(model, {}).setdefault(key, {})
        built = build_segment_map(r)
        if built is None:
            by_key.pop(value, None)
        else:
            by_key[value] = built
        if self.keep_records:
            self._keep(model, key, value, r if built is not None else None)

    def _keep(self, model: str, key: str, value: str, r: Mapping[str, object] | None) -> None:
        """Keep (or, when ``r`` is None, drop) the record of a segment's map."""
        records = self.entries.setdefault(model, {}).setdefault(key, {})
        if r is None:
            records.pop(value, None)
            return
        records[value] = SegmentEntry(
            value,
            str(r["calibrator_version"]),
            str(r["calibrator"]),
            float(r["clip_low"]),  # type: ignore[arg-type]
            float(r["clip_high"]),  # type: ignore[arg-type]
        )
