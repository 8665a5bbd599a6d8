"""A lost or stale store is detected, and rebuilt from Kafka exactly, on a stack of its own.

The module starts a private stack (its own ports and stack home, like the demo's test), runs
traffic through every service, and then, one test after another: deletes PostgreSQL's data
directory, deletes Redis's append-only files, and restores Redis from a copy taken mid-run.
Each time ``stack up`` must name the store and the repair command, a service must refuse to
start, and after ``caliber rebuild …`` (run twice, and once killed half-way) every count must
equal the one measured before the loss.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from services.drift.settings import DriftSettings
from shared.settings import Settings
from tests.integration.conftest import start_service
from tests.integration.gateway_client import make_keys, wait_http
from tests.ports import free_pair, free_port
from tooling.log_reader import Progress
from tooling.rebuild import COUNTS, rebuild_postgres, rebuild_redis
from tooling.stack.postgres import Postgres, data_root
from tooling.stack.redis import Redis

ROOT = Path(__file__).resolve().parents[2]
WORKERS = ("ingest", "policy", "aggregator", "drift", "recorder")
WORKER_ENV = {
    "CALIBER_SNAPSHOT_INTERVAL_SECONDS": "1",
    "CALIBER_ALERT_MIN_LABELED": "100",
    "CALIBER_DRIFT_REFERENCE_EVENTS": "300",
    "CALIBER_DRIFT_MIN_SAMPLES": "100",
    "CALIBER_DRIFT_EVAL_SECONDS": "1",
    "CALIBER_POLICY_CATCH_UP_SECONDS": "2",
}


class Killed(Exception):
    """Stands for the rebuild's process being killed half-way."""


def _killer() -> Any:
    calls: list[int] = []

    def report(progress: Progress, events: int) -> None:
        calls.append(events)
        if len(calls) == 3:
            raise Killed

    return report


def _log_tails(logs: Path, lines: int = 40) -> str:
    """The last lines of each server log of a stack home (the home is removed after a
    failed start, its logs with it)."""
    out = []
    for log in sorted(logs.glob("*.log")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        out.append(f"\n--- {log.name}\n" + "\n".join(tail))
    return "".join(out)


@dataclass
class Stack:
    settings: Settings
    env: dict[str, str]
    logs: Path
    snapshot: Path
    baseline: dict[str, Any] = field(default_factory=dict)
    sent: list[dict[str, Any]] = field(default_factory=list)

    def caliber(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tooling.cli", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("rebuild") / "home"
    ports = {
        "CALIBER_KAFKA_PORT": free_pair(),
        "CALIBER_REDIS_PORT": free_pair(),
        "CALIBER_POSTGRES_PORT": free_pair(),
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALIBER_")}
    env.update({k: str(v) for k, v in ports.items()})
    env.update(CALIBER_STACK_HOME=str(home), CALIBER_LOG_LEVEL="WARNING")
    settings = Settings(
        kafka_port=ports["CALIBER_KAFKA_PORT"],
        redis_port=ports["CALIBER_REDIS_PORT"],
        postgres_port=ports["CALIBER_POSTGRES_PORT"],
        stack_home=home,
    )
    logs = home.parent / "service-logs"
    logs.mkdir()
    st = Stack(settings, env, logs, home.parent / "redis-snapshot")
    try:
        up = st.caliber("stack", "up", timeout=600)
        assert up.returncode == 0, up.stdout + up.stderr + _log_tails(settings.logs_dir)
        assert "identity  stack" in up.stdout
        yield st
    finally:
        st.caliber("stack", "down", timeout=120)
        shutil.rmtree(data_root(settings), ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)


# --- traffic and measurement --------------------------------------------------------------


def _services(st: Stack, names: tuple[str, ...], stack: ExitStack) -> str | None:
    """Start ``names`` (and the gateway); returns the gateway's base URL."""
    for name in names:
        proc = start_service(name, st.settings, st.logs / f"{name}.log", **WORKER_ENV)
        stack.callback(_stop, proc)
    port = free_port()
    proc = start_service(
        "gateway",
        st.settings,
        st.logs / "gateway.log",
        CALIBER_GATEWAY_PORT=str(port),
        CALIBER_GATEWAY_KEY_CACHE_SECONDS="0",
    )
    stack.callback(_stop, proc)
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/health", proc=proc, timeout=300)
    return base


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _key(st: Stack) -> dict[str, str]:
    key = make_keys(st.settings, {"admin": ("default", ["admin"])})["admin"]
    return {"X-API-Key": key}


def _events(model: str, version: str, n: int, overconfident: bool, seed: int) -> list[dict]:
    import random

    rng = random.Random(seed)
    out = []
    for i in range(n):
        conf = round(rng.uniform(0.55, 0.99), 3)
        right = rng.random() < (0.6 if overconfident else conf)
        label = rng.choice("abc")
        event = {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128))),
            "model_name": model,
            "model_version": version,
            "predicted_label": label,
            "confidence": conf,
            "features": {"x1": rng.gauss(0, 1)},
        }
        if i % 10 < 7:
            event["ground_truth"] = label if right else ("z" + label)
        out.append(event)
    return out


