"""Debian's Prometheus scrapes running Caliber services; their metrics come back through its
HTTP API with the values the services computed."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shared.metrics.calibration import ece_from_arrays
from shared.settings import Settings
from simulator.generator import ModelSpec, generate
from tests.integration.aggregator_io import send_decisions_and_labels
from tests.integration.conftest import start_service
from tests.integration.gateway_client import (
    insert_predictions,
    make_keys,
    start_gateway,
    wait_http,
)
from tests.integration.test_aggregator import wait_counts
from tests.ports import free_port
from tooling.stack.prometheus import PrometheusServer, ScrapeJob


def wait_query(
    prom: PrometheusServer, expr: str, size: int = 1, timeout: float = 30
) -> list[dict[str, Any]]:
    """The result of ``expr`` once it has ``size`` series."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = prom.query(expr)
        if len(result) >= size:
            return result
        time.sleep(0.5)
    raise AssertionError(f"{expr} returned nothing within {timeout:.0f} s: {prom.targets()}")


@pytest.mark.timeout(420)  # the first run installs Debian's prometheus
def test_prometheus_reads_caliber_metrics(isolated_settings: Settings, tmp_path: Path) -> None:
    settings = isolated_settings
    now = int(time.time() * 1000)
    spec = ModelSpec(name="scraped", version="v1", overconfidence=0.1, label_share=1.0)
    gen = generate(spec, 1_000, seed=11, start_ms=now - 10 * 60_000, rate_per_s=5, grid=0.001)
    send_decisions_and_labels(settings, gen)
    model = gen.predictions.key
    metrics_port = free_port()
    aggregator = start_service(
        "aggregator",
        settings,
        tmp_path / "aggregator.log",
        CALIBER_METRICS_PORT=str(metrics_port),
        CALIBER_SNAPSHOT_INTERVAL_SECONDS="0.5",
    )
    queued = 7
    insert_predictions(
        settings,
        [
            {
                "event_id": str(uuid.uuid4()),
                "tenant": "default",
                "model_name": "scraped",
                "model_version": "v1",
                "model_version_id": None,
                "event_time": datetime.now(UTC),
            }
            for _ in range(queued)
        ],
    )
    key = make_keys(settings, {"scraper": ("ops", ["viewer"])})["scraper"]
    base, gateway = start_gateway(settings, tmp_path)
    try:
        wait_http(f"http://127.0.0.1:{metrics_port}/metrics", proc=aggregator)
        wait_counts(settings, model, "1h", 1_000, 1_000)
        jobs = [
            ScrapeJob("aggregator", f"127.0.0.1:{metrics_port}"),
            ScrapeJob("gateway", base.removeprefix("http://"), bearer_token=key),
        ]
        with PrometheusServer(tmp_path / "prometheus", free_port(), jobs, 0.5) as prom:
            up = wait_query(prom, "up == 1", size=2)
            assert {r["metric"]["job"] for r in up} == {"aggregator", "gateway"}, prom.targets()
            # The aggregator's ECE gauge, as Prometheus stored it, equals the pure function
            # on the raw arrays (all 1,000 events are labeled and inside the last hour).
            expected = ece_from_arrays(gen.predictions.confidences, gen.correct)
            assert expected is not None and expected > 0.05  # over-confident by 0.1
            series = wait_query(prom, f'caliber_ece{{model="{model}", window="1h"}}')
            assert len(series) == 1
            assert series[0]["metric"]["job"] == "aggregator"
            assert float(series[0]["value"][1]) == pytest.approx(expected, abs=1e-9)
            slo = wait_query(prom, "caliber_ece_slo")
            assert float(slo[0]["value"][1]) == pytest.approx(0.05)
            # The gateway is scraped with its key; the queue depth is counted per scrape.
            depth = wait_query(prom, 'caliber_review_queue_depth{job="gateway"}')
            assert set(depth[0]["metric"]) == {"__name__", "instance", "job"}  # no model names
            assert float(depth[0]["value"][1]) == queued
    finally:
        gateway.terminate()  # type: ignore[attr-defined]
        gateway.wait(30)  # type: ignore[attr-defined]
        aggregator.terminate()
        aggregator.wait(30)
    assert prom.pid is None
