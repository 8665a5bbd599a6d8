"""Sends generated events and labels to Kafka as a model server and a label feed would."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from confluent_kafka import Producer

from shared.contracts.batches import LabelColumns, PredictionColumns
from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from simulator.generator import Generated

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Sent:
    predictions: int = 0
    labels: int = 0
    messages: int = 0
    seconds: float = 0.0


def event_records(
    cols: PredictionColumns, truths: Sequence[str | None] | None = None
) -> Iterator[dict[str, Any]]:
    """One InferenceEvent record per row; ``truths`` puts ground truth on the event."""
    feats_num = {k: v.tolist() for k, v in cols.numeric_features.items()}
    feats_cat = cols.categorical_features
    probs = cols.probabilities
    times = cols.event_time_ms.tolist()
    confs = cols.confidences.tolist()
    for i, eid in enumerate(cols.event_ids):
        features: dict[str, float | str] = {k: v[i] for k, v in feats_num.items()}
        features.update({k: v[i] for k, v in feats_cat.items()})
        yield {
            "event_id": eid,
            "tenant": cols.tenant,
            "model_name": cols.model_name,
            "model_version": cols.model_version,
            "model_version_id": cols.model_version_id,
            "event_time_ms": times[i],
            "predicted_label": cols.predicted_labels[i],
            "confidence": confs[i],
            "probabilities": None
            if probs is None
            else dict(zip(cols.class_labels, probs[i].tolist(), strict=True)),
            "logits": None,
            "features": features or None,
            "ground_truth": None if truths is None else truths[i],
            "uncertainty": None,
            "metadata": {},
        }


def label_columns(gen: Generated, rows: np.ndarray) -> LabelColumns:
    cols = gen.predictions
    idx = rows.tolist()
    return LabelColumns(
        tenant=cols.tenant,
        model_name=cols.model_name,
        model_version=cols.model_version,
        event_ids=[cols.event_ids[i] for i in idx],
        ground_truths=[gen.ground_truth[i] for i in idx],
        sources=["feed"] * len(idx),
        label_time_ms=gen.label_time_ms[rows],
    )


class Pacer:
    """Keeps a producer at ``rate`` events/s (None = as fast as possible)."""

    def __init__(self, rate: float | None) -> None:
        self._rate = rate
        self._start = time.monotonic()
        self._sent = 0

    def sent(self, n: int) -> None:
        self._sent += n
        if self._rate:
            ahead = self._sent / self._rate - (time.monotonic() - self._start)
            if ahead > 0:
                time.sleep(ahead)


def produce(
    producer: Producer,
    topics: Topics,
    codec: AvroCodec,
    generated: Sequence[Generated],
    form: str = "single",
    batch_size: int = 500,
    rate: float | None = None,
    labels_on_events: bool = False,
) -> Sent:
    """Send every model's predictions (interleaved in chunks), then on-time labels, then late.

    ``form`` is ``single`` (one InferenceEvent / Label per message, as any producer would)
    or ``batch`` (PredictionBatch / LabelBatch of ``batch_size`` events).
    """
    if form not in ("single", "batch"):
        raise ValueError(f"form must be 'single' or 'batch', got {form!r}")
    started = time.monotonic()
    sent = Sent()
    pacer = Pacer(rate)
    chunks = [list(_chunk_ranges(len(g.predictions), batch_size)) for g in generated]
    for round_ in range(max((len(c) for c in chunks), default=0)):
        for gen, ranges in zip(generated, chunks, strict=True):
            if round_ >= len(ranges):
                continue
            rows = ranges[round_]
            _send_predictions(producer, topics, codec, gen, rows, form, labels_on_events, sent)
            sent.predictions += len(rows)
            pacer.sent(len(rows))
    if not labels_on_events:
        for gen in generated:
            on_time = np.flatnonzero(gen.labeled & ~gen.late)
            sent.labels += _send_labels(
                producer, topics, codec, gen, on_time, form, batch_size, sent
            )
    for gen in generated:
        late = np.flatnonzero(gen.late)
        sent.labels += _send_labels(producer, topics, codec, gen, late, form, batch_size, sent)
    remaining = producer.flush(60)
    if remaining:
        raise RuntimeError(f"{remaining} messages were not delivered to Kafka within 60 s")
    sent.seconds = time.monotonic() - started
    return sent


def _send_predictions(
    producer: Producer,
    topics: Topics,
    codec: AvroCodec,
    gen: Generated,
    rows: np.ndarray,
    form: str,
    labels_on_events: bool,
    sent: Sent,
) -> None:
    """One chunk of a model's predictions, as single events or one batch."""
    cols = gen.predictions.take(rows)
    key = cols.key.encode()
    truths = None
    if labels_on_events:
        truths = [
            gen.ground_truth[i] if gen.labeled[i] and not gen.late[i] else None
            for i in rows.tolist()
        ]
    if form == "single":
        for rec in event_records(cols, truths):
            _send(producer, topics.inference_raw, key, codec.encode("InferenceEvent", rec))
            sent.messages += 1
        return
    if truths is not None:
        cols.ground_truths = truths
    _send(producer, topics.inference_raw, key, codec.encode("PredictionBatch", cols.to_record()))
    sent.messages += 1


def _send_labels(
    producer: Producer,
    topics: Topics,
    codec: AvroCodec,
    gen: Generated,
    rows: np.ndarray,
    form: str,
    batch_size: int,
    sent: Sent,
) -> int:
    for start in range(0, len(rows), batch_size):
        cols = label_columns(gen, rows[start : start + batch_size])
        key = (cols.key or cols.tenant).encode()
        if form == "batch":
            _send(producer, topics.labels_raw, key, codec.encode("LabelBatch", cols.to_record()))
            sent.messages += 1
            continue
        for i, eid in enumerate(cols.event_ids):
            record = {
                "event_id": eid,
                "tenant": cols.tenant,
                "model_name": cols.model_name,
                "model_version": cols.model_version,
                "ground_truth": cols.ground_truths[i],
                "source": "feed",
                "label_time_ms": int(cols.label_time_ms[i]),
            }
            _send(producer, topics.labels_raw, key, codec.encode("Label", record))
            sent.messages += 1
    return len(rows)


def _chunk_ranges(n: int, size: int) -> Iterator[np.ndarray]:
    for start in range(0, n, size):
        yield np.arange(start, min(start + size, n))


def _send(producer: Producer, topic: str, key: bytes, value: bytes) -> None:
    while True:
        try:
            producer.produce(topic, value, key)
            producer.poll(0)
            return
        except BufferError:
            producer.poll(0.05)
