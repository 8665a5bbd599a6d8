"""The aggregator on the real stack: exact windows, late labels, alerts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import psycopg
import pytest
import redis.asyncio as aioredis

from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.metrics.calibration import (
    brier_from_probabilities,
    classwise_ece,
    ece_from_arrays,
    mce_from_arrays,
    nll_from_arrays,
    reliability_bins_from_arrays,
)
from shared.metrics.reliability import ReliabilityBin
from shared.metrics.selective import RiskCoverage, risk_coverage
from shared.runtime import redis_client
from shared.runtime.kafka import make_producer
from shared.runtime.redis_client import tagged
from shared.settings import Settings
from shared.windows.calibration import GRANULARITY, WINDOWS, Totals, WindowReader, bucket_key
from simulator.generator import Generated, ModelSpec, generate
from tests.integration.aggregator_io import send_decisions_and_labels
from tests.integration.conftest import running_service, start_service
from tests.integration.gateway_client import make_keys, start_gateway
from tests.integration.kafka_io import TopicReader


def totals(settings: Settings, model: str, window: str, fine: bool = False) -> Totals:
    """The window's counters (with ``fine``, its fine confidence histogram)."""

    async def go() -> Totals:
        client = redis_client.async_client(settings.redis_dsn)
        try:
            reader = WindowReader(client, settings.redis_prefix)
            return await reader.totals(model, window, fine=fine)
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
    with running_service(
        "aggregator",
        isolated_settings,
        tmp_path_factory.mktemp("aggregator") / "aggregator.log",
        CALIBER_SNAPSHOT_INTERVAL_SECONDS="1",
        CALIBER_ALERT_MIN_LABELED="200",
    ):
        yield isolated_settings


