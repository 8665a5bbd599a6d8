"""The ingest step: parse, drop duplicates, and turn what is left into output messages."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from confluent_kafka import Message

from services.ingest.dedupe import Claim, Deduper
from services.ingest.metrics import IngestMetrics
from services.ingest.parsing import Parsed, Source, parse
from shared.contracts.batches import (
    LabelColumns,
    PredictionColumns,
    join_runs,
    split_model_key,
)
from shared.contracts.codec import AvroCodec
from shared.contracts.dead_letters import dead_letter_record
from shared.contracts.errors import Fault
from shared.contracts.topics import Topics
from shared.contracts.validation import Limits
from shared.runtime import clock
from shared.runtime.pipeline import Output


@dataclass(slots=True)
class Outcome:
    predictions_accepted: int = 0
    predictions_duplicate: int = 0
    labels_accepted: int = 0
    labels_duplicate: int = 0
    rejected: int = 0
    dead_letter_codes: dict[str, int] = field(default_factory=dict)


class IngestProcessor:
    """Turns one consumed batch into predictions, labels and dead letters."""

    def __init__(
        self,
        topics: Topics,
        codec: AvroCodec,
        deduper: Deduper,
        limits: Limits,
        batch_max_events: int,
        metrics: IngestMetrics | None = None,
    ) -> None:
        self._topics = topics
        self._codec = codec
        self._dedupe = deduper
        self._limits = limits
        self._batch_max = batch_max_events
        self._metrics = metrics

    async def __call__(self, messages: Sequence[Message]) -> list[Output]:
        sources = [
            Source(str(m.topic()), int(m.partition() or 0), int(m.offset() or 0), m.value())
            for m in messages
        ]
        outputs, outcome = await self.process(sources)
        if self._metrics is not None:
            self._count(outcome)
        return outputs

    async def process(self, sources: Sequence[Source]) -> tuple[list[Output], Outcome]:
        parsed = parse(sources, self._topics.inference_raw, self._codec, self._limits)
        outcome = Outcome(rejected=len(parsed.dead))
        for _, fault in parsed.dead:
            outcome.dead_letter_codes[str(fault.code)] = (
                outcome.dead_letter_codes.get(str(fault.code), 0) + 1
            )
        outputs = self._dead_letters(sources, parsed)
        if _labels_independent(parsed):
            # No label of this batch waits on its predictions' claims (none came inside a
            # prediction, every one names its model): both claims go to Redis at once, so
            # an iteration with both costs one round trip, not two.
            predictions, unique_labels = await asyncio.gather(
                self._unique_predictions(sources, parsed, outcome),
                self._claim_feed_labels(sources, parsed, outcome),
            )
        else:
            predictions = await self._unique_predictions(sources, parsed, outcome)
            labels = [
                lbl for cols, pos in predictions if (lbl := _event_labels(cols, pos)) is not None
            ]
            labels.extend(await self._enriched_labels(sources, parsed))
            unique_labels = await self._unique_labels(labels, outcome)
        # One output message per model version and iteration (up to the batch bound), not
        # one per input message: producers flush small messages at moderate rates, and every
        # message costs each later hop a decode, an encode and a numpy pass of fixed cost.
        for cols in join_runs([cols for cols, _ in predictions]):
            for chunk in _chunks(cols, self._batch_max):
                outputs.append(
                    Output(
                        self._topics.predictions,
                        chunk.key.encode(),
                        self._codec.encode("PredictionBatch", chunk.to_columnar_record()),
                    )
                )
        for label_cols in unique_labels:
            outputs.append(
                Output(
                    self._topics.labels,
                    (label_cols.key or label_cols.tenant).encode(),
                    self._codec.encode("LabelBatch", label_cols.to_columnar_record()),
                )
            )
        return outputs, outcome

    async def _unique_predictions(
        self, sources: Sequence[Source], parsed: Parsed, outcome: Outcome
    ) -> list[tuple[PredictionColumns, list[str]]]:
        """Rows not seen before, each with the position of the message it came from."""
        claims: list[Claim] = []
        spans: list[tuple[PredictionColumns, list[int]]] = []
        seen: set[tuple[str, str]] = set()
        where = _positions(sources)
        for cols, refs in parsed.predictions:
            rows = []
            tenant, key = cols.tenant, cols.key
            for row, (eid, ref, ms) in enumerate(
                zip(cols.event_ids, refs, cols.event_time_ms.tolist(), strict=True)
            ):
                scoped = (tenant, eid)
                if scoped in seen:
                    outcome.predictions_duplicate += 1
                    continue
                seen.add(scoped)
                claims.append(Claim(tenant, eid, where[ref], key, ms))
                rows.append(row)
            spans.append((cols, rows))
        verdicts = await self._dedupe.claim("seen", claims)
        keep = iter(zip(verdicts, claims, strict=True))
        out = []
        for cols, rows in spans:
            kept, positions = [], []
            for row in rows:
                ok, claim = next(keep)
                if ok:
                    kept.append(row)
                    positions.append(claim.position)
            outcome.predictions_duplicate += len(rows) - len(kept)
            outcome.predictions_accepted += len(kept)
            if kept:
                out.append((cols if len(kept) == len(cols) else cols.take(kept), positions))
        return out

    async def _claim_feed_labels(
        self, sources: Sequence[Source], parsed: Parsed, outcome: Outcome
    ) -> list[LabelColumns]:
        return await self._unique_labels(await self._enriched_labels(sources, parsed), outcome)

    async def _enriched_labels(
        self, sources: Sequence[Source], parsed: Parsed
    ) -> list[tuple[LabelColumns, list[str]]]:
        """Labels with their model filled in from the prediction, where ingest has seen it."""
        out: list[tuple[LabelColumns, list[str]]] = []
        where = _positions(sources)
        for cols, refs in parsed.labels:
            positions = [where[r] for r in refs]
            if cols.key is not None:
                out.append((cols, positions))
                continue
            found = await self._dedupe.seen_predictions(cols.tenant, cols.event_ids)
            groups: dict[str | None, list[int]] = {}
            for i, hit in enumerate(found):
                groups.setdefault(hit.model_key if hit else None, []).append(i)
            for key, rows in groups.items():
                name = version = None
                if key is not None:
                    _, name, version = split_model_key(key)
                pred_ms = [hit.event_time_ms if (hit := found[i]) else 0 for i in rows]
                enriched = LabelColumns(
                    tenant=cols.tenant,
                    model_name=name,
                    model_version=version,
                    event_ids=[cols.event_ids[i] for i in rows],
                    ground_truths=[cols.ground_truths[i] for i in rows],
                    sources=[cols.sources[i] for i in rows],
                    label_time_ms=cols.label_time_ms[rows],
                    prediction_time_ms=np.asarray(pred_ms, dtype=np.int64),
                )
                out.append((enriched, [positions[i] for i in rows]))
        return out

    async def _unique_labels(
        self, labels: list[tuple[LabelColumns, list[str]]], outcome: Outcome
    ) -> list[LabelColumns]:
        claims = []
        seen: set[tuple[str, str]] = set()
        spans = []
        for cols, positions in labels:
            rows = []
            for row, eid in enumerate(cols.event_ids):
                if (cols.tenant, eid) in seen:
                    outcome.labels_duplicate += 1
                    continue
                seen.add((cols.tenant, eid))
                claims.append(Claim(cols.tenant, eid, positions[row]))
                rows.append(row)
            spans.append((cols, rows))
        keep = iter(await self._dedupe.claim("label", claims))
        out = []
        for cols, rows in spans:
            kept = [row for row in rows if next(keep)]
            outcome.labels_duplicate += len(rows) - len(kept)
            outcome.labels_accepted += len(kept)
            if kept:
                out.append(_take_labels(cols, kept))
        return out

    def _dead_letters(self, sources: Sequence[Source], parsed: Parsed) -> list[Output]:
        now = clock.now_ms()
        out = []
        for ref, fault in parsed.dead:
            src = sources[ref]
            out.append(
                Output(
                    self._topics.deadletter,
                    None,
                    self._codec.encode("DeadLetter", _dead_letter(src, fault, now)),
                )
            )
        return out

    def _count(self, outcome: Outcome) -> None:
        assert self._metrics is not None
        m = self._metrics.events
        m.labels("prediction", "accepted").inc(outcome.predictions_accepted)
        m.labels("prediction", "duplicate").inc(outcome.predictions_duplicate)
        m.labels("label", "accepted").inc(outcome.labels_accepted)
        m.labels("label", "duplicate").inc(outcome.labels_duplicate)
        m.labels("any", "rejected").inc(outcome.rejected)
        for code, n in outcome.dead_letter_codes.items():
            self._metrics.dead_letters.labels(code).inc(n)


def _positions(sources: Sequence[Source]) -> list[str]:
    """Each source message's position, built once per message rather than once per event."""
    return [s.position for s in sources]


