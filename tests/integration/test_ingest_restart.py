"""Killing the ingest worker mid-run loses nothing and counts nothing twice."""

from __future__ import annotations

import signal
from pathlib import Path

from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.settings import Settings
from tests.integration.conftest import start_service
from tests.integration.ingest_workload import check_exact, produce, wait_complete, workload
from tests.integration.kafka_io import TopicReader


def test_ingest_restart_keeps_exact_counts(isolated_settings: Settings, tmp_path: Path) -> None:
    codec = AvroCodec()
    topics = Topics.for_namespace(isolated_settings.topic_namespace)
    work = workload(codec, seed=23)
    half = len(work.messages) // 2
    produce(isolated_settings, work.messages[:half])
    log = tmp_path / "ingest.log"
    # Small fetches make many transactions, so the kill lands between and inside them.
    worker = start_service("ingest", isolated_settings, log, CALIBER_INGEST_MAX_MESSAGES="200")
    reader = TopicReader(isolated_settings, [topics.predictions, topics.deadletter], codec)
    try:
        reader.wait_for(
            lambda: (
                sum(len(d.record["event_ids"]) for d in reader.records[topics.predictions]) >= 1_000
            ),
            90,
            "the first thousand predictions",
        )
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        produce(isolated_settings, work.messages[half:])
        worker = start_service("ingest", isolated_settings, log, CALIBER_INGEST_MAX_MESSAGES="200")
        wait_complete(reader, topics, work, timeout=120, workers=[worker])
        check_exact(reader, topics, work)
        assert worker.poll() is None
    finally:
        worker.terminate()
        worker.wait(30)
        reader.close()
