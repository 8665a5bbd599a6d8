"""The policy on the real stack: registry from model-updates, thresholds, order, restarts.

PredictionBatch messages are produced straight to <ns>.predictions (what ingest would
write); decisions are read back from <ns>.decisions with a read_committed reader.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Producer

from shared.contracts.batches import PredictionColumns, model_key
from shared.contracts.topics import Topics
from shared.runtime.kafka import transactional_producer_config
from shared.settings import Settings
from tests.integration.conftest import start_service
from tests.integration.pipeline_io import KeyedReader, metric, produce, wait_metric
from tests.ports import free_port
from tooling.benchmarking import scrape

DEFAULT = 0.70
REGISTERED = {"v1": 0.6, "v2": 0.8}
"""fraud/v1 and fraud/v2 are registered with these thresholds; v9 never is, and v3 is
registered and then deleted (a tombstone), so both use the default threshold."""


def version_record(version: str, threshold: float, id_: int) -> dict[str, Any]:
    now = int(time.time() * 1000)
    return {
        "id": id_,
        "tenant": "acme",
        "name": "fraud",
        "version": version,
        "stage": "staging",
        "parent_id": None,
        "abstain_threshold": threshold,
        "calibrator_version": "identity",
        "calibrator": None,
        "created_at_ms": now,
        "updated_at_ms": now,
    }


class Policy:
    def __init__(self, settings: Settings, logs: Path) -> None:
        self.settings = settings
        self.topics = Topics.for_namespace(settings.topic_namespace)
        self.logs = logs
        self.port = free_port()
        self.worker: subprocess.Popen[bytes] | None = None
        self.reader = KeyedReader(settings, [self.topics.decisions])

    def start(self) -> None:
        self.worker = start_service(
            "policy", self.settings, self.logs / "policy.log", CALIBER_METRICS_PORT=str(self.port)
        )

    def stop(self) -> None:
        assert self.worker is not None
        self.worker.terminate()
        assert self.worker.wait(30) == 0, "the policy did not stop cleanly on SIGTERM"

    def predict(self, version: str, confidences: list[float]) -> PredictionColumns:
        n = len(confidences)
        return PredictionColumns(
            tenant="acme",
            model_name="fraud",
            model_version=version,
            event_ids=[str(uuid.uuid4()) for _ in range(n)],
            event_time_ms=np.full(n, int(time.time() * 1000), dtype=np.int64),
            predicted_labels=["yes"] * n,
            confidences=np.asarray(confidences, dtype=np.float64),
        )

    def send(self, batches: list[PredictionColumns]) -> None:
        produce(
            self.settings,
            [(self.topics.predictions, "PredictionBatch", b.to_record(), b.key) for b in batches],
        )

    def decisions(self, event_ids: set[str], timeout: float = 45) -> dict[str, dict[str, Any]]:
        """Each event's decision: status, threshold, source, calibrated confidence, ids."""

        def found() -> dict[str, dict[str, Any]]:
            out = {}
            for r in self.reader.received:
                rec = r.record
                for i, eid in enumerate(rec["predictions"]["event_ids"]):
                    if eid in event_ids:
                        out[eid] = {
                            "status": rec["statuses"][i],
                            "threshold": rec["threshold"],
                            "source": rec["threshold_source"],
                            "calibrated": rec["calibrated_confidences"][i],
                            "version_id": rec["predictions"]["model_version_id"],
                            "key": r.key,
                        }
            return out

        self.reader.wait_for(
            lambda: len(found()) >= len(event_ids),
            timeout,
            f"decisions on {len(event_ids)} events",
            [self.worker],
        )
        return found()


@pytest.fixture(scope="module")
def policy(
    isolated_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Policy]:
    topics = Topics.for_namespace(isolated_settings.topic_namespace)
    updates = topics.model_updates
    # v1 comes from a transactional writer, whose commit marker ends the partition: the
    # policy must still see that it has caught up.
    txn = Producer(transactional_producer_config(isolated_settings, f"{updates}-test-writer"))
    txn.init_transactions(15)
    txn.begin_transaction()
    produce(
        isolated_settings,
        [(updates, "ModelVersion", version_record("v1", REGISTERED["v1"], 1), "acme/fraud/v1")],
        txn,
    )
    txn.commit_transaction(15)
    produce(
        isolated_settings,
        [
            (updates, "ModelVersion", version_record("v2", REGISTERED["v2"], 2), "acme/fraud/v2"),
            (updates, "ModelVersion", version_record("v3", 0.1, 3), "acme/fraud/v3"),
            (updates, "ModelVersion", None, "acme/fraud/v3"),
        ],
    )
    p = Policy(isolated_settings, tmp_path_factory.mktemp("logs"))
    p.start()
    try:
        yield p
    finally:
        if p.worker is not None and p.worker.poll() is None:
            p.worker.terminate()
            p.worker.wait(30)
        p.reader.close()


CONFIDENCES = [0.0, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 1.0]


