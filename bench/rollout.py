"""The cost of a calibrator rollout at serve time, and ``POST /api/calibrate``'s latency.

    python -m bench.rollout [--repeat 2000] [--requests 300] [--no-gateway]

1. In process: :func:`shared.recalibration.serving.serve` on batches of 1 and 500 events
   (temperature maps on the top-label confidence): the active map alone, with a shadow
   beside it, and in canary at 10 %: latency percentiles.
2. In process: the policy's whole step on 500-event PredictionBatch messages (decode,
   serve, encode the DecisionBatch), CPU seconds per 1,000 events, active alone against
   shadow and canary: what a candidate adds to the policy's CPU.
3. On the local stack (a scratch database and namespace): ``POST /api/calibrate`` through
   the gateway, one client, batches of 1 and 500 events of a version in canary: latency
   percentiles and the gateway's peak RSS.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import uuid
from typing import Any

import asyncpg
import httpx
import numpy as np
import typer

from bench.policy import ACTIVE_MAP, CANDIDATE_MAP
from services.gateway.auth import create_key
from services.policy.processing import decide
from shared.contracts.batches import PredictionColumns, model_key
from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.recalibration.maps import from_registry
from shared.recalibration.serving import Candidate, ServePlan, serve
from shared.runtime.kafka import make_producer
from shared.settings import Settings
from tooling.benchmarking import (
    bench_settings,
    peak_rss_mb,
    scratch_database,
    start_service,
)

app = typer.Typer(add_completion=False)

ACTIVE = from_registry("temperature-active", ACTIVE_MAP)
CANDIDATE = from_registry("temperature-candidate", CANDIDATE_MAP)
PLANS = {
    "active only": ServePlan(0.7, ACTIVE),
    "shadow": ServePlan(0.7, ACTIVE, Candidate(CANDIDATE, "shadow")),
    "canary 10 %": ServePlan(0.7, ACTIVE, Candidate(CANDIDATE, "canary", 0.1)),
}


def _events(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(n)]
    return ids, rng.uniform(0.5, 1.0, n)


def _pct(values: list[float]) -> str:
    p50, p99 = np.percentile(np.asarray(values) * 1e6, [50, 99])
    return f"p50 {p50:8.1f} µs  p99 {p99:8.1f} µs"


def serve_latency(repeat: int) -> None:
    print("serve() in process (temperature maps):")
    for size in (1, 500):
        ids, conf = _events(size, size)
        for name, plan in PLANS.items():
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                serve(plan, ids, conf)
                times.append(time.perf_counter() - t0)
            print(f"  batch {size:>3}  {name:<12} {_pct(times)}")


def policy_cpu(batches: int) -> dict[str, float]:
    """CPU s per 1,000 events of the policy's step (decode, serve, encode) per plan."""
    codec = AvroCodec()
    messages = []
    for b in range(batches):
        ids, conf = _events(500, 1000 + b)
        cols = PredictionColumns(
            tenant="acme", model_name="m", model_version="v1", event_ids=ids,
            event_time_ms=np.full(500, 1_700_000_000_000), predicted_labels=["yes"] * 500,
            confidences=conf,
        )  # fmt: skip
        messages.append(codec.encode("PredictionBatch", cols.to_record()))
    out: dict[str, float] = {}
    print(f"policy step in process ({batches} PredictionBatch messages of 500 events):")
    for name, plan in PLANS.items():
        best = float("inf")
        for _ in range(3):  # the best of three, on a machine shared with other work
            t0 = time.process_time()
            for raw in messages:
                decoded = codec.decode(raw, {"PredictionBatch"})
                cols = PredictionColumns.from_record(decoded.record)  # type: ignore[union-attr]
                d = decide(cols, plan.threshold, plan.active, "registry", 0, plan.candidate)
                codec.encode("DecisionBatch", d.to_record())
            best = min(best, time.process_time() - t0)
        out[name] = best / (batches * 500) * 1000
        print(f"  {name:<12} {out[name]:.4f} CPU s per 1,000 events")
    base = out["active only"]
    for name in ("shadow", "canary 10 %"):
        print(f"  {name} costs {100 * (out[name] / base - 1):+.1f} % policy CPU")
    return out


