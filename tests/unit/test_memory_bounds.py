"""Memory follows the data, never the longest value times the count.

Traced in-process (``tracemalloc``), so the figure is Python's own allocations for one
message: the largest message each path may carry under the default limits and Kafka's
1 MB message size, processed by ingest's parsing, the recorder's row building and the
drift profile's counting. Bound: 40 × the message size. A fixed-width numpy unicode array
(the old drift code) would have needed 10,000 × 1 MB × 4 bytes = 40 GB for the second test.
"""

from __future__ import annotations

import time
import tracemalloc
import uuid
from collections.abc import Callable

import numpy as np

from services.ingest.parsing import Source, parse
from services.recorder.store import decision_columns
from shared.contracts.batches import DecisionColumns, PredictionColumns
from shared.contracts.codec import AvroCodec
from shared.contracts.limits import DEFAULT_LIMITS as L
from shared.drift.profile_builder import categorical_profile, feature_profile

CODEC = AvroCodec()
BOUND_FACTOR = 40


def peak_bytes(work: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def largest_batch() -> tuple[PredictionColumns, bytes]:
    """About 1 MB: 95 events, 10 categorical features of max-length distinct values made
    of 4-byte UTF-8 characters (the widest in memory too: 4 bytes a character)."""
    n, width = 95, L.max_string
    now = int(time.time() * 1000)
    cols = PredictionColumns(
        tenant="acme",
        model_name="fraud",
        model_version="v1",
        event_ids=[str(uuid.uuid4()) for _ in range(n)],
        event_time_ms=np.full(n, now, dtype=np.int64),
        predicted_labels=["yes"] * n,
        confidences=np.full(n, 0.9),
        categorical_features={
            f"f{j}": [f"{i:06d}".ljust(width, "\U0001f600") for i in range(n)] for j in range(10)
        },
    )
    return cols, CODEC.encode("PredictionBatch", cols.to_record())


def test_the_largest_batch_costs_a_bounded_multiple_of_its_size() -> None:
    cols, value = largest_batch()
    assert 0.5e6 < len(value) < 1.05e6
    src = [Source("ns.inference.raw", 0, 0, value)]
    parsed = parse(src, "ns.inference.raw", CODEC, L)
    assert not parsed.dead
    peak = peak_bytes(lambda: parse(src, "ns.inference.raw", CODEC, L))
    assert peak < BOUND_FACTOR * len(value), f"ingest parse peak {peak} B"
    decided = DecisionColumns(
        cols, np.full(len(cols), 0.9), np.zeros(len(cols), bool), 0.5, "registry", "identity", 0
    )
    peak = peak_bytes(lambda: decision_columns([decided]))
    assert peak < BOUND_FACTOR * len(value), f"recorder rows peak {peak} B"
    values = cols.categorical_features["f0"]
    peak = peak_bytes(lambda: categorical_profile("f0", values))
    assert peak < BOUND_FACTOR * len(value), f"drift profile peak {peak} B"


def test_one_huge_category_among_many_costs_its_own_size_not_the_count_times_it() -> None:
    huge = "x" * 1_000_000
    values = [f"v{i}" for i in range(9_999)] + [huge]
    peak = peak_bytes(lambda: feature_profile("country", values))
    assert peak < 20 * len(huge), f"peak {peak} B"
    profile = categorical_profile("country", values, max_categories=10)
    peak = peak_bytes(lambda: profile.count(values))
    assert peak < 20 * len(huge), f"peak {peak} B"
