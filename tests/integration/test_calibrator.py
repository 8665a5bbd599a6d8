"""The calibrator on the real stack: an ECE alert starts a run that stages a calibrator,
the gateway activates it through the registry, and every run, set and artifact reads back
through the API. Predictions are written straight into PostgreSQL, as the recorder would.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import numpy as np
import pytest

from services.calibrator.leader import LEADER_LOCK, Leadership
from services.calibrator.store import LEASE_SQL, CalibratorStore, load_set
from shared.contracts.batches import PredictionColumns, model_key
from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.metrics.calibration import ece_from_arrays
from shared.recalibration.maps import from_registry
from shared.runtime.kafka import make_producer
from shared.settings import Settings
from tests.integration.conftest import running_service
from tests.integration.gateway_client import make_keys, start_gateway
from tests.integration.kafka_io import TopicReader
from tests.integration.pipeline_io import KeyedReader, produce

CODEC = AvroCodec()
CALIBRATOR_POLL_S = 0.5
CALIBRATOR_ENV = {
    "CALIBER_CALIBRATOR_SCHEDULE_SECONDS": "0",
    "CALIBER_CALIBRATOR_ON_PROMOTION": "false",
    "CALIBER_CALIBRATOR_POLL_SECONDS": "0.5",
    "CALIBER_CALIBRATOR_BOOTSTRAP_RESAMPLES": "300",
}


@dataclass
class Env:
    settings: Settings
    base: str
    keys: dict[str, str]
    topics: Topics
    calibrator: Any
    logs: Path

    def client(self, who: str = "admin") -> httpx.Client:
        return httpx.Client(base_url=self.base, headers={"X-API-Key": self.keys[who]}, timeout=30)


def _rows(n: int, seed: int, start_ms: int, span_ms: int, overconfidence: float,
          collapse: bool = False) -> list[tuple[Any, ...]]:  # fmt: skip
    """Binary predictions with probability vectors; P(correct | c) = c − overconfidence."""
    rng = np.random.default_rng(seed)
    conf = np.round(rng.uniform(0.5, 1.0, n), 3)
    p_right = np.full(n, 0.6) if collapse else np.clip(conf - overconfidence, 0, 1)
    right = rng.random(n) < p_right
    times = start_ms + np.sort(rng.integers(0, span_ms, n))
    out = []
    for i in range(n):
        pred = "yes" if rng.random() < 0.5 else "no"
        other = "no" if pred == "yes" else "yes"
        out.append(
            (
                uuid.UUID(int=int(rng.integers(0, 2**62)) * 2**64 + i),
                datetime.fromtimestamp(times[i] / 1000, tz=UTC),
                pred,
                float(conf[i]),
                pred if right[i] else other,
                bool(right[i]),
                json.dumps({pred: float(conf[i]), other: float(1 - conf[i])}),
            )
        )
    return out


def insert(settings: Settings, model: dict[str, Any], rows: list[tuple[Any, ...]]) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(settings.postgres_url)
        try:
            await conn.executemany(
                "INSERT INTO predictions (event_id, tenant_id, model_name, model_version, "
                "model_version_id, event_time, predicted_label, confidence, "
                "calibrated_confidence, status, ground_truth, correct, label_source, labeled_at, "
                "probabilities, decided_at) VALUES ($1, 'acme', $8, $9, $10, $2, $3, $4, $4, "
                "'resolved', $5, $6, 'feed', $2, $7::jsonb, now())",
                [(*r, model["name"], model["version"], model["id"]) for r in rows],
            )
        finally:
            await conn.close()

    asyncio.run(go())


@pytest.fixture(scope="module")
def env(isolated_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    keys = make_keys(
        isolated_settings, {"admin": ("acme", ["admin"]), "viewer": ("acme", ["viewer"])}
    )
    logs = tmp_path_factory.mktemp("calibrator")
    base, gateway = start_gateway(isolated_settings, logs)
    with running_service("calibrator", isolated_settings, logs / "calibrator.log",
                         **CALIBRATOR_ENV) as calibrator:  # fmt: skip
        yield Env(
            isolated_settings,
            base,
            keys,
            Topics.for_namespace(isolated_settings.topic_namespace),
            calibrator,
            logs,
        )
    gateway.terminate()  # type: ignore[attr-defined]
    gateway.wait(30)  # type: ignore[attr-defined]


def register(c: httpx.Client, name: str) -> dict[str, Any]:
    r = c.post("/api/models", json={"name": name, "version": "v1", "stage": "production"})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def wait_run(env: Env, model_id: int, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    with env.client() as c:
        while time.monotonic() < deadline:
            assert env.calibrator.poll() is None, "the calibrator exited"
            runs = c.get(f"/api/models/{model_id}/calibration-runs").json()
            done = [r for r in runs if r["status"] == "done"]
            if done:
                full: dict[str, Any] = c.get(f"/api/calibration-runs/{done[0]['run_id']}").json()
                return full
            time.sleep(1)
    raise AssertionError(f"no finished run of model version {model_id} in {timeout} s")


def ece_alert(model: dict[str, Any], value: float) -> dict[str, Any]:
    return {
        "alert_id": str(uuid.uuid4()), "tenant": "acme", "kind": "calibration",
        "severity": "critical", "model_name": model["name"], "model_version": model["version"],
        "model_version_id": None, "metric": "ece", "feature": None, "method": None,
        "value": value, "threshold": 0.05, "window": "1h", "reference_version": None,
        "n_samples": 5000, "created_at_ms": int(time.time() * 1000), "details": {},
    }  # fmt: skip


def test_ece_alert_stages_a_calibrator_that_fixes_the_next_window(env: Env) -> None:
    now = int(time.time() * 1000)
    with env.client() as c:
        model = register(c, "fraud")
    # Calibrated two hours ago (the reference, outside the set's hour), over-confident by
    # 0.15 from 40 minutes ago on.
    insert(env.settings, model, _rows(2000, 1, now - 7_000_000, 600_000, 0.0))
    insert(env.settings, model, _rows(6000, 2, now - 2_400_000, 2_300_000, 0.15))
    reader = TopicReader(env.settings, [env.topics.alerts, env.topics.model_updates], CODEC)
    try:
        _stage_and_activate(env, model, reader, now)
    finally:
        reader.close()  # a consumer left to the garbage collector can hang the session


def _stage_and_activate(env: Env, model: dict[str, Any], reader: TopicReader, now: int) -> None:
    producer = make_producer(env.settings)
    key = model_key("acme", model["name"], model["version"]).encode()
    producer.produce(env.topics.alerts, CODEC.encode("Alert", ece_alert(model, 0.15)), key)
    assert producer.flush(10) == 0

    run = wait_run(env, model["id"])
    assert run["trigger"] == "calibration_alert" and run["trigger_detail"]["metric"] == "ece"
    assert run["verdict"] == "staged", run["reason"]
    assert run["advice"] == "recalibrate"
    before, after = run["result"]["before"], run["result"]["after"]
    assert before["ece"] > 0.1 and after["ece"] < before["ece"] / 2
    assert len(before["bins"]) == len(after["bins"]) == 10
    assert run["result"]["advice"]["current"]["ece"] > run["result"]["advice"]["reference"]["ece"]

    with env.client("viewer") as c:
        manifest = c.get(f"/api/calibration-sets/{run['set_hash']}").json()["manifest"]
        assert manifest["model_version_id"] == model["id"] and manifest["classes"] == ["no", "yes"]
        assert manifest["rows"] > 4000 and manifest["sampling"]["method"] == "all"
        art = c.get(f"/api/calibration-artifacts/{run['artifact_version']}")
        assert art.status_code == 200 and art.json()["set_hash"] == run["set_hash"]
        staged = c.get(f"/api/models/{model['id']}/calibrator").json()
        assert staged == {"active": "identity", "staged": run["artifact_version"],
                          "staged_run_id": run["run_id"]}  # fmt: skip

    # Rebuilding the set from the same window and label cut-off gives the same hash.
    async def rebuild() -> str:
        pool = await asyncpg.create_pool(env.settings.postgres_url, min_size=1, max_size=1)
        assert pool is not None
        try:
            store = CalibratorStore(pool)
            row = await store.model_by_id(model["id"])
            assert row is not None
            async with pool.acquire() as conn:
                again = await load_set(
                    conn, row, manifest["window_start_ms"], manifest["window_end_ms"],
                    manifest["label_cutoff_ms"], manifest["sampling"]["max_rows"],
                )  # fmt: skip
            return again.hash
        finally:
            await pool.close()

    assert asyncio.run(rebuild()) == run["set_hash"]

    # The run is announced on the alerts topic.
    def announced() -> bool:
        return any(
            r.record["kind"] == "recalibration"
            and r.record["details"].get("run_id") == run["run_id"]
            for r in reader.records[env.topics.alerts]
        )

    reader.wait_for(announced, 60, "the recalibration alert")

    # Activation is a registry change on model-updates; the policy builds this map from it.
    with env.client() as c:
        r = c.post(f"/api/models/{model['id']}/calibrator", json={})
        assert r.status_code == 200, r.text
        assert r.json()["calibrator_version"] == run["artifact_version"]

    def activated() -> bool:
        return any(
            r.record["id"] == model["id"]
            and r.record["calibrator_version"] == run["artifact_version"]
            for r in reader.records[env.topics.model_updates]
        )

    reader.wait_for(activated, 60, "the activated calibrator on model-updates")
    update = next(
        r.record
        for r in reversed(reader.records[env.topics.model_updates])
        if r.record["id"] == model["id"]
    )
    calibration = from_registry(update["calibrator_version"], update["calibrator"])
    nxt = _rows(5000, 3, now, 600_000, 0.15)  # the next window, still drifted
    conf = np.array([r[3] for r in nxt])
    probs = np.array([[json.loads(r[6])[k] for k in ("no", "yes")] for r in nxt])
    correct = np.array([r[5] for r in nxt])
    assert ece_from_arrays(conf, correct) > 0.1
    assert ece_from_arrays(calibration.apply(conf, probs, None, ["no", "yes"]), correct) < 0.05

    # The policy itself, reading the registry from model-updates, decides the next window
    # with the activated map and records its version with every decision.
    batches = [
        PredictionColumns(
            tenant="acme",
            model_name=model["name"],
            model_version=model["version"],
            event_ids=[str(r[0]) for r in nxt[i : i + 500]],
            event_time_ms=np.array([int(r[1].timestamp() * 1000) for r in nxt[i : i + 500]]),
            predicted_labels=[r[2] for r in nxt[i : i + 500]],
            confidences=conf[i : i + 500],
            class_labels=["no", "yes"],
            probabilities=probs[i : i + 500],
        )
        for i in range(0, len(nxt), 500)
    ]
    decisions = KeyedReader(env.settings, [env.topics.decisions])
    try:
        with running_service("policy", env.settings, env.logs / "policy.log") as policy:
            produce(
                env.settings,
                [
                    (env.topics.predictions, "PredictionBatch", b.to_record(), b.key)
                    for b in batches
                ],
            )
            decisions.wait_for(
                lambda: sum(len(r.record["statuses"]) for r in decisions.received) >= len(nxt),
                90,
                "the policy's decisions on the next window",
                [policy],
            )
    finally:
        decisions.close()
    by_id = {}
    for r in decisions.received:
        assert r.record["calibrator_version"] == run["artifact_version"]
        for eid, c in zip(r.record["predictions"]["event_ids"], r.record["calibrated_confidences"],
                          strict=True):  # fmt: skip
            by_id[eid] = c
    decided = np.array([by_id[str(r[0])] for r in nxt])
    assert ece_from_arrays(decided, correct) < 0.05  # under the SLO


def test_collapsed_discrimination_advises_retrain_and_stages_nothing(env: Env) -> None:
    now = int(time.time() * 1000)
    with env.client() as c:
        model = register(c, "collapse")
        insert(env.settings, model, _rows(2000, 4, now - 7_000_000, 600_000, 0.0))
        insert(env.settings, model, _rows(6000, 5, now - 2_400_000, 2_300_000, 0.0, True))
        r = c.post(f"/api/models/{model['id']}/recalibrate", json={})
        assert r.status_code == 202
        run_id = r.json()["run_id"]
        run = wait_run(env, model["id"])
        assert run["run_id"] == run_id and run["trigger"] == "manual"
        assert run["advice"] == "retrain", run["result"]["advice"]
        assert run["verdict"] in ("not_staged", "rejected")
        assert c.get(f"/api/models/{model['id']}/calibrator").json()["staged"] is None


def test_bad_requests_are_4xx_naming_the_field(env: Env) -> None:
    with env.client() as c:
        model = register(c, "badreq")
        r = c.post(f"/api/models/{model['id']}/recalibrate", json={"methods": ["magic"]})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "methods"]
        assert c.post("/api/models/999999/recalibrate", json={}).status_code == 404
        r = c.post(f"/api/models/{model['id']}/calibrator", json={"artifact_version": "nope"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "artifact_version"]
        r = c.post(f"/api/models/{model['id']}/calibrator", json={})
        assert r.status_code == 422  # nothing staged
        assert c.get(f"/api/calibration-runs/{uuid.uuid4()}").status_code == 404
        assert c.get("/api/calibration-sets/" + "0" * 64).status_code == 404
    with env.client("viewer") as c:
        assert c.post(f"/api/models/{model['id']}/recalibrate", json={}).status_code == 403


@pytest.mark.parametrize("case", ["ten_rows", "one_class"])
def test_bad_sets_end_in_a_failed_run_with_its_reason(env: Env, case: str) -> None:
    now = int(time.time() * 1000)
    with env.client() as c:
        model = register(c, f"bad-{case.replace('_', '-')}")
        rows = _rows(10 if case == "ten_rows" else 1000, 6, now - 1_000_000, 900_000, 0.1)
        if case == "one_class":
            rows = [(*r[:4], "yes", r[2] == "yes", r[6]) for r in rows]
        insert(env.settings, model, rows)
        assert c.post(f"/api/models/{model['id']}/recalibrate", json={}).status_code == 202
        run = wait_run(env, model["id"])
    assert run["verdict"] == "failed"
    assert ("10 labeled rows" if case == "ten_rows" else "one_class") in run["reason"]
    assert env.calibrator.poll() is None


def test_a_run_left_running_by_a_killed_worker_is_redone_once(env: Env) -> None:
    """A replica killed between claim and record leaves a running row. While the replica
    that claimed it lives (its lease held) no sibling touches it; once it is gone, the
    running calibrator queues it again and records it exactly once."""
    now = int(time.time() * 1000)
    with env.client() as c:
        model = register(c, "killed")
    insert(env.settings, model, _rows(3000, 7, now - 2_000_000, 1_900_000, 0.1))

    async def go() -> tuple[list[Any], list[Any]]:
        pool = await asyncpg.create_pool(env.settings.postgres_url, min_size=1, max_size=2)
        assert pool is not None
        try:
            run_id = uuid.uuid4()
            # Claim as a replica would (running, attempt 1, leased on its connection)...
            claimer = await asyncpg.connect(env.settings.postgres_url)
            await claimer.execute(
                "INSERT INTO calibration_runs (run_id, tenant_id, model_version_id, "
                "model_name, model_version, trigger, status, started_at, attempts) "
                "VALUES ($1, 'acme', $2, $3, 'v1', 'manual', 'running', now(), 1)",
                run_id, model["id"], model["name"],
            )  # fmt: skip
            await claimer.execute(f"SELECT pg_advisory_lock({LEASE_SQL})", run_id)
            await asyncio.sleep(4 * CALIBRATOR_POLL_S)  # the service's leader looks, leaves it
            while_alive = list(
                await pool.fetch(
                    "SELECT status, attempts FROM calibration_runs WHERE run_id = $1", run_id
                )
            )
            await claimer.close()  # ...and die: the lease goes with the connection
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                rows = await pool.fetch(
                    "SELECT status, attempts, verdict FROM calibration_runs WHERE run_id = $1",
                    run_id,
                )
                if rows and rows[0]["status"] == "done":
                    break
                await asyncio.sleep(1)
            await asyncio.sleep(2 * CALIBRATOR_POLL_S)  # a second record would show now
            rows = await pool.fetch(
                "SELECT status, attempts, verdict FROM calibration_runs WHERE run_id = $1", run_id
            )
            return while_alive, list(rows)
        finally:
            await pool.close()

    while_alive, rows = asyncio.run(go())
    assert [tuple(r) for r in while_alive] == [("running", 1)]
    assert len(rows) == 1 and rows[0]["status"] == "done" and rows[0]["attempts"] == 2
    assert rows[0]["verdict"] is not None
    assert env.calibrator.poll() is None


def test_one_calibrator_replica_leads_at_a_time(env: Env) -> None:
    """The running service leads; a second replica does not until the leader's session is
    gone, then it does at its next poll."""

    async def go() -> tuple[bool, bool, bool]:
        lock = await asyncpg.connect(env.settings.postgres_url)
        try:
            # The service (started by the fixture) took the lock at its first poll.
            contender = Leadership(env.settings.postgres_url)
            service_leads = not await contender.leading()
            await contender.close()
            mine = Leadership(env.settings.postgres_url, key=LEADER_LOCK + 1)
            other = Leadership(env.settings.postgres_url, key=LEADER_LOCK + 1)
            first = await mine.leading() and not await other.leading()
            await mine.close()  # the leader dies
            second = await other.leading()
            await other.close()
            return service_leads, first, second
        finally:
            await lock.close()

    service_leads, first, second = asyncio.run(go())
    assert service_leads, "the running calibrator must hold the leader lock"
    assert first, "two replicas must not lead at once"
    assert second, "a sibling must lead once the leader is gone"


def test_a_promotion_runs_once_the_version_has_enough_labels(env: Env) -> None:
    now = int(time.time() * 1000)
    with env.client() as c:
        ready = register(c, "promoted-ready")
        empty = register(c, "promoted-empty")
    insert(env.settings, ready, _rows(500, 8, now - 1_000_000, 900_000, 0.1))

    async def go() -> list[Any]:
        pool = await asyncpg.create_pool(env.settings.postgres_url, min_size=1, max_size=1)
        assert pool is not None
        try:
            due = await CalibratorStore(pool).due(0, True, 400)
        finally:
            await pool.close()
        return [(m.id, trigger, detail) for m, trigger, detail in due]

    due = asyncio.run(go())
    assert (ready["id"], "promoted", {"stage": "production"}) in due
    assert all(m != empty["id"] for m, _, _ in due)
