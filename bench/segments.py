"""Per-segment calibration: Redis memory of the segment state, refit cost, serve cost.

    python -m bench.segments [--segments 1000] [--window 500]

Uses the local stack's Redis under a private prefix (removed afterwards). The state of
``--segments`` segments of one model version is written the way the aggregator writes it
(fenced Lua calls of ``AggregatorStore.apply``, 50 segments × 100 labels per call) until
every window is full, then measured key by key with ``MEMORY USAGE``. Refit: read one
segment's window, decode it, fit isotonic and build the artifact, as the refit loop does
(percentiles over every segment). Serve: ``calibrate_segments`` on batches of 500 events
spread over 50 segment maps, against the model version's map alone.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from services.aggregator.counters import new_increments
from services.aggregator.store import AggregatorStore
from shared.recalibration.maps import from_registry
from shared.recalibration.segments import (
    ClippedMap,
    SegmentFitOptions,
    calibrate_segments,
    encode_pair,
    fit_segment,
)
from shared.runtime import redis_client
from shared.settings import Settings
from shared.windows.segments import SegmentState
from tooling.benchmarking import delete_redis_prefix

MODEL = "bench/segmented/v1"


class Msg:
    def __init__(self, offset: int) -> None:
        self._offset = offset

    def topic(self) -> str:
        return "bench.labels"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def window_values(rng: np.random.Generator, n: int) -> list[int]:
    conf = np.round(rng.uniform(0.5, 1.0, n), 4)
    right = rng.random(n) < conf - 0.1
    return [encode_pair(float(c), bool(y)) for c, y in zip(conf, right, strict=True)]


async def fill(store: AggregatorStore, segments: list[str], window: int) -> tuple[float, int]:
    """Write every segment's window full; (seconds, labels written)."""
    rng = np.random.default_rng(7)
    per_call, chunk, offset, labels = 50, 100, 0, 0
    started = time.perf_counter()
    for start in range(0, len(segments), per_call):
        group = segments[start : start + per_call]
        for _ in range(0, window, chunk):
            windows = {(MODEL, s): window_values(rng, chunk) for s in group}
            messages: list[Any] = [Msg(offset)]
            await store.apply(messages, new_increments(), [], [], {}, 0, windows)
            offset += 1
            labels += chunk * len(group)
    return time.perf_counter() - started, labels


async def memory(
    client: aioredis.Redis, state: SegmentState, segments: list[str]
) -> dict[str, int]:
    lay = state.layout
    per_key: dict[str, int] = {}
    rings = 0
    for s in segments:
        rings += int(await client.memory_usage(lay.ring(MODEL, s), samples=0) or 0)
    per_key["windows (lists)"] = rings
    for name, key in (
        ("members set", lay.members(MODEL, "sport")),
        ("counts hash", lay.counts(MODEL)),
        ("fit bookmarks hash", lay.fits(MODEL)),
    ):
        per_key[name] = int(await client.memory_usage(key, samples=0) or 0)
    return per_key


async def refit_costs(
    state: SegmentState, segments: list[str]
) -> tuple[list[float], list[float], list[Any]]:
    """Wall time of read + fit, and CPU time of the fit alone, per segment; the fits."""
    times, cpu, fits = [], [], []
    for s in segments:
        t0 = time.perf_counter()
        (window,) = await state.windows(MODEL, [s])
        c0 = time.process_time()
        fitted = fit_segment(window, SegmentFitOptions())
        cpu.append(time.process_time() - c0)
        times.append(time.perf_counter() - t0)
        fits.append(fitted)
    await state.mark_fitted(MODEL, dict.fromkeys(segments, 500))
    return times, cpu, fits


def serve_costs(fits: list[Any], repeat: int) -> tuple[list[float], list[float]]:
    maps = {
        f"v{i}": ClippedMap(from_registry(f.version, f.artifact), 0.01, 0.99)
        for i, f in enumerate(fits[:50])
        if f.version is not None
    }
    base = from_registry("temperature-base", {"kind": "temperature", "params": {"beta": 0.8}})
    rng = np.random.default_rng(3)
    conf = rng.uniform(0.5, 1.0, 500)
    segs = [f"v{i}" for i in rng.integers(0, 50, 500)]
    with_maps, base_only = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        calibrate_segments(base, maps, segs, conf)
        with_maps.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        base.apply(conf, None, None, [])
        base_only.append(time.perf_counter() - t0)
    return with_maps, base_only


async def run(args: argparse.Namespace) -> None:
    base = Settings()
    settings = base.model_copy(update={"redis_prefix": f"bseg{uuid.uuid4().hex[:8]}:"})
    client = redis_client.async_client(settings.redis_dsn)
    try:
        store = AggregatorStore(client, settings.redis_prefix, 3600, args.window, args.segments)
        state = SegmentState(client, settings.redis_prefix)
        segments = [f"sport=s{i:05d}" for i in range(args.segments)]
        seconds, labels = await fill(store, segments, args.window)
        print(f"state: {args.segments} segments × {args.window} labels of one model version")
        print(f"  written through the fenced Lua call: {labels / seconds:,.0f} labels/s")
        times, cpu, fits = await refit_costs(state, segments)
        mem = await memory(client, state, segments)
        total = sum(mem.values())
        for name, b in mem.items():
            print(f"  {name:<22}{b:>12,} B")
        print(
            f"  total {total:,} B = {total / 2**20:.2f} MiB, "
            f"{total / args.segments:,.0f} B per segment ({total / args.segments / args.window:.2f} B per label)"  # noqa: E501
        )
        ok = sum(1 for f in fits if f.version is not None)
        print(f"refit (read window + decode + isotonic + artifact), {ok}/{len(fits)} fitted:")
        print(
            f"  p50 {pct(times, 50) * 1e3:.2f} ms, p99 {pct(times, 99) * 1e3:.2f} ms, "
            f"max {max(times) * 1e3:.2f} ms; fit CPU p50 {pct(cpu, 50) * 1e3:.2f} ms, "
            f"p99 {pct(cpu, 99) * 1e3:.2f} ms = {len(cpu) / sum(cpu):,.0f} refits per CPU second"
        )
        with_maps, base_only = serve_costs(fits, args.repeat)
        print("serve, batch of 500 events over 50 segment maps vs the version's map alone:")
        print(
            f"  segments p50 {pct(with_maps, 50) * 1e6 / 500:.2f} µs/event "
            f"(p99 {pct(with_maps, 99) * 1e6 / 500:.2f}); version map p50 "
            f"{pct(base_only, 50) * 1e6 / 500:.3f} µs/event"
        )
    finally:
        await client.aclose()
        delete_redis_prefix(settings)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--segments", type=int, default=1000)
    parser.add_argument("--window", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=200)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
