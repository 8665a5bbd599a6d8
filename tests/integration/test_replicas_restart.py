"""Two replicas of ingest, the policy and the recorder, one of each killed and restarted
with its instance id: every event is decided once and stored once."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.settings import Settings
from tests.integration.conftest import start_service
from tests.integration.ingest_workload import produce, workload
from tests.integration.kafka_io import TopicReader
from tests.integration.pipeline_io import rows


def test_two_ingest_policy_and_recorder_replicas_count_every_event_once_across_a_restart(
    isolated_settings: Settings, tmp_path: Path
) -> None:
    """One replica of each is SIGKILLed and restarted with its instance id: its
    transactional id fences its own predecessor, never the sibling, which runs on; every
    event is decided once and stored once by the two recorders."""
    settings = isolated_settings
    codec = AvroCodec()
    topics = Topics.for_namespace(settings.topic_namespace)
    work = workload(codec, seed=31)
    half = len(work.messages) // 2
    produce(settings, work.messages[:half])
    env = {"CALIBER_INGEST_MAX_MESSAGES": "200", "CALIBER_POLICY_MAX_MESSAGES": "5"}

    def start(name: str, replica: str) -> subprocess.Popen[bytes]:
        log = tmp_path / f"{name}-{replica}.log"
        return start_service(name, settings, log, CALIBER_INSTANCE_ID=replica, **env)

    names = ("ingest", "policy", "recorder")
    procs = {(n, r): start(n, r) for n in names for r in ("a", "b")}
    reader = TopicReader(settings, [topics.decisions], codec)

    def decided() -> list[str]:
        return [
            i
            for d in reader.records[topics.decisions]
            for i in d.record["predictions"]["event_ids"]
        ]

    try:
        reader.wait_for(lambda: len(decided()) >= 1_000, 120, "the first thousand decisions",
                        list(procs.values()))  # fmt: skip
        for name in names:
            procs[(name, "a")].send_signal(signal.SIGKILL)
            procs[(name, "a")].wait(10)
        produce(settings, work.messages[half:])
        for name in names:
            procs[(name, "a")] = start(name, "a")
        reader.wait_for(lambda: len(decided()) >= len(work.valid_ids), 180,
                        "every valid event decided", list(procs.values()))  # fmt: skip
        reader.poll(3.0)  # a duplicate would show up now
        ids = decided()
        assert len(ids) == len(set(ids)) == len(work.valid_ids)
        assert set(ids) == work.valid_ids
        stored = "SELECT count(*), count(DISTINCT (tenant_id, event_id)) FROM predictions"
        deadline = time.monotonic() + 120
        while rows(settings, stored)[0][0] < len(ids) and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(2)  # a second write of one event would show up now
        assert rows(settings, stored) == [(len(ids), len(ids))]
        for (name, replica), p in procs.items():
            assert p.poll() is None, f"{name}-{replica} exited"
            text = (tmp_path / f"{name}-{replica}.log").read_text(errors="replace")
            assert "fenced" not in text.lower() or replica == "a", f"{name}-{replica} fenced"
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
                p.wait(30)
        reader.close()
