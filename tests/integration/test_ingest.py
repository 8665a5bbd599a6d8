"""The ingest gate on the real stack: exact counts of valid, duplicate and faulty events."""

from __future__ import annotations

from pathlib import Path

from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.settings import Settings
from tests.integration.conftest import start_service
from tests.integration.ingest_workload import (
    N_FAULTY,
    N_MESSAGES,
    check_exact,
    produce,
    wait_complete,
    workload,
)
from tests.integration.kafka_io import TopicReader


def test_ingest_counts_exactly(isolated_settings: Settings, tmp_path: Path) -> None:
    codec = AvroCodec()
    topics = Topics.for_namespace(isolated_settings.topic_namespace)
    work = workload(codec, seed=11)
    assert len(work.messages) == N_MESSAGES
    assert len(work.fault_codes) >= 6 and sum(work.fault_codes.values()) == N_FAULTY
    produce(isolated_settings, work.messages)
    worker = start_service("ingest", isolated_settings, tmp_path / "ingest.log")
    reader = TopicReader(isolated_settings, [topics.predictions, topics.deadletter], codec)
    try:
        wait_complete(reader, topics, work, timeout=120, workers=[worker])
        check_exact(reader, topics, work)
        assert worker.poll() is None, "the ingest worker died on bad input"
    finally:
        worker.terminate()
        worker.wait(30)
        reader.close()
