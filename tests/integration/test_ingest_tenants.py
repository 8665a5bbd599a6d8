"""Ingest with two tenants that use the same event ids (its own topic namespace)."""

from __future__ import annotations

import time
from pathlib import Path

from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.runtime.kafka import make_producer
from shared.settings import Settings
from simulator.generator import ModelSpec, generate
from simulator.producer import event_records
from tests.integration.conftest import start_service
from tests.integration.ingest_workload import produce
from tests.integration.kafka_io import TopicReader


def test_event_ids_are_unique_within_a_tenant_only(
    isolated_settings: Settings, tmp_path: Path
) -> None:
    """Globex reuses an event id of Acme's: both predictions pass, and a Globex label finds
    Globex's prediction, never Acme's (a label for an id only Acme has stays unattributed)."""
    codec = AvroCodec()
    topics = Topics.for_namespace(isolated_settings.topic_namespace)
    now = int(time.time() * 1000)
    acme = generate(ModelSpec(name="fraud", version="v1", tenant="acme"), 2, seed=1, start_ms=now)
    globex = generate(ModelSpec(name="fraud", version="v1", tenant="globex"), 1, 2, now + 5)
    shared_id, acme_only = acme.predictions.event_ids
    globex.predictions.event_ids = [shared_id]
    records = [*event_records(acme.predictions), *event_records(globex.predictions)]
    produce(
        isolated_settings,
        [(f"{r['tenant']}/fraud/v1".encode(), codec.encode("InferenceEvent", r)) for r in records],
    )
    worker = start_service("ingest", isolated_settings, tmp_path / "ingest.log")
    reader = TopicReader(isolated_settings, [topics.predictions, topics.labels], codec)
    try:
        reader.wait_for(
            lambda: (
                sum(len(d.record["event_ids"]) for d in reader.records[topics.predictions]) == 3
            ),
            60,
            "both tenants' predictions",
            [worker],
        )
        passed = sorted(
            (d.record["tenant"], eid)
            for d in reader.records[topics.predictions]
            for eid in d.record["event_ids"]
        )
        assert passed == sorted([("acme", shared_id), ("acme", acme_only), ("globex", shared_id)])

        def label(tenant: str, event_id: str, truth: str) -> tuple[bytes, bytes]:
            rec = {
                "event_id": event_id, "tenant": tenant, "model_name": None,
                "model_version": None, "ground_truth": truth, "source": "feed",
                "label_time_ms": now + 60_000,
            }  # fmt: skip
            return tenant.encode(), codec.encode("Label", rec)

        producer = make_producer(isolated_settings)
        for key, value in (
            label("globex", shared_id, "dog"),
            label("globex", acme_only, "cat"),
            label("acme", shared_id, "bird"),
        ):
            producer.produce(topics.labels_raw, value, key)
        assert producer.flush(15) == 0
        reader.wait_for(
            lambda: sum(len(d.record["event_ids"]) for d in reader.records[topics.labels]) >= 3,
            60,
            "the three labels",
            [worker],
        )
        reader.poll(2.0)  # anything extra would be a duplicate
        got = sorted(
            (d.record["tenant"], d.record["model_name"] or "", eid, truth, pred_ms > 0)
            for d in reader.records[topics.labels]
            for eid, truth, pred_ms in zip(
                d.record["event_ids"],
                d.record["ground_truths"],
                d.record["prediction_time_ms"] or [0] * len(d.record["event_ids"]),
                strict=True,
            )
        )
        assert got == sorted(
            [
                ("acme", "fraud", shared_id, "bird", True),
                ("globex", "fraud", shared_id, "dog", True),
                ("globex", "", acme_only, "cat", False),
            ]
        )
    finally:
        worker.terminate()
        worker.wait(30)
        reader.close()