def in_window(event_ms: np.ndarray, window: str, now_s: int) -> np.ndarray:
    """Which events the window holds at ``now_s``: those whose bucket is one of its keys."""
    granularity, _ = WINDOWS[window]
    size = GRANULARITY[granularity]

    async def starts() -> list[int]:
        client = aioredis.Redis()  # never connects: only the key names are wanted
        try:
            keys = WindowReader(client, "x:").window_keys("m", window, now_s)
        finally:
            await client.aclose()
        return [int(k.rsplit(":", 1)[1]) for k in keys]

    return np.isin((event_ms // 1000) // size * size, asyncio.run(starts()))


@dataclass(frozen=True)
class Expected:
    n_predictions: int
    n_review: int
    n_labeled: int
    scalars: dict[str, float | None]
    bins: list[ReliabilityBin]
    curve: RiskCoverage


def expected_answer(gen: Generated, spec: ModelSpec, rows: np.ndarray) -> Expected:
    """The pure functions on the raw arrays of the events ``rows`` selects."""
    labeled = rows & gen.labeled
    conf = gen.predictions.confidences
    probs = gen.predictions.probabilities
    assert probs is not None
    truth = np.array([spec.classes.index(g) for g in gen.ground_truth])
    c, ok, p, t = conf[labeled], gen.correct[labeled], probs[labeled], truth[labeled]
    return Expected(
        n_predictions=int(rows.sum()),
        n_review=int((rows & (conf < 0.7)).sum()),
        n_labeled=int(labeled.sum()),
        scalars={
            "ece": ece_from_arrays(c, ok),
            "mce": mce_from_arrays(c, ok),
            "brier": brier_from_probabilities(p, t),
            "nll": nll_from_arrays(p, t),
            "classwise_ece": classwise_ece(p, t),
        },
        bins=reliability_bins_from_arrays(c, ok),
        curve=risk_coverage(c, ok),
    )


EXACTNESS = {"ece": 1e-12, "mce": 1e-12, "brier": 1e-9, "nll": 1e-9, "classwise_ece": 1e-9}
"""Confidences on the 0.001 grid are exact in the 1e-9 fixed point, so ECE and MCE agree to
float rounding; probability vectors are not on a grid, each term is rounded to 1e-9."""


def test_windows_equal_the_pure_functions(aggregator: Settings, tmp_path: Path) -> None:
    """Every window through the gateway equals the pure functions on the raw arrays:
    exactly (up to float rounding, 1e-12) for everything computed from confidences on the
    0.001 grid; within the 1e-9 fixed point for the probability forms (Brier, NLL,
    classwise ECE), whose probabilities are not on a grid."""
    settings = aggregator
    now = int(time.time() * 1000)
    spec = ModelSpec(name="exact", version="v1", overconfidence=0.05, label_share=0.8)
    # 20 minutes ago up to now: the 5-minute window holds part of the events, the others all.
    gen = generate(spec, 4_000, seed=5, start_ms=now - 20 * 60 * 1000, rate_per_s=3.5, grid=0.001)
    send_decisions_and_labels(settings, gen)
    model = gen.predictions.key
    wait_counts(settings, model, "1h", 4_000, int(gen.labeled.sum()))

    keys = make_keys(settings, {"admin": ("default", ["admin"])})
    base, gateway = start_gateway(settings, tmp_path)
    try:
        h = {"X-API-Key": keys["admin"]}
        mid = httpx.post(
            f"{base}/api/models", json={"name": "exact", "version": "v1"}, headers=h
        ).json()["id"]
        for window in ("5m", "1h", "24h", "7d", "all"):
            params = {"model_version_id": mid, "window": window}
            while True:  # the windows slide by the minute: ask within one minute
                before = int(time.time())
                cal = httpx.get(f"{base}/api/calibration", params=params, headers=h).json()
                rc = httpx.get(f"{base}/api/risk-coverage", params=params, headers=h).json()
                if before // 60 == int(time.time()) // 60:
                    break
            rows = in_window(gen.predictions.event_time_ms, window, before)
            want = expected_answer(gen, spec, rows)
            assert want.n_labeled > 0, window
            if window == "5m":
                assert want.n_predictions < 4_000
            else:
                assert want.n_predictions == 4_000, window
            assert cal["window"] == window
            assert cal["n_predictions"] == want.n_predictions, window
            assert cal["n_labeled"] == want.n_labeled, window
            assert cal["review_rate"] == pytest.approx(
                want.n_review / want.n_predictions, abs=1e-12
            )
            for field, tolerance in EXACTNESS.items():
                assert cal[field] == pytest.approx(want.scalars[field], abs=tolerance), field
            assert [b["count"] for b in cal["bins"]] == [b.count for b in want.bins]
            for got, exp in zip(cal["bins"], want.bins, strict=True):
                assert (got["bin_lo"], got["bin_hi"]) == pytest.approx((exp.lo, exp.hi))
                for f in ("confidence", "accuracy"):
                    value = getattr(exp, f)
                    assert got[f] == (None if value is None else pytest.approx(value, abs=1e-12))
            curve = want.curve
            assert rc["n_labeled"] == want.n_labeled
            assert rc["aurc"] == pytest.approx(curve.aurc, abs=1e-12)
            assert rc["e_aurc"] == pytest.approx(curve.e_aurc, abs=1e-12)
            for field, exp_values in (
                ("coverage", curve.coverage),
                ("risk", curve.risk),
                ("threshold", curve.thresholds),
            ):
                got_values = [point[field] for point in rc["points"]]
                np.testing.assert_allclose(got_values, exp_values, rtol=0, atol=1e-12)
        ts = httpx.get(
            f"{base}/api/timeseries", params={"model_version_id": mid, "window": "1h"}, headers=h
        ).json()
        points = ts["points"]
        assert sum(p["n_predictions"] for p in points) == 4_000
        assert sum(p["n_labeled"] for p in points) == int(gen.labeled.sum())
        assert {"ece", "brier", "accuracy", "coverage", "review_rate"} <= set(points[0])
        minute = (gen.predictions.event_time_ms // 1000) // 60 * 60
        first = points[0]
        sel = (minute == first["bucket_start"]) & gen.labeled
        assert first["ece"] == pytest.approx(
            ece_from_arrays(gen.predictions.confidences[sel], gen.correct[sel]), abs=1e-12
        )
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


def bucket_hashes(settings: Settings, model: str) -> dict[str, dict[str, int]]:
    """Every bucket hash of ``model`` (main and fine, every granularity), key → fields."""
    client = redis_client.sync_client(settings.redis_dsn, decode_responses=True)
    try:
        keys = list(client.scan_iter(match=f"{settings.redis_prefix}agg:*:{tagged(model)}:*"))
        return {str(k): {str(f): int(v) for f, v in client.hgetall(k).items()} for k in keys}
    finally:
        client.close()


def test_late_labels_land_in_their_predictions_bucket(aggregator: Settings) -> None:
    settings = aggregator
    now = int(time.time() * 1000)
    three_hours_ago = now - 3 * 3600 * 1000
    gen = generate(
        ModelSpec(name="late", version="v1"), 300, seed=9, start_ms=three_hours_ago, rate_per_s=2
    )
    model = gen.predictions.key
    # Predictions first, no labels; then labels stamped now (hours after the predictions).
    send_decisions_and_labels(settings, gen, label_rows=np.empty(0, dtype=np.int64))
    wait_counts(settings, model, "24h", 300, 0)
    before = bucket_hashes(settings, model)
    rows = np.arange(300)
    send_decisions_and_labels(
        settings, gen, label_rows=rows, label_time_ms=np.full(300, now), decisions=False
    )
    t = wait_counts(settings, model, "24h", 300, 300)
    assert t.get("L") == 300
    after = bucket_hashes(settings, model)
    # The labels count in the minute, hour and day of each prediction, nowhere else: no new
    # bucket (none for the labels' own time), each bucket changed by its own events only.
    prefix = f"{settings.redis_prefix}agg:"
    main = {k for k in after if k.split(":")[-3][-1] in GRANULARITY}
    assert main == set(before)
    event_s = gen.predictions.event_time_ms // 1000
    for granularity, size in GRANULARITY.items():
        starts, counts = np.unique(event_s // size * size, return_counts=True)
        for start, count in zip(starts.tolist(), counts.tolist(), strict=True):
            key = bucket_key(prefix, granularity, model, start)
            assert after[key]["L"] - before[key].get("L", 0) == count, key
            assert after[key]["n"] == before[key]["n"] == count, key  # predictions unchanged
            fine = after[bucket_key(prefix, granularity, model, start, "f")]
            assert sum(v for f, v in fine.items() if f[0] == "h") == count, key
        assert len([k for k in after if k.startswith(f"{prefix}{granularity}:")]) == len(starts)
        assert len([k for k in after if k.startswith(f"{prefix}{granularity}f:")]) == len(starts)
    # 300 events over 150 s: at least three minute buckets, so "the right one" means something.
    assert len([k for k in after if k.startswith(f"{prefix}m:")]) >= 3
    assert totals(settings, model, "1h").get("L") == 0  # nothing in the current hour
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


def test_two_tenants_with_the_same_event_ids_never_label_each_other(
    aggregator: Settings,
) -> None:
    """Event ids are unique within a tenant only. Globex's labels, sent while only Acme's
    predictions with those ids exist, wait for Globex's own predictions instead of labelling
    Acme's; each tenant ends with its own labels in its own counts."""
    settings = aggregator
    now = int(time.time() * 1000)
    acme, globex = (
        generate(ModelSpec(name="shared-ids", version="v1", tenant=t), 150, seed=s, start_ms=now)
        for t, s in (("acme", 4), ("globex", 5))
    )
    globex.predictions.event_ids = list(acme.predictions.event_ids)
    correct = {g.spec.tenant: int(np.sum(g.correct)) for g in (acme, globex)}
    assert correct["acme"] != correct["globex"], "a mix-up must be able to show"
    rows = np.arange(150)
    send_decisions_and_labels(settings, acme, label_rows=np.empty(0, dtype=np.int64))
    wait_counts(settings, acme.predictions.key, "1h", 150, 0)
    send_decisions_and_labels(settings, globex, label_rows=rows, decisions=False)
    time.sleep(2)
    assert totals(settings, acme.predictions.key, "1h").get("L") == 0
    send_decisions_and_labels(settings, globex, label_rows=np.empty(0, dtype=np.int64))
    wait_counts(settings, globex.predictions.key, "1h", 150, 150)
    assert totals(settings, acme.predictions.key, "1h").get("L") == 0
    send_decisions_and_labels(settings, acme, label_rows=rows, decisions=False)
    wait_counts(settings, acme.predictions.key, "1h", 150, 150)
    for gen in (acme, globex):
        t = totals(settings, gen.predictions.key, "1h")
        assert (t.get("n"), t.get("L")) == (150, 150), gen.spec.tenant
        assert int(t.reliability().correct_sum.sum()) == correct[gen.spec.tenant], gen.spec.tenant


def ece_alert_rows(settings: Settings, model_name: str) -> list[tuple[str, str, str, float]]:
    with psycopg.connect(settings.postgres_url) as conn:
        rows = conn.execute(
            "SELECT kind, severity, window_name, value FROM alerts "
            "WHERE model_name = %s AND metric = 'ece' ORDER BY created_at",
            (model_name,),
        ).fetchall()
    return [(str(k), str(s), str(w), float(v)) for k, s, w, v in rows]


def test_over_confident_model_raises_exactly_one_alert(
    aggregator: Settings, tmp_path: Path
) -> None:
    """On caliber.alerts and, through the recorder, in PostgreSQL: one breach, one alert."""
    settings = aggregator
    topics = Topics.for_namespace(settings.topic_namespace)
    reader = TopicReader(settings, [topics.alerts], AvroCodec())
    recorder = start_service("recorder", settings, tmp_path / "recorder.log")
    now = int(time.time() * 1000)
    gen = generate(
        ModelSpec(name="overconfident", version="v1", overconfidence=0.15),
        1_000,
        seed=4,
        start_ms=now - 10 * 60_000,
        rate_per_s=5,
    )
    try:
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
        assert alerts[0]["kind"] == "calibration"
        assert alerts[0]["threshold"] == pytest.approx(0.05)
        assert alerts[0]["value"] == pytest.approx(0.15, abs=0.03)
        deadline = time.monotonic() + 30
        while not ece_alert_rows(settings, "overconfident") and time.monotonic() < deadline:
            time.sleep(0.3)
        rows = ece_alert_rows(settings, "overconfident")
        assert len(rows) == 1, rows
        kind, severity, window, value = rows[0]
        assert (kind, severity, window) == ("calibration", "critical", "1h")
        assert value == pytest.approx(float(alerts[0]["value"]))  # type: ignore[arg-type]
    finally:
        reader.close()
        recorder.terminate()
        recorder.wait(30)


def test_an_undecodable_message_becomes_a_dead_letter_and_counting_goes_on(
    aggregator: Settings,
) -> None:
    settings = aggregator
    topics = Topics.for_namespace(settings.topic_namespace)
    reader = TopicReader(settings, [topics.deadletter], AvroCodec())
    producer = make_producer(settings)
    producer.produce(topics.decisions, b"not avro at all", b"default/garbled/v1")
    assert producer.flush(10) == 0
    gen = generate(
        ModelSpec(name="after-garbage", version="v1"),
        200,
        seed=9,
        start_ms=int(time.time() * 1000) - 60_000,
    )
    send_decisions_and_labels(settings, gen)
    try:
        reader.wait_for(
            lambda: any(
                d.record["service"] == "aggregator" for d in reader.records[topics.deadletter]
            ),
            60,
            "the aggregator's dead letter",
        )
        (letter,) = [
            d.record
            for d in reader.records[topics.deadletter]
            if d.record["service"] == "aggregator"
        ]
        assert letter["error_code"] == "not_avro" and letter["raw"] == b"not avro at all"
        assert letter["source_topic"] == topics.decisions
        t = wait_counts(settings, gen.predictions.key, "1h", 200, int(gen.labeled.sum()))
        assert t.get("n") == 200
    finally:
        reader.close()
