"""Calibrator rollout on the real stack: gateway, policy, aggregator and calibrator.

An over-confident model gets a fitted calibrator, which runs in shadow (decisions unchanged,
both confidences recorded), goes to canary, and is promoted automatically by the sequential
test once enough labels arrived; the next window's ECE is then under the SLO. A deliberately
bad calibrator (the inverse of the right temperature) is rolled back automatically, having
decided only its canary share. A replay after a policy crash gives every event the same
arm, and ``POST /api/calibrate`` answers with the policy's own choice. Bad requests get a
4xx naming the field. Predictions for the fit are written straight into PostgreSQL, as the
recorder would; events and labels go straight onto the worker topics.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import numpy as np
import pytest

from shared.contracts.batches import DecisionColumns, LabelColumns, PredictionColumns, model_key
from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.metrics.calibration import ece_from_arrays
from shared.recalibration.artifact import artifact_version, canonical, make_artifact
from shared.recalibration.serving import canary_mask
from shared.settings import Settings
from tests.integration.conftest import start_service
from tests.integration.gateway_client import make_keys, start_gateway
from tests.integration.kafka_io import TopicReader
from tests.integration.pipeline_io import produce

pytestmark = pytest.mark.integration

CODEC = AvroCodec()
TRUE_BETA = 0.4
"""P(correct | c) = σ(0.4 · logit(c)): over-confident; the right map is temperature β = 0.4."""
CALIBRATOR_ENV = {
    "CALIBER_CALIBRATOR_SCHEDULE_SECONDS": "0",
    "CALIBER_CALIBRATOR_ON_PROMOTION": "false",
    "CALIBER_CALIBRATOR_POLL_SECONDS": "0.5",
    "CALIBER_CALIBRATOR_BOOTSTRAP_RESAMPLES": "200",
    "CALIBER_CALIBRATOR_MIN_SAMPLES": "200",
    "CALIBER_ROLLOUT_SHADOW_MIN_LABELED": "300",
    "CALIBER_ROLLOUT_MIN_LABELED": "200",
    "CALIBER_ROLLOUT_CANARY_MIN_LABELED": "60",
    "CALIBER_ROLLOUT_TUNED_FOR": "400",
    "CALIBER_ROLLOUT_MAX_LABELED": "20000",
    # A right map legitimately withholds many more of an over-confident model's events.
    "CALIBER_ROLLOUT_REVIEW_BAND": "0.6",
}


@dataclass
class Env:
    settings: Settings
    base: str
    keys: dict[str, str]
    topics: Topics
    logs: Path
    workers: dict[str, Any] = field(default_factory=dict)

    def client(self, who: str = "admin") -> httpx.Client:
        return httpx.Client(base_url=self.base, headers={"X-API-Key": self.keys[who]}, timeout=30)

    def alive(self) -> list[Any]:
        return list(self.workers.values())


@pytest.fixture(scope="module")
def env(isolated_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    keys = make_keys(
        isolated_settings,
        {
            "admin": ("acme", ["admin"]),
            "producer": ("acme", ["producer"]),
            "other": ("globex", ["admin"]),
        },
    )
    logs = tmp_path_factory.mktemp("rollout")
    base, gateway = start_gateway(isolated_settings, logs, CALIBER_OUTBOX_POLL_SECONDS="0.3")
    e = Env(isolated_settings, base, keys, Topics.for_namespace(isolated_settings.topic_namespace),
            logs)  # fmt: skip
    e.workers["policy"] = start_service("policy", isolated_settings, logs / "policy.log")
    e.workers["aggregator"] = start_service("aggregator", isolated_settings, logs / "agg.log")
    e.workers["calibrator"] = start_service(
        "calibrator", isolated_settings, logs / "calibrator.log", **CALIBRATOR_ENV
    )
    try:
        yield e
    finally:
        for proc in [*e.workers.values(), gateway]:
            proc.terminate()  # type: ignore[attr-defined]
        for proc in [*e.workers.values(), gateway]:
            proc.wait(30)  # type: ignore[attr-defined]


def register(c: httpx.Client, name: str, threshold: float = 0.7) -> dict[str, Any]:
    r = c.post(
        "/api/models",
        json={"name": name, "version": "v1", "stage": "production", "abstain_threshold": threshold},
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


@dataclass
class Events:
    ids: list[str]
    conf: np.ndarray
    correct: np.ndarray
    predicted: list[str]


def draw(n: int, rng: np.random.Generator) -> Events:
    conf = np.round(rng.uniform(0.55, 0.995, n), 4)
    logit = np.log(conf) - np.log1p(-conf)
    correct = rng.random(n) < 1 / (1 + np.exp(-TRUE_BETA * logit))
    ids = [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(n)]
    predicted = ["yes" if b else "no" for b in (rng.random(n) < 0.5)]
    return Events(ids, conf, correct, predicted)


def send(env: Env, model: dict[str, Any], ev: Events, labels: bool = True) -> None:
    """The events as PredictionBatch messages (and their labels as LabelBatch messages)."""
    now = int(time.time() * 1000)
    key = model_key("acme", model["name"], model["version"])
    out: list[tuple[str, str, dict[str, Any] | None, str | None]] = []
    for i in range(0, len(ev.ids), 250):
        part = slice(i, i + 250)
        cols = PredictionColumns(
            tenant="acme", model_name=model["name"], model_version=model["version"],
            event_ids=ev.ids[part], event_time_ms=np.full(len(ev.ids[part]), now),
            predicted_labels=ev.predicted[part], confidences=ev.conf[part],
        )  # fmt: skip
        out.append((env.topics.predictions, "PredictionBatch", cols.to_record(), key))
        if labels:
            truths = [
                p if ok else ("no" if p == "yes" else "yes")
                for p, ok in zip(ev.predicted[part], ev.correct[part].tolist(), strict=True)
            ]
            lab = LabelColumns(
                tenant="acme", model_name=model["name"], model_version=model["version"],
                event_ids=ev.ids[part], ground_truths=truths, sources=["feed"] * len(truths),
                label_time_ms=np.full(len(truths), now + 1000),
            )  # fmt: skip
            out.append((env.topics.labels, "LabelBatch", lab.to_record(), key))
    produce(env.settings, out)


def decisions_of(reader: TopicReader, topic: str, model: dict[str, Any]) -> dict[str, Any]:
    """Every decision of ``model`` read so far, by event id (the last one wins): its
    calibrated confidence, status, deciding calibrator and the shadow's columns."""
    out: dict[str, Any] = {}
    for r in reader.records[topic]:
        d = DecisionColumns.from_record(r.record)
        if d.predictions.model_name != model["name"]:
            continue
        versions = d.calibrator_versions or [d.calibrator_version] * len(d)
        for i, eid in enumerate(d.predictions.event_ids):
            out[eid] = {
                "raw": float(d.predictions.confidences[i]),
                "calibrated": float(d.calibrated_confidences[i]),
                "review": bool(d.review[i]),
                "decided_by": versions[i],
                "active": d.calibrator_version,
                "shadow": d.shadow_calibrator_version,
                "shadow_conf": None
                if d.shadow_confidences is None
                else float(d.shadow_confidences[i]),
                "shadow_review": None if d.shadow_review is None else bool(d.shadow_review[i]),
            }
    return out