def _dead_letter(src: Source, fault: Fault, now_ms: int) -> dict[str, object]:
    return dead_letter_record(
        src.topic,
        src.partition,
        src.offset,
        src.value,
        str(fault.code),
        fault.message,
        "ingest",
        now_ms,
        fault.event_id,
    )


def _chunks(cols: PredictionColumns, size: int) -> list[PredictionColumns]:
    if len(cols) <= size:
        return [cols]
    return [cols.take(np.arange(i, min(i + size, len(cols)))) for i in range(0, len(cols), size)]


def _labels_independent(parsed: Parsed) -> bool:
    """Whether the batch's labels can be claimed without its predictions' verdicts: no
    prediction carries its own ground truth (a duplicate's is dropped with it) and every label
    names its model (else ingest looks its prediction up, which may be in this batch)."""
    return all(_no_ground_truth(cols) for cols, _ in parsed.predictions) and all(
        cols.key is not None for cols, _ in parsed.labels
    )


def _no_ground_truth(cols: PredictionColumns) -> bool:
    return cols.ground_truths is None or all(g is None for g in cols.ground_truths)


def _event_labels(
    cols: PredictionColumns, positions: list[str]
) -> tuple[LabelColumns, list[str]] | None:
    """Ground truth that came with the prediction, as labels of source ``event``."""
    if cols.ground_truths is None:
        return None
    rows = [i for i, g in enumerate(cols.ground_truths) if g is not None]
    if not rows:
        return None
    times = cols.event_time_ms[rows]
    labels = LabelColumns(
        tenant=cols.tenant,
        model_name=cols.model_name,
        model_version=cols.model_version,
        event_ids=[cols.event_ids[i] for i in rows],
        ground_truths=[str(cols.ground_truths[i]) for i in rows],
        sources=["event"] * len(rows),
        label_time_ms=times,
        prediction_time_ms=times,
    )
    return labels, [positions[i] for i in rows]


def _take_labels(cols: LabelColumns, rows: list[int]) -> LabelColumns:
    if len(rows) == len(cols):
        return cols
    return LabelColumns(
        tenant=cols.tenant,
        model_name=cols.model_name,
        model_version=cols.model_version,
        event_ids=[cols.event_ids[i] for i in rows],
        ground_truths=[cols.ground_truths[i] for i in rows],
        sources=[cols.sources[i] for i in rows],
        label_time_ms=cols.label_time_ms[rows],
        prediction_time_ms=None
        if cols.prediction_time_ms is None
        else cols.prediction_time_ms[rows],
    )
