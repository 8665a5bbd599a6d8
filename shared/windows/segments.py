"""The Redis layout of per-segment calibration state (written by the aggregator only).

Keys, all under ``<prefix>agg:seg:`` (``{model}`` = the model version key as a hash tag,
so a model version's segment state shares the slot of its calibration state;
``{segment}`` = ``<segment key>=<value>``):

- ``models``: set of model version keys that have segment state (no tag: written before
  the fenced call);
- ``members:{model}|{segment key}``: set of the model version's segments under one segment
  key, at most the cap (``CALIBER_SEGMENT_MAX_PER_VERSION``); a segment beyond it gets no
  state and falls back (per key, so naming another key starts a new set);
- ``n:{model}``: hash segment → labeled events ever counted into it, and ``overflow`` →
  labeled events of segments refused by the cap;
- ``ring:{model}:{segment}``: list of the segment's last W labeled events, in the order
  their labels were counted, each one integer
  (:func:`shared.recalibration.segments.encode_pair`), oldest first;
- ``fit:{model}``: hash segment → the labeled count its last refit saw.

All but ``models`` change only inside the aggregator's fenced Lua call (with its offsets), so a
replayed batch counts nothing twice; ``fit`` is the refit loop's bookmark. Every key expires
after ``SEGMENT_TTL_SECONDS`` without a labeled event.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from shared.runtime.redis_client import tagged

SEGMENT_TTL_SECONDS = 30 * 86_400
OVERFLOW = "overflow"
"""Field of ``n:{model}`` counting labels refused by the cap (no segment has this name: a
segment name always holds ``=``)."""


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


@dataclass(frozen=True, slots=True)
class SegmentLayout:
    prefix: str
    """The Redis prefix of the stack (``Settings.redis_prefix``)."""

    @property
    def base(self) -> str:
        return f"{self.prefix}agg:seg:"

    @property
    def models(self) -> str:
        return f"{self.base}models"

    def members(self, model: str, segment_key: str) -> str:
        return f"{self.base}members:{tagged(model)}|{segment_key}"

    def counts(self, model: str) -> str:
        return f"{self.base}n:{tagged(model)}"

    def ring(self, model: str, segment: str) -> str:
        return f"{self.base}ring:{tagged(model)}:{segment}"

    def fits(self, model: str) -> str:
        return f"{self.base}fit:{tagged(model)}"


class SegmentState:
    """Reads of the segment state, and the refit loop's bookmark (``fit:{model}``)."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.r = client
        self.layout = SegmentLayout(prefix)

    async def models(self) -> list[str]:
        return sorted(_text(m) for m in await self.r.smembers(self.layout.models))

    async def counts(self, model: str) -> tuple[dict[str, int], dict[str, int]]:
        """(labeled count of every segment, count at each segment's last refit)."""
        pipe = self.r.pipeline(transaction=False)
        pipe.hgetall(self.layout.counts(model))
        pipe.hgetall(self.layout.fits(model))
        counts, fits = await pipe.execute()
        return (
            {_text(k): int(v) for k, v in counts.items()},
            {_text(k): int(v) for k, v in fits.items()},
        )

    async def windows(self, model: str, segments: list[str]) -> list[list[bytes]]:
        pipe = self.r.pipeline(transaction=False)
        for s in segments:
            pipe.lrange(self.layout.ring(model, s), 0, -1)
        out: list[list[bytes]] = await pipe.execute()
        return out

    async def mark_fitted(self, model: str, fitted: dict[str, int]) -> None:
        if fitted:
            key = self.layout.fits(model)
            pipe = self.r.pipeline(transaction=True)
            pipe.hset(key, mapping=dict(fitted.items()))
            pipe.expire(key, SEGMENT_TTL_SECONDS)
            await pipe.execute()
