"""Outcome routing on the real stack: decide, outcomes by labels and by API, kills, bad input.

The router worker and the gateway use a private Redis (this module kills it); ingest uses
the shared one under the module's prefix. Predictions of two simulated model versions go to
``inference.raw`` carrying their route decision id, labels go to ``labels.raw``, as a team
would send them.
"""

from __future__ import annotations

import math
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.routing.state import ROUTE_DECISION_KEY, RouteKeys
from shared.runtime.kafka import make_producer
from shared.settings import Settings
from simulator.generator import ModelSpec, generate
from simulator.producer import event_records
from tests.integration.conftest import start_service
from tests.integration.gateway_client import make_keys, start_gateway
from tests.integration.routing_io import PrivateRedis
from tooling.benchmarking import join_identity

CODEC = AvroCodec()
GOAL = "triage"
VERSIONS = {"clf/v1": ModelSpec("clf", "v1", "acme", overconfidence=0.35),
            "clf/v2": ModelSpec("clf", "v2", "acme", overconfidence=0.02)}  # fmt: skip
ROUNDS = 8
PER_ROUND = 60


@dataclass
class Env:
    settings: Settings
    base: str
    keys: dict[str, str]
    redis: PrivateRedis
    logs: Path
    router: subprocess.Popen[bytes]
    extra: dict[str, str]

    def client(self, who: str) -> httpx.Client:
        return httpx.Client(base_url=self.base, headers={"X-API-Key": self.keys[who]}, timeout=30)

    def restart_router(self) -> None:
        self.router.kill()
        self.router.wait(30)
        self.router = start_service("router", self.settings, self.logs / "router.log", **self.extra)


@pytest.fixture(scope="module")
def env(isolated_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    logs = tmp_path_factory.mktemp("routing")
    private = PrivateRedis(logs / "redis")
    private.start()
    # The private Redis joins the stack identity of the module's topics and database, as
    # the services refuse stores out of step.
    join_identity(isolated_settings.model_copy(update={"redis_url": private.url}), ("redis",))
    keys = make_keys(
        isolated_settings,
        {"acme": ("acme", ["producer", "viewer"]), "globex": ("globex", ["producer", "viewer"])},
    )
    extra = {"CALIBER_REDIS_URL": private.url}
    procs: list[Any] = []
    try:
        procs.append(start_service("ingest", isolated_settings, logs / "ingest.log"))
        router = start_service("router", isolated_settings, logs / "router.log", **extra)
        e = Env(isolated_settings, "", keys, private, logs, router, extra)
        procs.append(e)
        e.base, gateway = start_gateway(
            isolated_settings, logs, **extra, CALIBER_LOG_LEVEL="WARNING"
        )
        procs.append(gateway)
        yield e
    finally:
        running = [p.router if isinstance(p, Env) else p for p in procs]
        for proc in running:
            proc.terminate()
        for proc in running:
            proc.wait(30)
        private.kill()


def _decide(c: httpx.Client, **body: Any) -> httpx.Response:
    return c.post("/api/route/decide", json=body)


def _wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last})")


# --- bad input ---------------------------------------------------------------------------

CANDIDATES = [{"path": "a", "cost": 1.0}, {"path": "b", "latency_ms": 20}]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"goal": GOAL, "candidates": []}, "candidates"),
        ({"goal": GOAL, "candidates": [{"path": "a"}, {"path": "a"}]}, "candidates"),
        ({"goal": GOAL, "candidates": CANDIDATES, "force": "c"}, "force"),
        ({"goal": "", "candidates": CANDIDATES}, "goal"),
        ({"goal": GOAL, "candidates": [{"path": "a", "cost": -1}]}, "cost"),
    ],
)
def test_bad_decide_names_the_field(env: Env, body: dict[str, Any], field: str) -> None:
    with env.client("acme") as c:
        r = _decide(c, **body)
    assert r.status_code == 422
    assert field in r.text


