"""A 10,000-message ingest workload: valid, exactly duplicated and faulty events."""

from __future__ import annotations

import random
import subprocess
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.runtime.kafka import make_producer
from shared.settings import Settings
from simulator.faults import FAULTS
from simulator.generator import ModelSpec, generate
from simulator.producer import event_records
from tests.integration.kafka_io import TopicReader

N_MESSAGES = 10_000
N_FAULTY = 500  # 5 %
N_DUPLICATES = 300  # 3 %


@dataclass
class Workload:
    messages: list[tuple[bytes, bytes]]
    valid_ids: set[str]
    fault_codes: Counter[str]


def workload(codec: AvroCodec, seed: int) -> Workload:
    n_valid = N_MESSAGES - N_FAULTY - N_DUPLICATES
    specs = [
        ModelSpec(name="fraud", version="v1", numeric_features=3, categorical_features=1),
        ModelSpec(name="fraud", version="v2", overconfidence=0.1, numeric_features=3),
    ]
    now = int(time.time() * 1000)
    records = []
    for i, spec in enumerate(specs):
        gen = generate(spec, n_valid // 2 + N_FAULTY, seed + i, now)
        records.extend(event_records(gen.predictions))
    rng = random.Random(seed)
    rng.shuffle(records)
    valid = records[:n_valid]
    broken_base = records[n_valid : n_valid + N_FAULTY]
    messages = [
        (
            f"{r['tenant']}/{r['model_name']}/{r['model_version']}".encode(),
            codec.encode("InferenceEvent", r),
        )
        for r in valid
    ]
    duplicates = rng.sample(messages, N_DUPLICATES)
    kinds = list(FAULTS)
    codes: Counter[str] = Counter()
    faulty = []
    for j, rec in enumerate(broken_base):
        code = kinds[j % len(kinds)]
        faulty.append((b"broken", FAULTS[code](codec, rec)))
        codes[str(code)] += 1
    everything = messages + duplicates + faulty
    rng.shuffle(everything)
    return Workload(everything, {r["event_id"] for r in valid}, codes)


def produce(settings: Settings, messages: list[tuple[bytes, bytes]]) -> None:
    topics = Topics.for_namespace(settings.topic_namespace)
    producer = make_producer(settings)
    for key, value in messages:
        producer.produce(topics.inference_raw, value, key)
        producer.poll(0)
    assert producer.flush(30) == 0


def _prediction_ids(reader: TopicReader, topic: str) -> list[str]:
    return [eid for d in reader.records[topic] for eid in d.record["event_ids"]]


def check_exact(reader: TopicReader, topics: Topics, work: Workload) -> None:
    ids = _prediction_ids(reader, topics.predictions)
    assert len(ids) == len(work.valid_ids), "duplicates or losses on the predictions topic"
    assert set(ids) == work.valid_ids
    dead = reader.records[topics.deadletter]
    assert Counter(d.record["error_code"] for d in dead) == work.fault_codes
    for d in dead:
        assert d.record["source_topic"] == topics.inference_raw
        assert d.record["raw"], "a dead letter must carry the rejected bytes"
        assert d.record["message"], "a dead letter must say what is wrong"


def wait_complete(
    reader: TopicReader,
    topics: Topics,
    work: Workload,
    timeout: float,
    workers: Sequence[subprocess.Popen[bytes]] = (),
) -> None:
    reader.wait_for(
        lambda: (
            len(_prediction_ids(reader, topics.predictions)) >= len(work.valid_ids)
            and len(reader.records[topics.deadletter]) >= N_FAULTY
        ),
        timeout,
        "every valid event and every dead letter",
        workers,
    )
    reader.poll(2.0)  # anything extra would be a duplicate
