"""Real scikit-learn models through the whole pipeline: Caliber's ECE is the outputs' ECE."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.settings import Settings
from simulator.gateway_client import GatewayClient
from simulator.real_models import Streamed, register_and_stream
from tests.integration.conftest import start_service
from tests.integration.gateway_client import make_keys, start_gateway


@pytest.fixture(scope="module")
def streamed(
    isolated_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str, list[Streamed]]]:
    logs: Path = tmp_path_factory.mktemp("real-models")
    key = make_keys(isolated_settings, {"admin": ("lab", ["admin"])})["admin"]
    base, gateway = start_gateway(isolated_settings, logs)
    workers = [
        start_service(n, isolated_settings, logs / f"{n}.log")
        for n in ("ingest", "policy", "aggregator")
    ]
    try:
        with GatewayClient(base, key) as registry:
            out = register_and_stream(isolated_settings, registry, ["digits", "breast-cancer"])
        yield base, key, out
    finally:
        for p in [*workers, gateway]:
            p.terminate()  # type: ignore[attr-defined]
        for p in [*workers, gateway]:
            p.wait(30)  # type: ignore[attr-defined]


def _calibration(base: str, key: str, model_id: int, n: int, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    body: Any = None
    while time.monotonic() < deadline:
        r = httpx.get(
            f"{base}/api/calibration",
            params={"model_version_id": model_id, "window": "1h"},
            headers={"X-API-Key": key},
            timeout=10,
        )
        body = r.json()
        if r.status_code == 200 and body["n_labeled"] >= n:
            return body
        time.sleep(0.5)
    raise AssertionError(f"model {model_id}: calibration never reached {n} labeled: {body}")


def test_measured_ece_equals_the_outputs_ece(streamed: tuple[str, str, list[Streamed]]) -> None:
    base, key, versions = streamed
    assert [v.key for v in versions] == [
        "lab/digits/logreg",
        "lab/digits/naive-bayes",
        "lab/breast-cancer/logreg",
        "lab/breast-cancer/naive-bayes",
    ]
    for v in versions:
        cal = _calibration(base, key, v.model_version_id, v.events)
        assert cal["n_labeled"] == v.events
        assert cal["ece"] == pytest.approx(v.expected_ece, abs=1e-9), v.key
    by_key = {v.key: v for v in versions}
    # Naive Bayes is the over-confident one on both data sets.
    for dataset in ("digits", "breast-cancer"):
        nb, lr = by_key[f"lab/{dataset}/naive-bayes"], by_key[f"lab/{dataset}/logreg"]
        assert nb.expected_ece > lr.expected_ece


def test_the_candidate_descends_from_the_production_version(
    streamed: tuple[str, str, list[Streamed]],
) -> None:
    base, key, _ = streamed
    h = {"X-API-Key": key}
    models = {
        (m["name"], m["version"]): m for m in httpx.get(f"{base}/api/models", headers=h).json()
    }
    lr, nb = models["digits", "logreg"], models["digits", "naive-bayes"]
    assert lr["stage"] == "production" and nb["stage"] == "staging"
    assert nb["parent_id"] == lr["id"]