def test_bad_outcomes_name_the_field(env: Env) -> None:
    with env.client("acme") as c, env.client("globex") as other:
        d = _decide(c, goal="bad-input", candidates=CANDIDATES).json()
        mine = d["decision_id"]
        r = c.post("/api/route/outcome", json={"decision_id": mine, "score": 1.7})
        assert r.status_code == 422 and "score" in r.text
        raw = '{"decision_id": "' + mine + '", "score": NaN}'
        r = c.post("/api/route/outcome", content=raw, headers={"Content-Type": "application/json"})
        assert r.status_code == 422 and "score" in r.text
        r = c.post("/api/route/outcome", json={"decision_id": mine})
        assert r.status_code == 422 and "score" in r.text
        unknown = "00000000-0000-4000-8000-000000000000"
        r = c.post("/api/route/outcome", json={"decision_id": unknown, "success": True})
        assert r.status_code == 404 and "decision_id" in r.text
        r = c.post("/api/route/outcome", json={"decision_id": "not-an-id", "success": True})
        assert r.status_code == 404 and "decision_id" in r.text
        # Once the router has the decision, another tenant still gets 404 for it ...
        _wait(lambda: c.get("/api/route/policy", params={"goal": "bad-input"}).json()["paths"],
              60, "the decision record")  # fmt: skip
        r = other.post("/api/route/outcome", json={"decision_id": mine, "success": True})
        assert r.status_code == 404 and "decision_id" in r.text
        # ... and sees nothing of the goal.
        assert other.get("/api/route/policy", params={"goal": "bad-input"}).json()["paths"] == []
        assert "bad-input" not in other.get("/api/route/goals").json()
        r = c.post("/api/route/outcome", json={"decision_id": mine, "success": True})
        assert r.status_code == 202 and r.json()["checked"] is True
        # One outcome per decision.
        _wait(
            lambda: (
                c.post(
                    "/api/route/outcome", json={"decision_id": mine, "success": True}
                ).status_code
                == 409
            ),
            60,
            "the outcome to be counted",
        )


def test_forced_path_is_recorded_not_learned(env: Env) -> None:
    with env.client("acme") as c:
        d = _decide(c, goal="forced", candidates=CANDIDATES, force="b").json()
        assert d["path"] == "b" and d["forced"] is True
        _wait(lambda: c.get("/api/route/policy", params={"goal": "forced"}).json()["paths"],
              60, "the forced decision")  # fmt: skip
        r = c.post("/api/route/outcome", json={"decision_id": d["decision_id"], "success": True})
        assert r.status_code == 202

        def counted() -> dict[str, Any] | None:
            paths = c.get("/api/route/policy", params={"goal": "forced"}).json()["paths"]
            return paths[0] if paths and paths[0]["forced_outcomes"] == 1 else None

        row = _wait(counted, 60, "the forced outcome")
    assert row["path"] == "b" and row["outcomes"] == 0 and row["forced_success_rate"] == 1.0


# --- traffic moves to the better version; router and Redis killed on the way -----------


