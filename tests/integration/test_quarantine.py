"""A message a worker crashes on repeatedly is quarantined, and the worker goes on.

The crash is injected (``CALIBER_FAULT_INJECT=ingest:<marker>`` makes ingest raise on a
message holding the marker, which stops the worker process); the test plays the part of
the supervisor and starts the worker again each time it exits. The crashed batch is searched
by halves; after three crashes on the poison alone the message is dead-lettered with
``worker_crash`` and every other message, before and after it in the same partition, comes
out exactly once.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from shared.contracts.topics import Topics
from shared.settings import Settings
from tests.integration.conftest import start_service
from tests.integration.edge_io import (
    CODEC,
    dead_letters,
    event_ids_on,
    inference_event,
    produce_raw,
)
from tests.integration.kafka_io import TopicReader
from tests.integration.pipeline_io import wait_metric
from tests.ports import free_port

MARKER = "poison-3f9c1e"


def test_a_poison_message_is_quarantined_after_three_crashes(
    isolated_settings: Settings, tmp_path: Path
) -> None:
    topics = Topics.for_namespace(isolated_settings.topic_namespace)
    good = [inference_event() for _ in range(12)]
    poison = inference_event(metadata={"note": MARKER})
    values = [CODEC.encode("InferenceEvent", e) for e in good[:6]]
    values.append(CODEC.encode("InferenceEvent", poison))
    values += [CODEC.encode("InferenceEvent", e) for e in good[6:]]
    produce_raw(isolated_settings, topics.inference_raw, values)
    env = {"CALIBER_FAULT_INJECT": f"ingest:{MARKER}", "CALIBER_QUARANTINE_AFTER_CRASHES": "3"}
    log = tmp_path / "ingest.log"
    reader = TopicReader(isolated_settings, [topics.predictions, topics.deadletter], CODEC)
    starts = 0
    worker: subprocess.Popen[bytes] | None = None
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if worker is None or worker.poll() is not None:
                port = free_port()
                worker = start_service(
                    "ingest", isolated_settings, log, CALIBER_METRICS_PORT=str(port), **env
                )
                starts += 1
            reader.poll(1.0)
            quarantined = [
                d
                for d in dead_letters(reader, topics.deadletter)
                if d["error_code"] == "worker_crash"
            ]
            if quarantined and len(set(event_ids_on(reader, topics.predictions))) == len(good):
                break
        else:
            raise AssertionError(f"not done after {starts} starts; see {log}")
        reader.poll(2.0)  # anything produced twice would show up now
        assert worker.poll() is None, "the worker goes on after the quarantine"
        counted = wait_metric(
            port,
            "caliber_ingest_quarantined_messages_total",
            {"topic": topics.inference_raw},
            at_least=1,
        )
        assert counted == 1
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(30)
        reader.close()
    ids = event_ids_on(reader, topics.predictions)
    assert sorted(ids) == sorted(e["event_id"] for e in good), "each good event exactly once"
    (dead,) = [d for d in dead_letters(reader, topics.deadletter)]
    assert dead["error_code"] == "worker_crash" and dead["service"] == "ingest"
    assert dead["source_offset"] == 6 and dead["raw"] == values[6]
    # Three crashes on the poison alone, after one for each wider attempt that held it: the
    # batch, then halves of it (13 messages: 13, 6, 3 at most), so 4 to 7 starts in all.
    assert 4 <= starts <= 7, f"{starts} starts"
