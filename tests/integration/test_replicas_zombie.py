"""A policy replica restarted beside its paused predecessor: the transactional id
``<group>.<instance id>`` fences the predecessor and never a sibling."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.settings import Settings
from tests.integration.conftest import start_service
from tests.integration.ingest_workload import produce, workload
from tests.integration.kafka_io import TopicReader


def test_a_policy_replica_restarted_beside_its_paused_predecessor_fences_only_it(
    isolated_settings: Settings, tmp_path: Path
) -> None:
    """Replica a is paused (a zombie) and a new a starts with the same instance id: the
    new one's transactional id fences the zombie, whose work can no longer commit, while
    replica b, another id, runs on untouched; every event is decided exactly once, and none
    by the zombie once it is fenced."""
    settings = isolated_settings
    codec = AvroCodec()
    topics = Topics.for_namespace(settings.topic_namespace)
    work = workload(codec, seed=37)
    half = len(work.messages) // 2
    env = {"CALIBER_POLICY_MAX_MESSAGES": "5"}

    def start(name: str, replica: str, log: str) -> subprocess.Popen[bytes]:
        return start_service(
            name, settings, tmp_path / f"{log}.log", CALIBER_INSTANCE_ID=replica, **env
        )

    procs = {
        "ingest": start("ingest", "a", "ingest"),
        "a": start("policy", "a", "policy-a"),
        "b": start("policy", "b", "policy-b"),
    }
    reader = TopicReader(settings, [topics.decisions], codec)

    def decided() -> list[str]:
        return [
            i
            for d in reader.records[topics.decisions]
            for i in d.record["predictions"]["event_ids"]
        ]

    try:
        # Both replicas members with partitions before the traffic, so a is deciding its
        # share when it is paused (on a loaded machine it can take a while to start).
        for log in ("policy-a", "policy-b"):
            path = tmp_path / f"{log}.log"
            reader.wait_for(lambda p=path: "assigned [(" in p.read_text(errors="replace"), 120,
                            f"{log}'s first partitions", list(procs.values()))  # fmt: skip
        produce(settings, work.messages[:half])
        reader.wait_for(lambda: len(decided()) >= 1_000, 120, "the first thousand decisions",
                        list(procs.values()))  # fmt: skip
        procs["a"].send_signal(signal.SIGSTOP)
        procs["a2"] = start("policy", "a", "policy-a2")
        # The new a initialised its transactions before it subscribed, and is given
        # partitions once the paused one has left the group (its session expired).
        a2_log = tmp_path / "policy-a2.log"
        reader.wait_for(lambda: "assigned [(" in a2_log.read_text(errors="replace"), 120,
                        "the new a's partitions", [procs["a2"], procs["b"]])  # fmt: skip
        procs["a"].send_signal(signal.SIGCONT)
        produce(settings, work.messages[half:])
        live = [procs[k] for k in ("ingest", "b", "a2")]
        reader.wait_for(lambda: len(decided()) >= len(work.valid_ids), 180,
                        "every valid event decided", live)  # fmt: skip
        reader.poll(3.0)
        ids = decided()
        assert len(ids) == len(set(ids)) == len(work.valid_ids)
        assert set(ids) == work.valid_ids
        assert procs["b"].poll() is None and procs["a2"].poll() is None
        for log in ("policy-b", "policy-a2"):
            text = (tmp_path / f"{log}.log").read_text(errors="replace").lower()
            assert "fenced" not in text, f"{log} was fenced"
        # The zombie dropped the batch in hand with the partitions it lost and rejoined the
        # group; only the events of a model version it is given now would make it try a
        # transaction, and those need not be any of its partitions. Alone in the group it is
        # given them all: its first transaction is refused (the new a holds its id), it
        # stops, and nothing of it is committed.
        extra: set[str] = set()
        if procs["a"].poll() is None:
            for k in ("a2", "b"):
                procs[k].terminate()
                procs[k].wait(30)
            more = workload(codec, seed=1_037)  # ids apart from the first workload's
            extra = more.valid_ids
            produce(settings, more.messages[:500])
            procs["a"].wait(120)
        zombie = (tmp_path / "policy-a.log").read_text(errors="replace")
        assert "fenced by a newer instance" in zombie
        assert "SystemError" not in zombie  # it ends over the fencing, not its own close
        reader.poll(3.0)
        assert len(decided()) == len(work.valid_ids) and not set(decided()) & extra
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.terminate()
                p.wait(30)
        reader.close()
