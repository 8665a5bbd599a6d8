"""Simulated traffic for the drift worker: PredictionBatch messages straight onto the
predictions topic, with shifts at known events."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from confluent_kafka import Producer

from shared.contracts.batches import PredictionColumns
from shared.contracts.codec import AvroCodec

STEP_MS = 10
"""Event-time spacing of consecutive events of one model version: 100 events per second."""
CATEGORIES = ("a", "b", "c")
CATEGORY_SHARES = (0.5, 0.3, 0.2)
LABELS = ("cat", "dog", "bird")
LABEL_SHARES = (0.6, 0.3, 0.1)


@dataclass
class Scenario:
    name: str
    numeric: int = 5
    categorical: int = 2
    shift_at: int | None = None
    """Index of the first shifted event."""
    shift_until: int | None = None
    """Index of the first event after the shift (back to the reference); None = never."""
    shift: str = ""
    """``numeric`` (x0 mean + 1 sd), ``categorical`` (c0 shares reversed) or ``labels``."""
    model_version_id: int | None = None
    start_ms: int = field(default_factory=lambda: int(time.time() * 1000) - 3_600_000)

    def time_of(self, index: int) -> int:
        return self.start_ms + index * STEP_MS


def batches(s: Scenario, total: int, size: int = 500, seed: int = 0) -> Iterator[PredictionColumns]:
    rng = np.random.default_rng(seed)
    for lo in range(0, total, size):
        n = min(size, total - lo)
        idx = np.arange(lo, lo + n)
        shifted = idx >= s.shift_at if s.shift_at is not None else np.zeros(n, dtype=bool)
        if s.shift_until is not None:
            shifted &= idx < s.shift_until
        numeric = {f"x{j}": rng.normal(size=n) for j in range(s.numeric)}
        if s.shift == "numeric":
            numeric["x0"] = numeric["x0"] + shifted
        cats = {
            f"c{j}": rng.choice(CATEGORIES, size=n, p=CATEGORY_SHARES) for j in range(s.categorical)
        }
        if s.shift == "categorical":
            moved = rng.choice(CATEGORIES, size=n, p=CATEGORY_SHARES[::-1])
            cats["c0"] = np.where(shifted, moved, cats["c0"])
        labels = rng.choice(LABELS, size=n, p=LABEL_SHARES)
        if s.shift == "labels":
            labels = np.where(shifted, rng.choice(LABELS, size=n, p=(0.3, 0.3, 0.4)), labels)
        yield PredictionColumns(
            tenant="default",
            model_name=s.name,
            model_version="v1",
            model_version_id=s.model_version_id,
            event_ids=[f"{s.name}-{i}" for i in idx.tolist()],
            event_time_ms=s.start_ms + idx.astype(np.int64) * STEP_MS,
            predicted_labels=labels.tolist(),
            confidences=rng.beta(8, 2, size=n),
            numeric_features=numeric,
            categorical_features={k: v.tolist() for k, v in cats.items()},
        )


def send(producer: Producer, topic: str, codec: AvroCodec, cols: PredictionColumns) -> None:
    while True:
        try:
            producer.produce(
                topic, codec.encode("PredictionBatch", cols.to_record()), cols.key.encode()
            )
            return
        except BufferError:
            producer.poll(0.05)
