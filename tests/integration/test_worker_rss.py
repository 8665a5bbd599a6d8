"""The largest message of each kind the limits allow costs every running worker and the
gateway a bounded amount of resident memory.

Every worker (ingest, policy, aggregator, drift, recorder) and the gateway run as processes
on the shared stack (an isolated namespace). After a warm-up event has gone through all of
them, their peak RSS (VmHWM) is the baseline; then they get, on Kafka, the largest columnar
batch (about 1 MB: 95 events of 10 max-length 4-byte UTF-8 categories) and the largest
single event (256 features, 1,000 classes, 32 metadata entries, every string at its
limit), and on REST the largest batch under the body limit and a 100,000-event columnar
drift reference of 20 features. Once everything is processed, each process's growth of
peak RSS must stay under ``BOUND_FACTOR`` times the largest message it handled plus a fixed
allowance (``ALLOWANCE_MB``: allocator arenas, a batch of librdkafka buffers), stated in
the README with the figures measured.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg

from services.gateway.settings import GatewaySettings
from shared.contracts.codec import AvroCodec
from shared.contracts.limits import DEFAULT_LIMITS as L
from shared.contracts.topics import Topics
from shared.settings import Settings
from tests.integration.conftest import start_service
from tests.integration.edge_io import inference_event, produce_raw
from tests.integration.gateway_client import make_keys, start_gateway
from tests.ports import free_port
from tests.unit.test_memory_bounds import largest_batch
from tooling.benchmarking import peak_rss_mb, scrape

CODEC = AvroCodec()
WORKERS = ("ingest", "policy", "aggregator", "drift", "recorder")
BOUND_FACTOR = 12
ALLOWANCE_MB = 64.0
WIDE = "\U0001f600"  # 4 bytes in UTF-8, 4 bytes a character in CPython's memory


def _text(prefix: str, width: int) -> str:
    return prefix.ljust(width, WIDE)


def largest_event() -> dict[str, Any]:
    """One InferenceEvent with every count and string at its limit."""
    w = L.max_string
    classes = [_text(f"c{i:04d}", w) for i in range(L.max_classes)]
    rest = 0.5 / (L.max_classes - 1)
    probs = {c: rest for c in classes}
    probs[classes[0]] = 0.5
    features: dict[str, float | str] = {
        _text(f"f{i:03d}", w): _text(f"v{i:03d}", w) if i % 2 else float(i)
        for i in range(L.max_features)
    }
    metadata = {
        _text(f"m{i:02d}", w): _text(f"x{i:02d}", L.max_metadata_value)
        for i in range(L.max_metadata)
    }
    return inference_event(
        event_id=str(uuid.uuid4()),
        predicted_label=classes[0],
        confidence=0.5,
        probabilities=probs,
        features=features,
        metadata=metadata,
        ground_truth=classes[1],
    )


def largest_rest_batch(model: int, max_body: int) -> tuple[bytes, int]:
    """As many max-length events as the request limits allow, under the body limit."""
    w = L.max_string

    def event(i: int) -> dict[str, Any]:
        return {
            "event_id": str(uuid.uuid4()),
            "model_version_id": model,
            "predicted_label": _text(f"p{i % 3}", w),
            "confidence": 0.75,
            "features": {"amount": float(i), "country": _text(f"k{i % 5}", w)},
        }

    one = len(json.dumps(event(0)).encode())
    n = min(L.max_request_events, (max_body - 64) // (one + 2))
    body = json.dumps({"events": [event(i) for i in range(n)]}).encode()
    while len(body) > max_body:
        n -= 10
        body = json.dumps({"events": [event(i) for i in range(n)]}).encode()
    return body, n


def reference_body(model: int, n: int = 100_000) -> bytes:
    rng = np.random.default_rng(13)
    features: dict[str, Any] = {f"x{i}": rng.normal(size=n).round(6).tolist() for i in range(19)}
    features["kind"] = [f"k{j % 7}" for j in range(n)]
    return json.dumps(
        {
            "model_version_id": model,
            "confidence": rng.uniform(0.5, 1.0, n).round(6).tolist(),
            "predicted_label": [f"c{j % 3}" for j in range(n)],
            "features": features,
        }
    ).encode()


def _predictions(settings: Settings) -> int:
    with psycopg.connect(settings.postgres_url) as conn:
        row = conn.execute("SELECT count(*) FROM predictions").fetchone()
    assert row is not None
    return int(row[0])


def _wait_rows(settings: Settings, n: int, procs: dict[str, Any], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, p in procs.items():
            assert p.poll() is None, f"{name} exited with {p.returncode}"
        if _predictions(settings) >= n:
            return
        time.sleep(0.5)
    raise AssertionError(f"{_predictions(settings)} predictions recorded, expected {n}")


def _drift_events(port: int) -> float:
    try:
        text = scrape(port)
    except OSError:
        return 0.0
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("caliber_drift_events_total{")
    )


def _settle(base: str, headers: dict[str, str], model: int, drift_port: int, n: int) -> None:
    """Wait until the aggregator (through the API) and the drift worker (its metrics) have
    counted ``n`` events; the recorder has (see :func:`_wait_rows`)."""
    deadline = time.monotonic() + 180
    counted = drifted = 0.0
    while time.monotonic() < deadline:
        r = httpx.get(
            f"{base}/api/calibration",
            params={"model_version_id": model, "window": "all"},
            headers=headers,
            timeout=10,
        )
        counted = r.json()["n_predictions"] if r.status_code == 200 else 0
        drifted = _drift_events(drift_port)
        if counted >= n and drifted >= n:
            return
        time.sleep(0.5)
    raise AssertionError(f"aggregator counted {counted}, drift {drifted}, of {n} events")


def test_the_largest_messages_keep_every_process_under_its_rss_bound(
    isolated_settings: Settings, tmp_path: Path
) -> None:
    settings = isolated_settings
    topics = Topics.for_namespace(settings.topic_namespace)
    drift_port = free_port()  # the drift worker's metrics tell when it has counted
    procs: dict[str, Any] = {
        name: start_service(
            name,
            settings,
            tmp_path / f"{name}.log",
            **({"CALIBER_METRICS_PORT": str(drift_port)} if name == "drift" else {}),
        )
        for name in WORKERS
    }
    base, gateway = start_gateway(settings, tmp_path)
    procs["gateway"] = gateway
    try:
        key = make_keys(settings, {"a": ("acme", ["admin"])})["a"]
        headers = {"X-API-Key": key}
        r = httpx.post(
            f"{base}/api/models", json={"name": "fraud", "version": "v1"}, headers=headers
        )
        assert r.status_code == 201, r.text
        model = int(r.json()["id"])

        # Warm-up: one small event through every worker, then the baseline.
        produce_raw(
            settings, topics.inference_raw, [CODEC.encode("InferenceEvent", inference_event())]
        )
        _wait_rows(settings, 1, procs)
        _settle(base, headers, model, drift_port, 1)
        before = {name: peak_rss_mb(p.pid) for name, p in procs.items()}

        cols, batch = largest_batch()
        event = CODEC.encode("InferenceEvent", largest_event())
        produce_raw(settings, topics.inference_raw, [batch, event])
        max_body = GatewaySettings(**settings.model_dump()).gateway_max_body_bytes
        rest, n_rest = largest_rest_batch(model, max_body)
        r = httpx.post(
            f"{base}/api/predictions/batch",
            content=rest,
            headers={**headers, "Content-Type": "application/json"},
            timeout=120,
        )
        assert r.status_code == 202, r.text[:500]
        reference = reference_body(model)
        r = httpx.post(
            f"{base}/api/drift/reference/columns",
            content=reference,
            headers={**headers, "Content-Type": "application/json"},
            timeout=300,
        )
        assert r.status_code == 201, r.text[:500]
        total = 1 + len(cols) + 1 + n_rest
        _wait_rows(settings, total, procs)
        _settle(base, headers, model, drift_port, total)
        after = {name: peak_rss_mb(p.pid) for name, p in procs.items()}
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            p.wait(30)

    largest = {name: max(len(batch), len(event), len(rest)) for name in WORKERS}
    largest["gateway"] = max(len(rest), len(reference))
    print(
        f"\nmessages: batch {len(batch) / 1e6:.2f} MB ({len(cols)} events), single event "
        f"{len(event) / 1e6:.2f} MB, REST batch {len(rest) / 1e6:.2f} MB ({n_rest} events), "
        f"reference {len(reference) / 1e6:.1f} MB"
    )
    print(f"{'process':<11} {'baseline':>9} {'peak':>9} {'growth':>8} {'bound':>8}  MiB")
    bounds = {}
    for name in procs:
        bounds[name] = ALLOWANCE_MB + BOUND_FACTOR * largest[name] / 2**20
        growth = after[name] - before[name]
        print(
            f"{name:<11} {before[name]:>9.0f} {after[name]:>9.0f} {growth:>8.1f} "
            f"{bounds[name]:>8.0f}"
        )
    over = {n: after[n] - before[n] for n in procs if after[n] - before[n] > bounds[n]}
    assert not over, f"peak RSS grew beyond the bound: {over}"