def expected(version: str, confidence: float) -> tuple[str, float, str]:
    threshold = REGISTERED.get(version, DEFAULT)
    source = "registry" if version in REGISTERED else "default"
    return ("review" if confidence < threshold else "auto", threshold, source)


def test_each_model_is_decided_with_its_registry_threshold_or_the_default(policy: Policy) -> None:
    batches = [policy.predict(v, CONFIDENCES) for v in ("v1", "v2", "v3", "v9")]
    policy.send(batches)
    got = policy.decisions({e for b in batches for e in b.event_ids})
    for b in batches:
        for eid, conf in zip(b.event_ids, b.confidences.tolist(), strict=True):
            d = got[eid]
            assert (d["status"], d["threshold"], d["source"]) == expected(b.model_version, conf)
            assert d["calibrated"] == conf  # identity map
            assert d["version_id"] == {"v1": 1, "v2": 2}.get(b.model_version)
            assert d["key"] == model_key("acme", "fraud", b.model_version)
    # exactly the predictions below their threshold are withheld
    review = {e for e, d in got.items() if d["status"] == "review"}
    assert review == {
        eid
        for b in batches
        for eid, c in zip(b.event_ids, b.confidences.tolist(), strict=True)
        if c < REGISTERED.get(b.model_version, DEFAULT)
    }
    assert len(review) == 2 + 6 + 4 + 4


def test_unregistered_models_share_one_label_and_are_counted(policy: Policy) -> None:
    before = metric(policy.port, "caliber_policy_unregistered_predictions_total")
    batch = policy.predict("v9", [0.2, 0.9, 0.95])
    policy.send([batch])
    policy.decisions(set(batch.event_ids))
    assert (
        wait_metric(policy.port, "caliber_policy_unregistered_predictions_total", None, before + 3)
        == before + 3
    )
    assert (
        metric(
            policy.port,
            "caliber_policy_decisions_total",
            {"model": "unregistered", "status": "auto"},
        )
        >= 2
    )
    text_models = {
        line.split('model="')[1].split('"')[0]
        for line in scrape(policy.port).splitlines()
        if line.startswith("caliber_policy_decisions_total{")
    }
    assert text_models == {"fraud", "unregistered"}
    assert metric(policy.port, "caliber_policy_decision_latency_seconds_count") >= 3 + 36


def test_one_models_decisions_keep_the_order_of_its_predictions(policy: Policy) -> None:
    batches = [
        policy.predict(v, [0.5 + 0.01 * i, 0.9]) for i in range(15) for v in ("v1", "v2", "v9")
    ]
    policy.send(batches)
    policy.decisions({e for b in batches for e in b.event_ids})
    sent: dict[str, list[str]] = {}
    for b in batches:
        sent.setdefault(b.key, []).extend(b.event_ids)
    wanted = {e for ids in sent.values() for e in ids}
    seen: dict[str, list[str]] = {}
    partitions: dict[str, set[int]] = {}
    for r in policy.reader.received:
        ids = [e for e in r.record["predictions"]["event_ids"] if e in wanted]
        if ids:
            assert r.key is not None
            seen.setdefault(r.key, []).extend(ids)
            partitions.setdefault(r.key, set()).add(r.partition)
    assert seen == sent
    assert all(len(p) == 1 for p in partitions.values()), partitions


def test_a_registry_change_applies_to_the_next_predictions(policy: Policy) -> None:
    produce(
        policy.settings,
        [
            (
                policy.topics.model_updates,
                "ModelVersion",
                version_record("v2", 0.5, 2),
                "acme/fraud/v2",
            )
        ],
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        batch = policy.predict("v2", [0.55])
        policy.send([batch])
        d = policy.decisions(set(batch.event_ids))[batch.event_ids[0]]
        if d["threshold"] == 0.5:
            assert (d["status"], d["source"]) == ("auto", "registry")
            REGISTERED["v2"] = 0.5
            return
        time.sleep(0.2)
    raise AssertionError("the new threshold of v2 was not used within 30 s")


def test_after_a_restart_the_first_decisions_use_the_registry(policy: Policy) -> None:
    """Predictions waiting while the policy is down are decided with the registry's
    thresholds, because the policy reads the whole registry before it decides."""
    policy.stop()
    waiting = [policy.predict("v1", [0.58, 0.62]), policy.predict("v9", [0.65])]
    policy.send(waiting)
    policy.start()
    got = policy.decisions({e for b in waiting for e in b.event_ids}, timeout=60)
    assert [(got[e]["status"], got[e]["source"]) for e in waiting[0].event_ids] == [
        ("review", "registry"),
        ("auto", "registry"),
    ]
    assert (got[waiting[1].event_ids[0]]["status"], got[waiting[1].event_ids[0]]["source"]) == (
        "review",
        "default",
    )
    # Both starts read the registry to its end (v1's commit marker included), none timed out.
    log = (policy.logs / "policy.log").read_text()
    assert log.count("registry read in") == 2, log[-3000:]
    assert "registry not read within" not in log
