"""Before labels on the real stack: the performance estimate and the threshold advice through
the gateway, and the performance alerts of the aggregator (a covariate shift whose labels
are withheld; an over-confident model whose labels show the estimate was off)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest

from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.estimation.cbpe import DEFAULT_Z, realised_from_arrays
from shared.estimation.risk_threshold import advise
from shared.metrics.selective import ConfidenceHistogram
from shared.runtime import redis_client
from shared.settings import Settings
from shared.windows.calibration import Totals, alert_key
from simulator.generator import Generated, ModelSpec, generate
from tests.integration.aggregator_io import send_decisions_and_labels
from tests.integration.conftest import running_service
from tests.integration.gateway_client import make_keys, start_gateway
from tests.integration.kafka_io import TopicReader
from tests.integration.test_aggregator import totals

SHIFT_FLOOR = 0.78


@dataclass
class Env:
    settings: Settings
    base: str
    key: str

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, headers={"X-API-Key": self.key}, timeout=30)

    def register(self, name: str, threshold: float = 0.7) -> int:
        with self.client() as c:
            r = c.post(
                "/api/models",
                json={"name": name, "version": "v1", "abstain_threshold": threshold},
            )
        assert r.status_code == 201, r.text
        return int(r.json()["id"])


@pytest.fixture(scope="module")
def env(isolated_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    logs = tmp_path_factory.mktemp("estimation")
    keys = make_keys(isolated_settings, {"admin": ("default", ["admin"])})
    base, gateway = start_gateway(isolated_settings, logs)
    with running_service(
        "aggregator",
        isolated_settings,
        logs / "aggregator.log",
        CALIBER_SNAPSHOT_INTERVAL_SECONDS="1",
        CALIBER_ALERT_MIN_LABELED="200",
        CALIBER_ESTIMATE_FLOORS=f'{{"default/shifted": {SHIFT_FLOOR}}}',
    ):
        try:
            yield Env(isolated_settings, base, keys["admin"])
        finally:
            gateway.terminate()  # type: ignore[attr-defined]
            gateway.wait(30)  # type: ignore[attr-defined]


def wait_totals(settings: Settings, model: str, done: Any, timeout: float = 90) -> Totals:
    deadline = time.monotonic() + timeout
    while True:
        t = totals(settings, model, "1h")
        if done(t):
            return t
        if time.monotonic() > deadline:
            raise AssertionError(f"{model}: counters {dict(list(t.c.items())[:12])}")
        time.sleep(0.5)


def test_estimate_and_advice_answer_what_the_arrays_say(env: Env) -> None:
    mid = env.register("steady")
    now = int(time.time() * 1000)
    gen = generate(
        ModelSpec(name="steady", version="v1", label_share=0.8),
        4_000,
        seed=5,
        start_ms=now - 15 * 60_000,
        rate_per_s=10,
    )
    send_decisions_and_labels(env.settings, gen)
    n_labeled = int(gen.labeled.sum())
    wait_totals(
        env.settings,
        gen.predictions.key,
        lambda t: t.get("n") >= 4_000 and t.get("Ln") >= n_labeled,
    )
    conf, lab = gen.predictions.confidences, gen.labeled
    auto = conf >= 0.7  # identity calibration: calibrated = raw
    with env.client() as c:
        r = c.get(f"/api/models/{mid}/performance-estimate", params={"window": "1h"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["z"] == DEFAULT_Z and body["n_predictions"] == 4_000
        assert body["estimated"]["n"] == 4_000
        assert body["estimated"]["accuracy"] == pytest.approx(conf.mean(), abs=1e-9)
        sd = np.sqrt((conf * (1 - conf)).sum()) / conf.size
        assert body["estimated"]["sd"] == pytest.approx(sd, rel=1e-6)
        assert body["estimated_auto"]["accuracy"] == pytest.approx(conf[auto].mean(), abs=1e-9)
        expected = realised_from_arrays(conf[lab], gen.correct[lab])
        assert expected is not None
        assert body["labeled"]["realised_accuracy"] == pytest.approx(expected.realised)
        assert body["labeled"]["gap"] == pytest.approx(expected.gap, abs=1e-9)
        assert body["labeled"]["outside_band"] is expected.outside_band
        assert body["labeled_auto"]["estimate"]["n"] == int((lab & auto).sum())

        r = c.get(
            f"/api/models/{mid}/threshold-advice",
            params={"target_risk": 0.1, "delta": 0.05, "window": "1h"},
        )
        assert r.status_code == 200, r.text
        advice = r.json()
        want = advise(ConfidenceHistogram.from_arrays(conf[lab], gen.correct[lab]), 0.1, 0.05)
        assert want.threshold is not None
        assert advice["threshold"] == want.threshold
        assert advice["coverage"] == pytest.approx(want.coverage)
        assert advice["review_rate"] == pytest.approx(want.review_rate)
        assert advice["n_labeled"] == n_labeled
        assert advice["current_threshold"] == 0.7
        assert "learn-then-test" in advice["method"]

        r = c.get(f"/api/models/{mid}/threshold-advice", params={"target_risk": 0.0001})
        assert r.status_code == 200, r.text
        assert r.json()["threshold"] is None and r.json()["reason"]

        # Applying the advice through the registry's threshold update.
        r = c.patch(f"/api/models/{mid}", json={"abstain_threshold": advice["threshold"]})
        assert r.status_code == 200, r.text
        assert r.json()["abstain_threshold"] == want.threshold
        assert c.get(f"/api/models/{mid}").json()["abstain_threshold"] == want.threshold


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"target_risk": 0}, "target_risk"),
        ({"target_risk": 1}, "target_risk"),
        ({"target_risk": 1.5}, "target_risk"),
        ({"delta": 0}, "delta"),
        ({"delta": -0.1}, "delta"),
        ({"delta": "x"}, "delta"),
        ({"window": "3d"}, "window"),
    ],
)
def test_bad_advice_input_is_422_naming_the_field(
    env: Env, params: dict[str, Any], field: str
) -> None:
    mid = env.register(f"bad-{field}-{abs(hash(str(params))) % 10_000}")
    with env.client() as c:
        r = c.get(f"/api/models/{mid}/threshold-advice", params=params)
    assert r.status_code == 422, r.text
    assert any(d["loc"][-1] == field for d in r.json()["detail"]), r.text


def test_unknown_model_is_404_naming_it(env: Env) -> None:
    with env.client() as c:
        for path in ("threshold-advice", "performance-estimate"):
            r = c.get(f"/api/models/987654/{path}")
            assert r.status_code == 404, r.text
            assert "model_id" in r.json()["detail"] and "987654" in r.json()["detail"]


def performance_alerts(reader: TopicReader, topics: Topics, model: str) -> list[dict[str, Any]]:
    return [
        d.record
        for d in reader.records[topics.alerts]
        if d.record["model_name"] == model and d.record["kind"] == "performance"
    ]


def shifted_scenario(now_ms: int) -> Generated:
    """The drift scenario's model and its covariate shift from the middle of the run on,
    the shifted inputs landing where the model is less sure (still calibrated)."""
    n = 12_000
    spec = ModelSpec(
        name="shifted",
        version="v1",
        numeric_features=4,
        categorical_features=1,
        label_share=0.5,
        feature_shift={"x1": 1.0, "x2": 1.0},
        shift_at=n // 2,
        confidence_shift=0.35,
    )
    return generate(spec, n, seed=23, start_ms=now_ms - 25 * 60_000, rate_per_s=10)


def test_covariate_shift_alerts_before_any_label_of_the_shifted_period(env: Env) -> None:
    settings = env.settings
    topics = Topics.for_namespace(settings.topic_namespace)
    reader = TopicReader(settings, [topics.alerts], AvroCodec())
    gen = shifted_scenario(int(time.time() * 1000))
    key, half = gen.predictions.key, len(gen.predictions) // 2
    before = np.arange(len(gen.predictions)) < half
    pre_labels = np.flatnonzero(gen.labeled & before)
    try:
        # The period before the shift, with its labels: the reference estimate is set.
        first = Generated(
            gen.spec,
            gen.predictions.take(np.arange(half)),
            gen.ground_truth[:half],
            gen.correct[:half],
            gen.labeled[:half],
            gen.late[:half],
            gen.label_time_ms[:half],
            gen.expected_ece,
        )
        send_decisions_and_labels(settings, first, label_rows=pre_labels)
        wait_totals(settings, key, lambda t: t.get("En") >= half and t.get("Ln") >= len(pre_labels))
        ref_key = alert_key(f"{settings.redis_prefix}agg:", key, "", "estimate-reference")
        r = redis_client.sync_client(settings.redis_dsn)
        deadline = time.monotonic() + 30
        while not r.exists(ref_key) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert r.exists(ref_key)
        reader.poll(3.0)
        assert not performance_alerts(reader, topics, "shifted")

        # The shifted period, its labels withheld.
        second = Generated(
            gen.spec,
            gen.predictions.take(np.arange(half, len(gen.predictions))),
            gen.ground_truth[half:],
            gen.correct[half:],
            gen.labeled[half:],
            gen.late[half:],
            gen.label_time_ms[half:],
            gen.expected_ece,
        )
        send_decisions_and_labels(settings, second, label_rows=np.array([], dtype=np.int64))

        def fired() -> bool:
            metrics = {a["metric"] for a in performance_alerts(reader, topics, "shifted")}
            return {"estimate_drop", "estimated_error"} <= metrics

        reader.wait_for(fired, 60, "the performance alerts of the shift")
        t = totals(settings, key, "1h")
        assert t.get("L") == len(pre_labels)  # no label of the shifted period has arrived
        alerts = {a["metric"]: a for a in performance_alerts(reader, topics, "shifted")}
        drop = alerts["estimate_drop"]
        assert drop["severity"] in ("warning", "critical") and drop["threshold"] == 1.0
        assert drop["value"] > 1.0 and "below the reference" in drop["details"]["reason"]
        floor = alerts["estimated_error"]
        mixed = gen.predictions.confidences.mean()
        assert floor["value"] == pytest.approx(1 - mixed, abs=0.01)
        assert floor["threshold"] == pytest.approx(1 - SHIFT_FLOOR)
        assert "below the floor" in floor["details"]["reason"]
        assert "estimate_gap" not in alerts
        r.close()
    finally:
        reader.close()


def test_over_confident_model_reports_the_estimate_gap(env: Env) -> None:
    settings = env.settings
    topics = Topics.for_namespace(settings.topic_namespace)
    reader = TopicReader(settings, [topics.alerts], AvroCodec())
    gen = generate(
        ModelSpec(name="boastful", version="v1", overconfidence=0.15),
        2_000,
        seed=9,
        start_ms=int(time.time() * 1000) - 10 * 60_000,
        rate_per_s=5,
    )
    try:
        send_decisions_and_labels(settings, gen)

        def gap() -> bool:
            return any(
                a["metric"] == "estimate_gap"
                for a in performance_alerts(reader, topics, "boastful")
            )

        reader.wait_for(gap, 60, "the estimate_gap alert")
        alert = next(
            a
            for a in performance_alerts(reader, topics, "boastful")
            if a["metric"] == "estimate_gap"
        )
        assert alert["severity"] == "critical" and alert["value"] > 1.5
        assert "stale" in alert["details"]["reason"]
        assert float(alert["details"]["realised_accuracy"]) < float(
            alert["details"]["estimated_accuracy"]
        )
    finally:
        reader.close()
