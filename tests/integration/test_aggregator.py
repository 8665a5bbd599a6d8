"""The aggregator on the real stack: exact windows, late labels, alerts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis.asyncio as aioredis

from shared.calibration import ReliabilityStats, brier, classwise_ece, ece, mce
from shared.codec import AvroCodec
from shared.selective import risk_coverage
from shared.settings import Settings
from shared.topics import Topics
from shared.window_store import Totals, WindowReader
from simulator.generator import ModelSpec, generate
from tests.integration.aggregator_io import send_decisions_and_labels
from tests.integration.conftest import start_service
from tests.integration.gateway_client import make_keys, start_gateway
from tests.integration.kafka_io import TopicReader


def totals(settings: Settings, model: str, window: str) -> Totals:
    async def go() -> Totals:
        client = aioredis.Redis.from_url(settings.redis_dsn)
        try:
            return await WindowReader(client, settings.redis_prefix).totals(model, window)
        finally:
            await client.aclose()

    return asyncio.run(go())


def wait_counts(
    settings: Settings, model: str, window: str, n: int, labeled: int, timeout: float = 90
) -> Totals:
    deadline = time.monotonic() + timeout
    t = totals(settings, model, window)
    while time.monotonic() < deadline:
        t = totals(settings, model, window)
        if t.get("n") >= n and t.get("L") >= labeled:
            return t
        time.sleep(0.5)
    raise AssertionError(f"{model} {window}: n={t.get('n')}/{n}, labeled={t.get('L')}/{labeled}")


@pytest.fixture(scope="module")
def aggregator(
    isolated_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    logs = tmp_path_factory.mktemp("aggregator")
    proc = start_service(
        "aggregator",
        isolated_settings,
        logs / "aggregator.log",
        CALIBER_SNAPSHOT_INTERVAL_SECONDS="1",
        CALIBER_ALERT_MIN_LABELED="200",
    )
    yield isolated_settings
    proc.terminate()
    proc.wait(30)


def test_windows_equal_the_pure_functions(aggregator: Settings, tmp_path: Path) -> None:
    settings = aggregator
    now = int(time.time() * 1000)
    spec = ModelSpec(name="exact", version="v1", overconfidence=0.05, label_share=0.8)
    gen = generate(spec, 4_000, seed=5, start_ms=now - 20 * 60 * 1000, rate_per_s=4, grid=0.001)
    send_decisions_and_labels(settings, gen)
    labeled = gen.labeled
    model = gen.predictions.key
    t = wait_counts(settings, model, "1h", 4_000, int(labeled.sum()))
    assert t.get("n") == 4_000 and t.get("L") == int(labeled.sum())
    conf = gen.predictions.confidences[labeled]
    ok = gen.correct[labeled]
    probs = gen.predictions.probabilities
    assert probs is not None
    truth_idx = np.array([spec.classes.index(g) for g in gen.ground_truth])[labeled]
    raw = ReliabilityStats.from_arrays(conf, ok, probabilities=probs[labeled], true_index=truth_idx)
    streamed = t.reliability()
    assert ece(streamed) == pytest.approx(ece(raw), abs=1e-9)
    assert mce(streamed) == pytest.approx(mce(raw), abs=1e-9)
    assert brier(streamed) == pytest.approx(brier(raw), abs=1e-9)
    assert t.classwise_ece() == pytest.approx(classwise_ece(probs[labeled], truth_idx), abs=1e-9)
    raw_rc, got_rc = risk_coverage(conf, ok), t.histogram().curve()
    np.testing.assert_allclose(got_rc.coverage, raw_rc.coverage, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got_rc.risk, raw_rc.risk, rtol=0, atol=1e-12)
    assert got_rc.aurc == pytest.approx(raw_rc.aurc, abs=1e-12)

    # The same answers through the gateway, for the registered model.
    keys = make_keys(settings, {"admin": ("default", ["admin"])})
    base, gateway = start_gateway(settings, tmp_path)
    try:
        h = {"X-API-Key": keys["admin"]}
        mid = httpx.post(
            f"{base}/api/models", json={"name": "exact", "version": "v1"}, headers=h
        ).json()["id"]
        cal = httpx.get(
            f"{base}/api/calibration", params={"model_version_id": mid, "window": "1h"}, headers=h
        ).json()
        assert cal["n_labeled"] == int(labeled.sum())
        assert cal["ece"] == pytest.approx(ece(raw), abs=1e-9)
        assert sum(b["count"] for b in cal["bins"]) == int(labeled.sum())
        assert {"bin_lo", "bin_hi", "confidence", "accuracy", "count"} <= set(cal["bins"][0])
        rc = httpx.get(
            f"{base}/api/risk-coverage", params={"model_version_id": mid, "window": "1h"}, headers=h
        ).json()
        assert rc["aurc"] == pytest.approx(raw_rc.aurc, abs=1e-12)
        assert rc["e_aurc"] == pytest.approx(raw_rc.e_aurc, abs=1e-12)
        assert len(rc["points"]) == len(raw_rc.coverage)
        ts = httpx.get(
            f"{base}/api/timeseries", params={"model_version_id": mid, "window": "1h"}, headers=h
        ).json()
        assert sum(p["n_predictions"] for p in ts["points"]) == 4_000
        assert (
            httpx.get(
                f"{base}/api/calibration",
                params={"model_version_id": mid, "window": "2w"},
                headers=h,
            ).status_code
            == 422
        )
    finally:
        gateway.terminate()  # type: ignore[attr-defined]
        gateway.wait(30)  # type: ignore[attr-defined]


def test_late_labels_land_in_their_predictions_bucket(aggregator: Settings) -> None:
    settings = aggregator
    now = int(time.time() * 1000)
    three_hours_ago = now - 3 * 3600 * 1000
    gen = generate(
        ModelSpec(name="late", version="v1"), 300, seed=9, start_ms=three_hours_ago, rate_per_s=10
    )
    model = gen.predictions.key
    # Predictions first, no labels; then labels stamped now (hours after the predictions).
    send_decisions_and_labels(settings, gen, label_rows=np.empty(0, dtype=np.int64))
    wait_counts(settings, model, "24h", 300, 0)
    rows = np.arange(300)
    send_decisions_and_labels(
        settings, gen, label_rows=rows, label_time_ms=np.full(300, now), decisions=False
    )
    t = wait_counts(settings, model, "24h", 300, 300)
    assert t.get("L") == 300
    # The labels count in the hour of the predictions, not in the current hour.
    assert totals(settings, model, "1h").get("L") == 0
    hour = (three_hours_ago // 1000) // 3600 * 3600

    async def labeled_in_hours() -> int:
        client = aioredis.Redis.from_url(settings.redis_dsn)
        try:
            keys = [f"{settings.redis_prefix}agg:h:{model}:{hour + k * 3600}" for k in (0, 1)]
            return sum([int(await client.hget(k, "L") or 0) for k in keys])
        finally:
            await client.aclose()

    # 300 events over 30 s from three hours ago: the prediction's hour (or the next one).
    assert asyncio.run(labeled_in_hours()) == 300
    assert int(t.get("dl4")) + int(t.get("dl5")) == 300  # delays between 1 h and 12 h


def test_label_before_prediction_waits(aggregator: Settings) -> None:
    settings = aggregator
    now = int(time.time() * 1000)
    gen = generate(ModelSpec(name="early", version="v1"), 200, seed=2, start_ms=now - 60_000)
    send_decisions_and_labels(
        settings, gen, label_rows=np.arange(200), label_time_ms=np.full(200, now), decisions=False
    )
    time.sleep(2)
    assert totals(settings, gen.predictions.key, "1h").get("L") == 0
    send_decisions_and_labels(settings, gen, label_rows=np.empty(0, dtype=np.int64))
    t = wait_counts(settings, gen.predictions.key, "1h", 200, 200)
    assert t.get("L") == 200


def test_over_confident_model_raises_exactly_one_alert(aggregator: Settings) -> None:
    settings = aggregator
    topics = Topics.for_namespace(settings.topic_namespace)
    reader = TopicReader(settings, [topics.alerts], AvroCodec())
    now = int(time.time() * 1000)
    gen = generate(
        ModelSpec(name="overconfident", version="v1", overconfidence=0.15),
        1_000,
        seed=4,
        start_ms=now - 10 * 60_000,
        rate_per_s=5,
    )
    send_decisions_and_labels(settings, gen)
    wait_counts(settings, gen.predictions.key, "1h", 1_000, int(gen.labeled.sum()))

    def ece_alerts() -> list[dict[str, object]]:
        return [
            d.record
            for d in reader.records[topics.alerts]
            if d.record["model_name"] == "overconfident" and d.record["metric"] == "ece"
        ]

    reader.wait_for(lambda: len(ece_alerts()) >= 1, 30, "the ECE alert")
    reader.poll(5.0)  # five more evaluation rounds: the breach goes on, no new alert
    alerts = ece_alerts()
    assert len(alerts) == 1, alerts
    assert alerts[0]["severity"] == "critical"  # ECE ≈ 0.15 ≥ 1.5 × 0.05
    assert alerts[0]["value"] == pytest.approx(0.15, abs=0.03)
    reader.close()
