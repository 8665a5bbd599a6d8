"""``labels_pending`` counts the predictions still waiting for a label, and forgets those
whose label horizon has passed (an aggregator with a 60 s horizon, so that happens soon)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.settings import Settings
from simulator.generator import ModelSpec, generate
from tests.integration.aggregator_io import send_decisions_and_labels
from tests.integration.conftest import running_service
from tests.integration.kafka_io import TopicReader
from tests.integration.test_aggregator import totals, wait_counts

HORIZON_S = 60


@pytest.fixture(scope="module")
def aggregator(
    isolated_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    with running_service(
        "aggregator",
        isolated_settings,
        tmp_path_factory.mktemp("aggregator") / "aggregator.log",
        CALIBER_SNAPSHOT_INTERVAL_SECONDS="1",
        CALIBER_LABEL_HORIZON_SECONDS=str(HORIZON_S),
    ):
        yield isolated_settings


def test_pending_labels_rise_fall_with_labels_and_expire_at_the_horizon(
    aggregator: Settings,
) -> None:
    settings = aggregator
    topics = Topics.for_namespace(settings.topic_namespace)
    gen = generate(
        ModelSpec(name="pending", version="v1"), 100, seed=3, start_ms=int(time.time() * 1000)
    )
    reader = TopicReader(settings, [topics.metrics], AvroCodec())

    def pending() -> int | None:
        """labels_pending of the newest 1 h snapshot of the model, None before the first."""
        reader.poll(0.2)
        mine = [
            d.record
            for d in reader.records[topics.metrics]
            if d.record["model_name"] == "pending" and d.record["window"] == "1h"
        ]
        return int(mine[-1]["labels_pending"]) if mine else None

    try:
        send_decisions_and_labels(settings, gen, label_rows=np.empty(0, dtype=np.int64))
        wait_counts(settings, gen.predictions.key, "1h", 100, 0)
        reader.wait_for(lambda: pending() == 100, 30, "100 pending labels")
        stored_by = time.monotonic()

        send_decisions_and_labels(settings, gen, label_rows=np.arange(40), decisions=False)
        wait_counts(settings, gen.predictions.key, "1h", 100, 40)
        reader.wait_for(lambda: pending() == 60, 30, "60 pending after 40 labels")

        # The horizon passes: the 60 join records expire, and so does their count.
        reader.wait_for(lambda: pending() == 0, HORIZON_S + 30, "the pending count to expire")
        assert time.monotonic() - stored_by >= HORIZON_S - 5, "expired before the horizon"
        # A label after the horizon finds no prediction: it waits, and counts nothing.
        send_decisions_and_labels(settings, gen, label_rows=np.arange(40, 60), decisions=False)
        time.sleep(3)
        t = totals(settings, gen.predictions.key, "1h")
        assert (t.get("n"), t.get("L")) == (100, 40)
        assert pending() == 0
    finally:
        reader.close()