def test_traffic_moves_to_the_better_version_through_kills(env: Env) -> None:
    topics = Topics.for_namespace(env.settings.topic_namespace)
    pools = {
        path: list(event_records(generate(spec, ROUNDS * PER_ROUND, 11 + i, 0).predictions))
        for i, (path, spec) in enumerate(VERSIONS.items())
    }
    truths = {
        path: generate(spec, ROUNDS * PER_ROUND, 11 + i, 0).ground_truth
        for i, (path, spec) in enumerate(VERSIONS.items())
    }
    used = dict.fromkeys(VERSIONS, 0)
    producer = make_producer(env.settings)
    candidates = [{"path": p} for p in VERSIONS]
    labels_sent = 0
    fallbacks = 0
    round_shares = []
    with env.client("acme") as c:
        for rnd in range(ROUNDS):
            if rnd == 3:
                env.restart_router()  # SIGKILL mid-run, then a new process
            if rnd == 5:
                env.redis.kill()
            picks = []
            for _ in range(PER_ROUND):
                d = _decide(c, goal=GOAL, candidates=candidates)
                assert d.status_code == 200, d.text
                body = d.json()
                fallbacks += body["fallback"]
                path = body["path"]
                picks.append(path)
                i = used[path]
                used[path] += 1
                event = dict(pools[path][i])
                now = int(time.time() * 1000)
                event.update(event_time_ms=now, metadata={ROUTE_DECISION_KEY: body["decision_id"]})
                key = f"acme/{path}".encode()
                producer.produce(topics.inference_raw, CODEC.encode("InferenceEvent", event), key)
                label = {
                    "event_id": event["event_id"],
                    "tenant": "acme",
                    "model_name": None,
                    "model_version": None,
                    "ground_truth": truths[path][i],
                    "source": "feed",
                    "label_time_ms": now,
                }
                producer.produce(topics.labels_raw, CODEC.encode("Label", label), key)
                labels_sent += 1
            producer.flush(30)
            round_shares.append(picks.count("clf/v2") / PER_ROUND)
            if rnd == 5:
                assert fallbacks >= PER_ROUND  # every decision of the Redis-less round
                env.redis.start()
            # Let the round's outcomes land before the next round decides on them.
            if rnd not in (3, 5):
                sent = labels_sent
                _wait(lambda n=sent: _total(env) >= n, 120, f"round {rnd}'s outcomes")
    sent = labels_sent
    totals = _wait(lambda: _total(env) == sent and _total(env), 180, "every outcome")
    time.sleep(3)  # nothing more may arrive: no double counts after the replays
    assert _total(env) == labels_sent == totals
    with env.client("acme") as c:
        pol = {
            p["path"]: p for p in c.get("/api/route/policy", params={"goal": GOAL}).json()["paths"]
        }
    summary = ", ".join(
        f"{k}: rate {v['success_rate']:.3f} share {v['traffic_share']:.2f}" for k, v in pol.items()
    )
    print(f"\nshare of clf/v2 by round: {[round(s, 2) for s in round_shares]}; {summary}")
    assert pol["clf/v2"]["success_rate"] > pol["clf/v1"]["success_rate"]
    assert pol["clf/v2"]["traffic_share"] > 0.8
    assert np.mean(round_shares[-2:]) > 0.75 > round_shares[0]
    assert sum(p["decisions"] for p in pol.values()) == ROUNDS * PER_ROUND
    lo, hi = pol["clf/v2"]["interval"]
    assert lo < pol["clf/v2"]["success_rate"] < hi and not math.isnan(lo)

    # Redis loses everything: the router rebuilds the same counts from the topics.
    env.router.kill()
    env.router.wait(30)
    env.redis.client().flushall()  # the private Redis this module started
    assert _total(env) == 0
    # What `caliber rebuild redis` leaves (it writes the identity last); the router then
    # finds its own state gone and rebuilds its counts from the topics.
    join_identity(env.settings.model_copy(update={"redis_url": env.redis.url}), ("redis",))
    env.restart_router()
    _wait(lambda: _total(env) == sent, 180, "the rebuild")
    time.sleep(3)
    assert _total(env) == sent
    with env.client("acme") as c:
        rebuilt = c.get("/api/route/policy", params={"goal": GOAL}).json()["paths"]
    assert {p["path"]: p["decisions"] for p in rebuilt} == {
        k: v["decisions"] for k, v in pol.items()
    }


def _total(env: Env) -> int:
    """Outcomes counted for the goal (learned + forced/fallback), read straight from Redis."""
    keys = RouteKeys(env.settings.redis_prefix)
    try:
        r = env.redis.client()
        total = 0
        for path in VERSIONS:
            n, fn = r.hmget(keys.post("acme", GOAL, path), "n", "fn")
            total += int(n or 0) + int(fn or 0)
        return total
    except Exception:
        return 0


def test_a_dead_lettered_routed_prediction_fails_its_path(env: Env) -> None:
    topics = Topics.for_namespace(env.settings.topic_namespace)
    with env.client("acme") as c:
        d = _decide(c, goal="dead", candidates=[{"path": "only"}]).json()
    event = next(event_records(generate(VERSIONS["clf/v1"], 1, 99, 0).predictions))
    event.update(
        confidence=1.7,  # out of range: ingest dead-letters it
        event_time_ms=int(time.time() * 1000),
        metadata={ROUTE_DECISION_KEY: d["decision_id"]},
    )
    producer = make_producer(env.settings)
    producer.produce(topics.inference_raw, CODEC.encode("InferenceEvent", event), b"acme/clf/v1")
    producer.flush(30)
    post = RouteKeys(env.settings.redis_prefix).post("acme", "dead", "only")
    r = env.redis.client()
    _wait(lambda: r.hget(post, "n") == b"1", 90, "the dead letter's failure")
    s, f = (float(x or 0) for x in r.hmget(post, "s", "f"))
    assert s == 0.0 and f == pytest.approx(1.0, abs=1e-6)
