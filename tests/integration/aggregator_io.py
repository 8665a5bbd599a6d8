"""Writing decisions and labels straight to the aggregator's input topics."""

from __future__ import annotations

import time

import numpy as np

from services.policy.processing import decide
from shared.contracts.batches import LabelColumns
from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.recalibration.maps import IDENTITY
from shared.runtime.kafka import make_producer
from shared.settings import Settings
from simulator.generator import Generated


def send_decisions_and_labels(
    settings: Settings,
    gen: Generated,
    label_rows: np.ndarray | None = None,
    label_time_ms: np.ndarray | None = None,
    batch: int = 500,
    threshold: float = 0.7,
    decisions: bool = True,
) -> None:
    topics = Topics.for_namespace(settings.topic_namespace)
    codec = AvroCodec()
    producer = make_producer(settings)
    cols = gen.predictions
    n = len(cols)
    key = cols.key.encode()
    if decisions:
        for start in range(0, n, batch):
            part = cols.take(np.arange(start, min(start + batch, n)))
            d = decide(part, threshold, IDENTITY, "registry", int(time.time() * 1000))
            producer.produce(topics.decisions, codec.encode("DecisionBatch", d.to_record()), key)
    rows = np.flatnonzero(gen.labeled) if label_rows is None else label_rows
    times = gen.label_time_ms if label_time_ms is None else label_time_ms
    for start in range(0, len(rows), batch):
        r = rows[start : start + batch]
        labels = LabelColumns(
            tenant=cols.tenant,
            model_name=cols.model_name,
            model_version=cols.model_version,
            event_ids=[cols.event_ids[i] for i in r.tolist()],
            ground_truths=[gen.ground_truth[i] for i in r.tolist()],
            sources=["feed"] * len(r),
            label_time_ms=times[r],
        )
        producer.produce(topics.labels, codec.encode("LabelBatch", labels.to_record()), key)
    assert producer.flush(30) == 0