def rollout(env: Env, model_id: int) -> dict[str, Any]:
    with env.client() as c:
        r = c.get(f"/api/models/{model_id}/rollout")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body


def wait_until(env: Env, check: Any, timeout: float, what: str, feed: Any = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, w in env.workers.items():
            assert w.poll() is None, f"{name} exited (see {env.logs})"
        got = check()
        if got:
            return got
        if feed is not None:
            feed()
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def insert_history(settings: Settings, model: dict[str, Any], ev: Events) -> None:
    now = datetime.now(UTC)

    async def go() -> None:
        conn = await asyncpg.connect(settings.postgres_url)
        try:
            await conn.executemany(
                "INSERT INTO predictions (event_id, tenant_id, model_name, model_version, "
                "model_version_id, event_time, predicted_label, confidence, "
                "calibrated_confidence, status, ground_truth, correct, label_source, labeled_at, "
                "decided_at) VALUES ($1::uuid, 'acme', $2, $3, $4, $5, $6, $7, $7, 'resolved', "
                "$8, $9, 'feed', $5, now())",
                rows,
            )
        finally:
            await conn.close()

    rows = []
    for i, (eid, c, ok, p) in enumerate(
        zip(ev.ids, ev.conf.tolist(), ev.correct.tolist(), ev.predicted, strict=True)
    ):
        at = datetime.fromtimestamp(now.timestamp() - 600 + i * 0.3, tz=UTC)
        truth = p if ok else ("no" if p == "yes" else "yes")
        rows.append((eid, model["name"], model["version"], model["id"], at, p, float(c), truth, ok))
    asyncio.run(go())


def add_artifact(settings: Settings, tenant: str, model_id: int, beta: float) -> str:
    """A temperature artifact stored as the calibrator stores its fits (set and artifact)."""
    art = make_artifact("temperature", "confidence", {"beta": beta, "temperature": 1 / beta})
    version = artifact_version(art)
    set_hash = hashlib.sha256(f"{tenant}/{model_id}/{version}".encode()).hexdigest()

    async def go() -> None:
        conn = await asyncpg.connect(settings.postgres_url)
        try:
            await conn.execute(
                "INSERT INTO calibration_sets (hash, tenant_id, model_version_id, manifest, "
                "rows_blob) VALUES ($1, $2, $3, '{}'::jsonb, ''::bytea)",
                set_hash, tenant, model_id,
            )  # fmt: skip
            await conn.execute(
                "INSERT INTO calibration_artifacts (tenant_id, version, model_version_id, kind, "
                "artifact, set_hash) VALUES ($1, $2, $3, 'temperature', $4, $5)",
                tenant, version, model_id, canonical(art).decode(), set_hash,
            )  # fmt: skip
        finally:
            await conn.close()

    asyncio.run(go())
    return version


def test_fitted_calibrator_goes_shadow_canary_and_is_promoted(env: Env) -> None:
    rng = np.random.default_rng(16)
    with env.client() as c:
        model = register(c, "fraud")
        insert_history(env.settings, model, draw(1200, rng))
        r = c.post(f"/api/models/{model['id']}/recalibrate", json={"methods": ["temperature"]})
        assert r.status_code == 202, r.text
    reader = TopicReader(
        env.settings,
        [env.topics.decisions, env.topics.alerts, env.topics.model_updates],
        CODEC,
    )
    try:
        _shadow_canary_promote(env, model, reader, rng)
    finally:
        reader.close()


def _shadow_canary_promote(
    env: Env, model: dict[str, Any], reader: TopicReader, rng: np.random.Generator
) -> None:
    staged = wait_until(
        env, lambda: rollout(env, model["id"])["candidate"], 180, "the staged calibrator in shadow"
    )
    assert rollout(env, model["id"])["stage"] == "shadow"

    # Shadow: the policy decides with the active map (identity) and records the candidate's.
    sent: list[Events] = []

    def feed() -> None:
        ev = draw(400, rng)
        sent.append(ev)
        send(env, model, ev)
        reader.poll(1.0)

    def shadowed() -> list[Any]:
        return [d for d in decisions_of(reader, env.topics.decisions, model).values()
                if d["shadow"] == staged]  # fmt: skip

    shadow_rows = wait_until(env, lambda: len(shadowed()) >= 200 and shadowed(), 120,
                             "decisions with the shadow", feed)  # fmt: skip
    shadow_only = [d for d in shadow_rows if d["decided_by"] == "identity"]
    assert shadow_only, "no decision in shadow"
    for d in shadow_only[:200]:
        assert d["calibrated"] == d["raw"] and d["review"] == (d["raw"] < 0.7)
        assert d["shadow_conf"] is not None and d["shadow_conf"] < d["raw"]
        assert d["shadow_review"] == (d["shadow_conf"] < 0.7)

    # Canary, then promotion, as labels arrive.
    wait_until(env, lambda: rollout(env, model["id"])["stage"] == "canary" or
               rollout(env, model["id"])["active"] == staged, 240, "canary", feed)  # fmt: skip
    promoted = wait_until(
        env, lambda: rollout(env, model["id"])["active"] == staged, 300, "promotion", feed
    )
    assert promoted
    state = rollout(env, model["id"])
    assert state["candidate"] is None and state["stage"] is None
    log = list(reversed(state["transitions"]))
    assert [(t["from_stage"], t["to_stage"], t["trigger"]) for t in log] == [
        ("staged", "shadow", "auto"),
        ("shadow", "canary", "auto"),
        ("canary", "promoted", "auto"),
    ]
    test = log[-1]["numbers"]["test"]
    assert test["decision"] == "promote" and test["nll"]["lo"] > 0
    paired = state["paired"]
    assert paired["candidate"]["ece"] < paired["active"]["ece"]
    assert paired["candidate"]["nll"] < paired["active"]["nll"]
    assert paired["canary"]["events"] > 0 and paired["control"]["events"] > 0

    # Canary events were decided by the candidate exactly where the stable hash says.
    decisions = decisions_of(reader, env.topics.decisions, model)
    share = 0.1
    canary_rows = [(eid, d) for eid, d in decisions.items() if d["shadow"] == staged
                   and d["decided_by"] != "identity"]  # fmt: skip
    assert canary_rows
    ids = [eid for eid, _ in canary_rows]
    assert canary_mask(ids, share, staged).all()

    # Each transition is on model-updates and announced as a recalibration alert.
    def announced() -> bool:
        kinds = [a.record["window"] for a in reader.records[env.topics.alerts]
                 if a.record["kind"] == "recalibration" and a.record["metric"] == "rollout"
                 and a.record["model_name"] == model["name"]]  # fmt: skip
        return {"shadow", "canary", "promoted"} <= set(kinds)

    reader.wait_for(announced, 60, "the transition alerts", env.alive())
    stages = [u.record["rollout_stage"] for u in reader.records[env.topics.model_updates]
              if u.record["id"] == model["id"]]  # fmt: skip
    assert "shadow" in stages and "canary" in stages

    # The next window, decided by the promoted map, is calibrated.
    nxt = draw(3000, rng)
    assert ece_from_arrays(nxt.conf, nxt.correct) > 0.1

    def decided_by_promoted() -> bool:
        probe = draw(50, rng)
        send(env, model, probe, labels=False)
        reader.poll(1.0)
        got = decisions_of(reader, env.topics.decisions, model)
        return all(got.get(e, {}).get("active") == staged for e in probe.ids)

    wait_until(env, decided_by_promoted, 60, "the policy on the promoted map")
    send(env, model, nxt)
    reader.wait_for(
        lambda: all(e in decisions_of(reader, env.topics.decisions, model) for e in nxt.ids),
        60, "the next window's decisions", env.alive(),
    )  # fmt: skip
    got = decisions_of(reader, env.topics.decisions, model)
    calibrated = np.array([got[e]["calibrated"] for e in nxt.ids])
    assert {got[e]["decided_by"] for e in nxt.ids} == {staged}
    assert ece_from_arrays(calibrated, nxt.correct) < 0.05


def test_a_bad_calibrator_is_rolled_back_within_its_canary_share(env: Env) -> None:
    rng = np.random.default_rng(61)
    with env.client() as c:
        model = register(c, "bad")
    bad = add_artifact(env.settings, "acme", model["id"], 1 / TRUE_BETA)  # the inverse
    with env.client() as c:
        r = c.post(
            f"/api/models/{model['id']}/rollout",
            json={"action": "canary", "artifact_version": bad, "canary_share": 0.2},
        )
        assert r.status_code == 202, r.text
        request_id = r.json()["request_id"]
    reader = TopicReader(env.settings, [env.topics.decisions], CODEC)
    try:

        def feed() -> None:
            send(env, model, draw(300, rng))
            reader.poll(1.0)

        def rolled_back() -> bool:
            log = rollout(env, model["id"])["transitions"]
            return bool(log) and log[0]["to_stage"] == "rolled_back"

        wait_until(env, rolled_back, 240, "the automatic rollback", feed)
        state = rollout(env, model["id"])
        assert state["active"] == "identity" and state["candidate"] is None
        last = state["transitions"][0]
        assert last["trigger"] == "auto" and last["numbers"]["test"]["nll"]["hi"] < 0
        with env.client() as c:
            req = c.get(f"/api/rollout-requests/{request_id}").json()
        assert req["status"] == "done"

        # Once the policy has the rollback, no event is decided by the bad map any more.
        probe = draw(400, rng)

        def clean() -> bool:
            send(env, model, probe, labels=False)
            reader.poll(1.5)
            got = decisions_of(reader, env.topics.decisions, model)
            return all(e in got and got[e]["shadow"] is None for e in probe.ids)

        wait_until(env, clean, 60, "decisions without the candidate")
        decisions = decisions_of(reader, env.topics.decisions, model)
        by_bad = [eid for eid, d in decisions.items() if d["decided_by"] == bad]
        with_bad = [eid for eid, d in decisions.items() if d["shadow"] == bad]
        assert by_bad and len(with_bad) >= len(by_bad)
        # Only the canary arm was ever decided by the bad map: the events its hash chose.
        assert canary_mask(by_bad, 0.2, bad).all()
        assert not canary_mask([e for e in with_bad if e not in set(by_bad)], 0.2, bad).any()
        assert len(by_bad) / len(with_bad) < 0.3
    finally:
        reader.close()


def test_replay_after_a_policy_crash_gives_each_event_the_same_arm(env: Env) -> None:
    rng = np.random.default_rng(99)
    with env.client() as c:
        model = register(c, "replay")
    good = add_artifact(env.settings, "acme", model["id"], TRUE_BETA)
    with env.client() as c:
        r = c.post(
            f"/api/models/{model['id']}/rollout",
            json={"action": "canary", "artifact_version": good, "canary_share": 0.5},
        )
        assert r.status_code == 202, r.text
    wait_until(env, lambda: rollout(env, model["id"])["stage"] == "canary", 60, "canary")
    reader = TopicReader(env.settings, [env.topics.decisions], CODEC)
    try:
        ev = draw(600, rng)

        def first_arms() -> dict[str, str] | None:
            send(env, model, ev, labels=False)
            reader.poll(1.5)
            got = decisions_of(reader, env.topics.decisions, model)
            if all(e in got and got[e]["shadow"] == good for e in ev.ids):
                return {e: got[e]["decided_by"] for e in ev.ids}
            return None

        before = wait_until(env, first_arms, 90, "canary decisions")
        # Kill the policy hard while the same events arrive again, restart it: the events
        # it decides after the restart (a replay of what it had not committed, and the
        # resent ones) get the arms they had.
        send(env, model, ev, labels=False)
        env.workers["policy"].send_signal(signal.SIGKILL)
        env.workers["policy"].wait(30)
        n_before = len(reader.records[env.topics.decisions])
        env.workers["policy"] = start_service("policy", env.settings, env.logs / "policy2.log")
        send(env, model, ev, labels=False)

        def replayed() -> bool:
            reader.poll(1.0)
            seen = set()
            for r in reader.records[env.topics.decisions][n_before:]:
                seen.update(r.record["predictions"]["event_ids"])
            return set(ev.ids) <= seen

        wait_until(env, replayed, 120, "decisions after the restart")
        after = decisions_of(reader, env.topics.decisions, model)
        assert {e: after[e]["decided_by"] for e in ev.ids} == before
        mask = canary_mask(ev.ids, 0.5, good)
        assert [before[e] == good for e in ev.ids] == mask.tolist()
        assert 0.35 < mask.mean() < 0.65

        # POST /api/calibrate answers with the policy's own choice, arm included.
        with env.client("producer") as c:
            body = {"model_version_id": model["id"],
                    "events": [{"event_id": e, "confidence": float(x)}
                               for e, x in zip(ev.ids, ev.conf.tolist(), strict=True)]}  # fmt: skip
            r = c.post("/api/calibrate", json=body)
            assert r.status_code == 200, r.text
            results = r.json()["results"]
        for res in results:
            d = after[res["event_id"]]
            assert res["calibrator_version"] == d["decided_by"]
            assert res["arm"] == ("canary" if d["decided_by"] == good else "control")
            assert res["calibrated_confidence"] == pytest.approx(d["calibrated"], abs=1e-12)
            assert res["status"] == ("review" if d["review"] else "auto")
    finally:
        reader.close()


def _loc(r: httpx.Response) -> list[Any]:
    detail = r.json()["detail"]
    assert isinstance(detail, list), detail
    return [d["loc"][-1] if d["loc"][-1] != "body" else d["loc"] for d in detail]


def test_bad_rollout_requests_name_the_field(env: Env) -> None:
    with env.client() as c:
        model = register(c, "guarded")
    with env.client("other") as c:
        theirs = register(c, "theirs")
    their_artifact = add_artifact(env.settings, "globex", theirs["id"], 0.5)
    url = f"/api/models/{model['id']}/rollout"
    with env.client() as c:
        r = c.post(url, json={"action": "shadow", "artifact_version": "temperature-0000"})
        assert r.status_code == 422 and _loc(r) == ["artifact_version"], r.text
        r = c.post(url, json={"action": "shadow", "artifact_version": their_artifact})
        assert r.status_code == 422 and _loc(r) == ["artifact_version"], r.text
        r = c.post(url, json={"action": "canary", "artifact_version": "x", "canary_share": 1.5})
        assert r.status_code == 422 and "canary_share" in _loc(r), r.text
        r = c.post(url, json={"action": "promote"})
        assert r.status_code == 409 and _loc(r) == ["action"], r.text
        r = c.post(url, json={"action": "explode"})
        assert r.status_code == 422 and "action" in _loc(r), r.text
        r = c.post(url, json={"action": "shadow"})  # nothing staged
        assert r.status_code == 422 and _loc(r) == ["artifact_version"], r.text
        # another tenant's model version is not found
        r = c.post(f"/api/models/{theirs['id']}/rollout", json={"action": "abort"})
        assert r.status_code == 404, r.text
        assert c.get(f"/api/models/{theirs['id']}/rollout").status_code == 404
    with env.client("producer") as c:
        r = c.post(
            "/api/calibrate",
            json={
                "model_version_id": theirs["id"],
                "events": [{"event_id": "a", "confidence": 0.9}],
            },
        )
        assert r.status_code == 404 and _loc(r) == ["model_version_id"], r.text
        r = c.post(
            "/api/calibrate",
            json={
                "model_version_id": model["id"],
                "events": [{"event_id": "a", "confidence": 1.5}],
            },
        )
        assert r.status_code == 422 and "confidence" in _loc(r), r.text
        r = c.post("/api/calibrate", json={"model_version_id": model["id"], "events": []})
        assert r.status_code == 422 and "events" in _loc(r), r.text
        # identity, no candidate: the raw confidence, the active arm
        r = c.post(
            "/api/calibrate",
            json={
                "model_version_id": model["id"],
                "events": [{"event_id": "a", "confidence": 0.65}],
            },
        )
        assert r.status_code == 200, r.text
        assert r.json()["results"] == [{"event_id": "a", "calibrated_confidence": 0.65,
                                        "status": "review", "calibrator_version": "identity",
                                        "arm": "active"}]  # fmt: skip
    # an admin role is needed to move a rollout
    with env.client("producer") as c:
        assert c.post(url, json={"action": "abort"}).status_code == 403


def test_another_calibrator_activated_directly_aborts_the_open_rollout(env: Env) -> None:
    """An operator who activates a calibrator through the registry while a candidate is in
    shadow ends its rollout: the candidate was being compared with the map replaced, and a
    later promotion must not undo the operator's choice."""
    with env.client() as c:
        model = register(c, "overruled")
    mid = model["id"]
    candidate = add_artifact(env.settings, "acme", mid, 0.5)
    chosen = add_artifact(env.settings, "acme", mid, 0.8)
    with env.client() as c:
        r = c.post(f"/api/models/{mid}/rollout",
                   json={"action": "shadow", "artifact_version": candidate})  # fmt: skip
        assert r.status_code == 202, r.text
        wait_until(env, lambda: rollout(env, mid)["candidate"] == candidate, 60, "the shadow")
        r = c.post(f"/api/models/{mid}/calibrator", json={"artifact_version": chosen})
        assert r.status_code == 200, r.text

    def ended() -> dict[str, Any] | None:
        got = rollout(env, mid)
        return got if got["rollout"]["stage"] == "aborted" and got["candidate"] is None else None

    got = wait_until(env, ended, 60, "the rollout aborted and the candidate cleared")
    assert got["active"] == chosen and got["stage"] is None
    last = got["transitions"][0]
    assert (last["from_stage"], last["to_stage"], last["trigger"]) == (
        "shadow",
        "aborted",
        "manual",
    )
    assert chosen in last["reason"]
