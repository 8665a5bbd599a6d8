"""Ingest's duplicate claims on the real Redis: a batch whose labels do not wait on its
predictions claims both at once, and counts exactly what the one-after-the-other path counts."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np

from services.ingest.dedupe import Deduper
from services.ingest.parsing import Source, parse
from services.ingest.processing import IngestProcessor, _labels_independent
from shared.contracts.batches import LabelColumns
from shared.contracts.codec import AvroCodec, Decoded
from shared.contracts.topics import Topics
from shared.contracts.validation import Limits
from shared.runtime.clock import now_ms
from shared.runtime.pipeline import Output
from shared.settings import Settings
from tests.integration.redis_scratch import with_scratch_prefix
from tests.unit.test_ingest_parsing import batch

CODEC = AvroCodec()


def _predictions(ids: list[str], truths: list[str | None] | None = None) -> bytes:
    cols = batch(
        len(ids),
        event_ids=ids,
        event_time_ms=np.full(len(ids), now_ms(), dtype=np.int64),
        ground_truths=truths,
    )
    return CODEC.encode("PredictionBatch", cols.to_record())


def _labels(ids: list[str], keyed: bool = True) -> bytes:
    cols = LabelColumns(
        tenant="acme",
        model_name="fraud" if keyed else None,
        model_version="v1" if keyed else None,
        event_ids=ids,
        ground_truths=["no"] * len(ids),
        sources=["feed"] * len(ids),
        label_time_ms=np.full(len(ids), now_ms(), dtype=np.int64),
    )
    return CODEC.encode("LabelBatch", cols.to_record())


def _decoded(outputs: list[Output], topic: str) -> list[dict[str, Any]]:
    out = []
    for o in outputs:
        if o.topic == topic:
            decoded = CODEC.decode(o.value)
            assert isinstance(decoded, Decoded)
            out.append(decoded.record)
    return out


def test_labels_claimed_beside_predictions_count_like_the_sequential_path(
    stack_settings: Settings,
) -> None:
    topics = Topics.for_namespace(f"t{uuid.uuid4().hex[:8]}")
    ids = [str(uuid.uuid4()) for _ in range(4)]

    def batch(offset: int, keyed: bool) -> list[Source]:
        return [
            Source(topics.inference_raw, 0, offset, _predictions(ids)),
            # ids[0] twice in the batch: one label, one duplicate
            Source(topics.labels_raw, 0, offset, _labels([ids[0], ids[1], ids[0]], keyed)),
        ]

    async def go(client: Any, prefix: str) -> None:
        processor = IngestProcessor(topics, CODEC, Deduper(client, prefix, 600), Limits(), 500)
        first = batch(10, keyed=True)
        assert _labels_independent(parse(first, topics.inference_raw, CODEC, Limits()))
        outputs, outcome = await processor.process(first)
        assert (outcome.predictions_accepted, outcome.predictions_duplicate) == (4, 0)
        assert (outcome.labels_accepted, outcome.labels_duplicate) == (2, 1)
        (labels,) = _decoded(outputs, topics.labels)
        assert labels["event_ids"] == [ids[0], ids[1]]
        assert [r["event_ids"] for r in _decoded(outputs, topics.predictions)] == [ids]
        # The same events from other messages: every one a duplicate, nothing emitted.
        again = batch(11, keyed=True)
        outputs, outcome = await processor.process(again)
        assert (outcome.predictions_accepted, outcome.predictions_duplicate) == (0, 4)
        assert (outcome.labels_accepted, outcome.labels_duplicate) == (0, 3)
        assert outputs == []
        # The first message read again after a crash: its own claims, kept whole.
        outputs, outcome = await processor.process(first)
        assert (outcome.predictions_accepted, outcome.labels_accepted) == (4, 2)
        # A label without its model is looked up after the batch's predictions are
        # claimed (one after the other), so it finds its model in the same batch.
        fresh = [str(uuid.uuid4())]
        mixed = [
            Source(topics.inference_raw, 0, 20, _predictions(fresh)),
            Source(topics.labels_raw, 0, 20, _labels(fresh, keyed=False)),
        ]
        assert not _labels_independent(parse(mixed, topics.inference_raw, CODEC, Limits()))
        outputs, outcome = await processor.process(mixed)
        (label,) = _decoded(outputs, topics.labels)
        assert (label["model_name"], label["model_version"]) == ("fraud", "v1")
        # A prediction carrying its own ground truth makes its label wait for its claim.
        carried = [Source(topics.inference_raw, 0, 30, _predictions(ids[:1], ["no"]))]
        assert not _labels_independent(parse(carried, topics.inference_raw, CODEC, Limits()))
        outputs, outcome = await processor.process(carried)
        assert outcome.predictions_duplicate == 1 and outcome.labels_accepted == 0

    with_scratch_prefix(stack_settings, topics.predictions, go)