def _send(base: str, headers: dict[str, str], events: list[dict]) -> None:
    for i in range(0, len(events), 100):
        r = httpx.post(
            f"{base}/api/predictions/batch",
            json={"events": events[i : i + 100]},
            headers=headers,
            timeout=30,
        )
        assert r.status_code == 202, r.text


def _pg_counts(settings: Settings) -> dict[str, Any]:
    with psycopg.connect(settings.postgres_url) as conn:
        out: dict[str, Any] = {
            name: conn.execute(q).fetchone()[0]  # type: ignore[index]
            for name, q in COUNTS.items()
        }
        out["registry"] = conn.execute(
            "SELECT id, tenant_id, name, version, stage, parent_id FROM model_versions ORDER BY id"
        ).fetchall()
        out["alert ids"] = sorted(
            str(r[0]) for r in conn.execute("SELECT alert_id FROM alerts").fetchall()
        )
    return out


def _api(base: str, headers: dict[str, str]) -> dict[str, Any]:
    models = httpx.get(f"{base}/api/models", headers=headers, timeout=10).json()
    out: dict[str, Any] = {"models": sorted((m["id"], m["name"], m["version"]) for m in models)}
    for m in models:
        q = {"model_version_id": m["id"], "window": "all"}
        cal = httpx.get(f"{base}/api/calibration", params=q, headers=headers, timeout=10).json()
        rc = httpx.get(f"{base}/api/risk-coverage", params=q, headers=headers, timeout=10).json()
        queue = httpx.get(
            f"{base}/api/review-queue",
            params={"model_version_id": m["id"], "limit": 1000},
            headers=headers,
            timeout=10,
        ).json()
        out[m["version"]] = {
            "ece": cal["ece"],
            "brier": cal["brier"],
            "n_predictions": cal["n_predictions"],
            "n_labeled": cal["n_labeled"],
            "aurc": rc["aurc"],
            "queue": len(queue),
        }
    return out


def _measure(st: Stack, base: str, headers: dict[str, str]) -> dict[str, Any]:
    return {"postgres": _pg_counts(st.settings), "api": _api(base, headers)}


def _settled(st: Stack, base: str, headers: dict[str, str], expect: int) -> dict[str, Any]:
    """Measure once every event has been counted everywhere and nothing moves any more."""
    deadline = time.monotonic() + 300
    last: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        now = _measure(st, base, headers)
        versions = [v for k, v in now["api"].items() if k != "models"]
        done = (
            now["postgres"]["predictions"] == expect
            and sum(v["n_predictions"] for v in versions) == expect
        )
        if done and now == last:
            return now
        last = now
        time.sleep(2)
    raise AssertionError(f"counts did not settle: {last}")


def test_traffic_runs_through_every_service(stack: Stack) -> None:
    with ExitStack() as running:
        base = _services(stack, WORKERS, running)
        assert base is not None
        headers = _key(stack)
        v1 = httpx.post(
            f"{base}/api/models",
            json={"name": "m", "version": "v1", "stage": "production"},
            headers=headers,
        ).json()
        httpx.post(
            f"{base}/api/models",
            json={"name": "m", "version": "v2", "parent_id": v1["id"]},
            headers=headers,
        ).raise_for_status()
        first = _events("m", "v1", 800, False, 1) + _events("m", "v2", 800, True, 2)
        _send(base, headers, first)
        _settled(stack, base, headers, len(first))
        # Redis as a snapshot would hold it mid-run (restored by the last test).
        redis_home = Redis(stack.settings).home
        subprocess.run(
            ["redis-cli", "-p", str(stack.settings.redis_port), "BGREWRITEAOF"], check=True
        )
        time.sleep(2)
        shutil.copytree(redis_home, stack.snapshot, ignore=shutil.ignore_patterns("*.pid"))
        second = _events("m", "v1", 700, False, 3) + _events("m", "v2", 700, True, 4)
        _send(base, headers, second)
        stack.sent = first + second
        queue = httpx.get(
            f"{base}/api/review-queue", params={"limit": 5}, headers=headers, timeout=10
        ).json()
        for item in queue:
            r = httpx.post(
                f"{base}/api/review/{item['event_id']}",
                json={"ground_truth": item["predicted_label"]},
                headers=headers,
            )
            assert r.status_code == 200, r.text
        stack.baseline = _settled(stack, base, headers, len(stack.sent))
        # Wait for the resolutions to land, then for the alert evaluations to be done.
        time.sleep(4)
        stack.baseline = _settled(stack, base, headers, len(stack.sent))
    pg = stack.baseline["postgres"]
    assert pg["predictions"] == 3000 and pg["review resolutions"] == 5, pg
    assert pg["review queue"] > 0 and pg["alerts"] > 0, pg
    assert len(pg["registry"]) == 2


