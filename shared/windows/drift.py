"""Drift state in Redis: the layout, and the read side the gateway uses.

The drift worker is the only writer. Layout (``P`` = ``<redis_prefix>drift:``, ``M`` = a
model version key ``tenant/model/version``, ``{M}`` = M as a hash tag, so every key of one
model version lives in one Redis Cluster slot; ``V`` = a reference profile version):

- ``Poffsets`` — last applied offset per topic:partition, with ``Poffsets:inflight`` and one
  fence per model version ``Poffsets:{M}`` (``shared.runtime.offset_fence``).
- ``Pmodels`` — set of model version keys seen (no tag: written before the fenced calls,
  as ``Pmvid`` and ``Pwm`` are, by idempotent writes).
- ``Pmvid`` — hash M → registry id of the model version (when events carry it).
- ``Pref:{M}`` — the active reference profile, JSON ``{"source": "window" | "upload",
  "upload_id": n, "profile": <shared.drift.profile_codec dict>}``.
- ``Pcollect:{M}`` — list of JSON chunks of the first events of M while its reference window
  fills; ``Pcollected:{M}`` — how many events they hold. Both go when the profile is built.
- ``Pb:{M}:V:{start}`` — hash of counts of the event-time bucket starting at epoch-second
  ``start``: field ``part × CELL_STRIDE + cell`` (a decimal integer, so a window of tens
  of thousands of fields decodes with one ``int()`` each), part 0 = confidence, 1 =
  predicted label, 2 + i = the profile's i-th feature (``ReferenceProfile.features``
  order), cells as ``shared.drift.profile`` lays them out. TTL: twice the window.
- ``Pidx:{M}:V`` — sorted set of the bucket starts that exist.
- ``Pwm`` — hash M → latest event time (ms) seen: the end of M's sliding window.
- ``Pscores:{M}`` — JSON of the latest evaluation (every score of every part).
- ``Palert:{M}:{feature}`` — alert state of one feature (hysteresis and cooldown).

Memory per model version is bounded by (window / bucket + 2) buckets × the profile's cell
count (the profile holds at most ``MAX_FEATURES`` features), whatever the traffic: buckets
that leave the window are deleted by the evaluator (and expire anyway).
"""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis

from shared.runtime.redis_client import tagged

MAX_FEATURES = 50
"""Most features a reference profile (and so the drift state, the scores and the exported
metrics) holds per model version; the rest are ignored, in name order."""
CELL_STRIDE = 10_000
"""Field code stride: more than any part's cell count (a numeric part has at most
2·bins − 1 + fine_bins + 2 cells, a categorical one max_categories + 1)."""
CONFIDENCE_PART = 0
LABEL_PART = 1
FIRST_FEATURE_PART = 2


class DriftKeys:
    def __init__(self, prefix: str) -> None:
        self.p = f"{prefix}drift:"

    @property
    def offsets(self) -> str:
        return f"{self.p}offsets"

    @property
    def models(self) -> str:
        return f"{self.p}models"

    @property
    def model_ids(self) -> str:
        return f"{self.p}mvid"

    @property
    def watermarks(self) -> str:
        return f"{self.p}wm"

    def reference(self, model: str) -> str:
        return f"{self.p}ref:{tagged(model)}"

    def collect(self, model: str) -> str:
        return f"{self.p}collect:{tagged(model)}"

    def collected(self, model: str) -> str:
        return f"{self.p}collected:{tagged(model)}"

    def bucket(self, model: str, version: str, start: int) -> str:
        return f"{self.p}b:{tagged(model)}:{version}:{start}"

    def index(self, model: str, version: str) -> str:
        return f"{self.p}idx:{tagged(model)}:{version}"

    def scores(self, model: str) -> str:
        return f"{self.p}scores:{tagged(model)}"

    def alert(self, model: str, feature: str) -> str:
        return f"{self.p}alert:{tagged(model)}:{feature}"


async def read_scores(client: aioredis.Redis, prefix: str, model: str) -> dict[str, Any] | None:
    """The latest evaluation of ``model`` as the worker stored it, or None."""
    raw = await client.get(DriftKeys(prefix).scores(model))
    return json.loads(raw) if raw else None


async def read_reference(client: aioredis.Redis, prefix: str, model: str) -> dict[str, Any] | None:
    """The active reference of ``model`` (``{"source", "upload_id", "profile"}``), or None."""
    raw = await client.get(DriftKeys(prefix).reference(model))
    return json.loads(raw) if raw else None


async def read_collected(client: aioredis.Redis, prefix: str, model: str) -> int:
    """Events of ``model``'s reference window collected so far (0 once its profile exists)."""
    return int(await client.get(DriftKeys(prefix).collected(model)) or 0)
