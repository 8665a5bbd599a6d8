"""Killing the drift worker twice during a 50,000-event run changes no count.

The window (1 h) holds the whole run, so after the reference window (5,000 events) every
other event must be counted exactly once: each part's samples in the final scores are
exactly 45,000, and the reference profile is the one the first 5,000 events give.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import redis

from services.drift.reference import build_from_chunks, chunk
from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.runtime import redis_client
from shared.runtime.kafka import make_producer
from shared.settings import Settings
from shared.windows.drift import DriftKeys
from tests.integration.conftest import start_service
from tests.integration.drift_io import STEP_MS, Scenario, batches, send

TOTAL = 50_000
REFERENCE = 5_000
ENV = {
    "CALIBER_DRIFT_WINDOW_SECONDS": "3600",
    "CALIBER_DRIFT_EVAL_SECONDS": "0.5",
    "CALIBER_DRIFT_REFERENCE_EVENTS": str(REFERENCE),
    # Small fetches: many Redis applies, so the kills land between and during them.
    "CALIBER_DRIFT_MAX_MESSAGES": "3",
}


def progress(client: redis.Redis, keys: DriftKeys, s: Scenario, model: str) -> int:
    wm = client.hget(keys.watermarks, model)
    return 0 if wm is None else (int(wm) - s.start_ms) // STEP_MS + 1


def scores(client: redis.Redis, keys: DriftKeys, model: str) -> dict[str, Any] | None:
    raw = client.get(keys.scores(model))
    return json.loads(raw) if raw else None


def test_two_kills_leave_exact_counts(isolated_settings: Settings, tmp_path: Path) -> None:
    settings = isolated_settings
    topics = Topics.for_namespace(settings.topic_namespace)
    codec = AvroCodec()
    s = Scenario("kills", numeric=3, categorical=1)
    sent = list(batches(s, TOTAL, seed=5))
    producer = make_producer(settings)
    for cols in sent:
        send(producer, topics.predictions, codec, cols)
    producer.flush(30)
    model = sent[0].key
    client = redis_client.sync_client(settings.redis_dsn, socket_timeout=30)
    keys = DriftKeys(settings.redis_prefix)
    log = tmp_path / "drift.log"
    try:
        # One kill while the reference window fills, one while counting.
        for target in (3_000, 30_000):
            proc = start_service("drift", settings, log, **ENV)
            deadline = time.monotonic() + 180
            while progress(client, keys, s, model) < target and time.monotonic() < deadline:
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            assert progress(client, keys, s, model) < TOTAL, "the kill came too late"
        proc = start_service("drift", settings, log, **ENV)
        try:
            deadline = time.monotonic() + 180
            body = scores(client, keys, model)
            while time.monotonic() < deadline:
                body = scores(client, keys, model)
                if body and body["window_end_ms"] == s.time_of(TOTAL - 1):
                    break
                time.sleep(0.3)
            assert body is not None and body["window_end_ms"] == s.time_of(TOTAL - 1), body
            counted = {f["feature"]: f["n_samples"] for f in body["features"]}
            assert counted == dict.fromkeys(counted, TOTAL - REFERENCE), counted
            assert len(counted) == 2 + 3 + 1
            first = sent[: REFERENCE // 500]
            expected = build_from_chunks(model, [chunk(c, slice(0, len(c))) for c in first])
            assert body["reference_version"] == expected.version
        finally:
            proc.terminate()
            proc.wait(30)
    finally:
        client.close()