def _refused(st: Stack, service: str, store: str) -> None:
    log = st.logs / f"refused-{service}.log"
    proc = start_service(service, st.settings, log)
    assert proc.wait(240) == 3, log.read_text()
    assert f"refuses to start: {store}" in log.read_text()


def test_lost_postgres_is_reported_and_rebuilt_exactly(stack: Stack) -> None:
    pg = Postgres(stack.settings)
    pg.stop()
    shutil.rmtree(pg.data)
    up = stack.caliber("stack", "up")
    assert up.returncode == 2, up.stdout + up.stderr
    [line] = [ln for ln in up.stderr.splitlines() if ln.startswith("mismatch:")]
    assert "PostgreSQL holds no stack identity" in line and "caliber rebuild postgres" in line
    _refused(stack, "recorder", "PostgreSQL")

    # Killed half-way (after its third batch), then run to the end, then once more.
    with pytest.raises(Killed):
        asyncio.run(rebuild_postgres(stack.settings, _killer(), 0, batch_records=5))
    for _ in range(2):
        done = stack.caliber("rebuild", "postgres")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "events/s" in done.stdout and "predictions" in done.stdout
    status = stack.caliber("stack", "status")
    assert status.returncode == 0, status.stdout + status.stderr

    with ExitStack() as running:
        base = _services(stack, (), running)
        assert base is not None
        headers = _key(stack)
        after = _settled(stack, base, headers, len(stack.sent))
        assert after == stack.baseline
        # A version registered after the rebuild gets an id no version ever had.
        new = httpx.post(
            f"{base}/api/models", json={"name": "m", "version": "v3"}, headers=headers
        ).json()
        assert new["id"] > max(r[0] for r in stack.baseline["postgres"]["registry"])
        stack.baseline = _settled(stack, base, headers, len(stack.sent))


def _redis_rebuilt_exactly(stack: Stack) -> None:
    settings = DriftSettings(**stack.settings.model_dump())
    with pytest.raises(Killed):
        asyncio.run(rebuild_redis(settings, _killer(), 0, batch_records=5))
    for _ in range(2):
        done = stack.caliber("rebuild", "redis")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "events/s" in done.stdout and "prediction ids (dedupe)" in done.stdout
    status = stack.caliber("stack", "status")
    assert status.returncode == 0, status.stdout + status.stderr
    with ExitStack() as running:
        base = _services(stack, ("ingest", "policy", "aggregator", "recorder"), running)
        assert base is not None
        headers = _key(stack)
        after = _settled(stack, base, headers, len(stack.sent))
        assert after == stack.baseline
        # A re-sent event is still a duplicate; a new one is counted.
        fresh = _events("m", "v1", 1, False, len(stack.sent))
        _send(base, headers, [stack.sent[0], *fresh])
        stack.sent += fresh
        again = _settled(stack, base, headers, len(stack.sent))
        assert again["postgres"]["predictions"] == stack.baseline["postgres"]["predictions"] + 1
        stack.baseline = again


def test_lost_redis_is_reported_and_rebuilt_exactly(stack: Stack) -> None:
    server = Redis(stack.settings)
    server.stop()
    for item in server.home.iterdir():
        if item.is_dir():
            shutil.rmtree(item)
        elif item.suffix in (".aof", ".rdb"):
            item.unlink()
    up = stack.caliber("stack", "up")
    assert up.returncode == 2, up.stdout + up.stderr
    [line] = [ln for ln in up.stderr.splitlines() if ln.startswith("mismatch:")]
    assert "Redis holds no stack identity" in line and "caliber rebuild redis" in line
    _refused(stack, "aggregator", "Redis")
    _redis_rebuilt_exactly(stack)


def test_redis_restored_from_an_older_snapshot_is_detected_and_rebuilt(stack: Stack) -> None:
    server = Redis(stack.settings)
    server.stop()
    shutil.rmtree(server.home)
    shutil.copytree(stack.snapshot, server.home)
    up = stack.caliber("stack", "up")
    assert up.returncode == 2, up.stdout + up.stderr
    [line] = [ln for ln in up.stderr.splitlines() if ln.startswith("mismatch:")]
    assert line.startswith("mismatch: Redis is older than the log"), line
    assert "caliber rebuild redis" in line
    _refused(stack, "drift", "Redis")
    _redis_rebuilt_exactly(stack)
