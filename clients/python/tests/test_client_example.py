"""The README's client example, run as written against the real stack (REST: no Kafka)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from shared.settings import Settings
from tests.integration.conftest import start_service
from tests.integration.gateway_client import make_keys, start_gateway

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[3] / "README.md"
TENANT = "acme"


def example_code() -> str:
    text = README.read_text()
    found = re.search(r"<!-- client-example -->\n```python\n(.*?)```", text, re.S)
    assert found, "the README lost its client example"
    return found.group(1)


@pytest.fixture(scope="module")
def stack(
    isolated_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, str]]]:
    logs = tmp_path_factory.mktemp("example")
    keys = make_keys(
        isolated_settings,
        {"admin": (TENANT, ["admin"]), "user": (TENANT, ["producer", "viewer"])},
    )
    base, gateway = start_gateway(isolated_settings, logs)
    procs: list[Any] = [gateway]
    try:
        r = httpx.post(
            base + "/api/models",
            headers={"X-API-Key": keys["admin"]},
            json={"name": "breast-cancer", "version": "logreg", "abstain_threshold": 0.9},
        )
        assert r.status_code == 201, r.text
        with psycopg.connect(isolated_settings.postgres_url) as conn:
            deadline = time.monotonic() + 30  # the registry reaches the policy first
            while conn.execute("SELECT count(*) FROM outbox WHERE published_at IS NULL").fetchone()[
                0
            ]:  # type: ignore[index]
                assert time.monotonic() < deadline, "the outbox was not published"
                time.sleep(0.3)
        for name in ("ingest", "policy", "recorder"):
            procs.append(start_service(name, isolated_settings, logs / f"{name}.log"))
        yield base, keys
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)


def test_the_readme_example_runs_as_written(
    stack: tuple[str, dict[str, str]],
    isolated_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base, keys = stack
    monkeypatch.setenv("CALIBER_URL", base)
    monkeypatch.setenv("CALIBER_API_KEY", keys["user"])
    monkeypatch.delenv("CALIBER_KAFKA", raising=False)
    scope: dict[str, Any] = {"__name__": "example"}
    exec(compile(example_code(), "README.md#client-example", "exec"), scope)
    results, caliber = scope["results"], scope["caliber"]
    try:
        assert caliber.transport == "rest"
        assert len(results) == 169  # breast cancer's 569 rows, 400 used to fit
        # identity calibrator: the calibrated confidence is the model's own top probability
        proba = scope["model"].predict_proba(scope["X"][400:]).max(axis=1)
        assert [r["confidence"] for r in results] == pytest.approx(proba.tolist(), abs=1e-12)
        assert all(r["decision"] == ("auto" if r["confidence"] >= 0.9 else "review")
                   for r in results)  # fmt: skip
        assert {r["decision"] for r in results} == {"auto", "review"}
    finally:
        caliber.close()
        scope["monitored"].calibrator.close()
    ids = [r["event_id"] for r in results]
    deadline = time.monotonic() + 90
    with psycopg.connect(isolated_settings.postgres_url) as conn:
        while time.monotonic() < deadline:
            n, labeled, review = conn.execute(
                "SELECT count(*), count(ground_truth), count(*) FILTER (WHERE decision = 'review')"
                " FROM predictions WHERE event_id = ANY(%s::uuid[])",
                (ids,),
            ).fetchone()  # type: ignore[misc]
            if (n, labeled) == (169, 169):
                break
            time.sleep(0.5)
    assert (n, labeled) == (169, 169)
    # the policy decided as the client did (same map, same threshold)
    assert review == sum(r["decision"] == "review" for r in results)