def _register(settings: Settings, base: str, key: str) -> dict[str, Any]:
    with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=30) as c:
        r = c.post("/api/models", json={"name": "calibrate", "version": "v1"})
        r.raise_for_status()
        model: dict[str, Any] = r.json()
    now = int(time.time() * 1000)
    record = {
        "id": model["id"], "tenant": "acme", "name": "calibrate", "version": "v1",
        "stage": model["stage"], "parent_id": None, "abstain_threshold": 0.7,
        "calibrator_version": "temperature-active", "calibrator": json.dumps(ACTIVE_MAP),
        "candidate_version": "temperature-candidate",
        "candidate_calibrator": json.dumps(CANDIDATE_MAP), "rollout_stage": "canary",
        "canary_share": 0.1, "created_at_ms": now, "updated_at_ms": now,
    }  # fmt: skip
    producer = make_producer(settings)
    topic = Topics.for_namespace(settings.topic_namespace).model_updates
    producer.produce(
        topic,
        AvroCodec().encode("ModelVersion", record),
        model_key("acme", "calibrate", "v1").encode(),
    )
    producer.flush(10)
    return model


async def _key(settings: Settings) -> str:
    pool = await asyncpg.create_pool(settings.postgres_url, min_size=1, max_size=1)
    assert pool is not None
    try:
        return await create_key(pool, "acme", ["producer", "admin"])
    finally:
        await pool.close()


def _wait_http(url: str, proc: Any) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise SystemExit(f"the gateway exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer")


def gateway_latency(requests: int) -> None:
    with scratch_database(bench_settings()) as settings:
        keys = {"producer": asyncio.run(_key(settings))}
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        log = settings.logs_dir / "gateway-bench-rollout.log"
        proc = start_service("gateway", settings, log, CALIBER_GATEWAY_PORT=str(port),
                             CALIBER_METRICS_PORT="0")  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_http(base + "/health", proc)
            model = _register(settings, base, keys["producer"])
            with httpx.Client(base_url=base, headers={"X-API-Key": keys["producer"]},
                              timeout=30) as c:  # fmt: skip
                _wait_canary(c, model["id"])
                print(f"POST /api/calibrate, one client, {requests} requests per size:")
                for size in (1, 500):
                    ids, conf = _events(size, 7 + size)
                    events = [
                        {"event_id": e, "confidence": float(x)}
                        for e, x in zip(ids, conf.tolist(), strict=True)
                    ]
                    body = {"model_version_id": model["id"], "events": events}
                    for _ in range(20):
                        c.post("/api/calibrate", json=body).raise_for_status()
                    times = []
                    for _ in range(requests):
                        t0 = time.perf_counter()
                        c.post("/api/calibrate", json=body).raise_for_status()
                        times.append(time.perf_counter() - t0)
                    p50, p99 = np.percentile(np.asarray(times) * 1000, [50, 99])
                    print(f"  batch {size:>3}: p50 {p50:.2f} ms  p99 {p99:.2f} ms")
            print(f"  gateway peak RSS {peak_rss_mb(proc.pid):.0f} MB")
        finally:
            proc.terminate()
            proc.wait(30)


def _wait_canary(c: httpx.Client, model_id: int) -> None:
    deadline = time.monotonic() + 60
    body = {"model_version_id": model_id, "events": [{"event_id": "x", "confidence": 0.9}]}
    while time.monotonic() < deadline:
        r = c.post("/api/calibrate", json=body)
        if r.status_code == 200 and r.json()["rollout_stage"] == "canary":
            return
        time.sleep(0.5)
    raise SystemExit("the gateway never saw the canary on model-updates")


@app.command()
def main(
    repeat: int = 2000,
    batches: int = 200,
    requests: int = 300,
    gateway: bool = typer.Option(True, help="also measure POST /api/calibrate on the stack"),
) -> None:
    """Print serve-time latency, the policy CPU a candidate adds, and /api/calibrate."""
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    serve_latency(repeat)
    policy_cpu(batches)
    if gateway:
        gateway_latency(requests)


if __name__ == "__main__":
    app()
