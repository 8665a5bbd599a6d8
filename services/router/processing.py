"""The router step: decision records, outcomes, labels of routed predictions → counts.

Sources, all applied through one offset fence (a replayed batch changes nothing):

- ``<ns>.routing`` decision records (from the gateway's decide) become the decision
  mapping (tenant, goal, path, forced, decided-at; TTL = the label horizon) and a decision
  count; outcomes (from ``/api/route/outcome``) are resolved through that mapping.
- ``<ns>.predictions``: a prediction whose metadata holds ``caliber.route_decision`` leaves
  a link (tenant, event id → decision id, predicted label) that its label finds.
- ``<ns>.labels``: a label of a linked prediction is that decision's outcome
  (correct = 1, wrong = 0).
- ``<ns>.deadletter``: a prediction that ingest dead-lettered and that names a route
  decision is a failure (0) of its path.

A decision gets one outcome: the first counted wins, later ones (a label after an API
outcome, a second API call) are skipped. An outcome that comes before its decision record
waits (``route:pend``) until the record arrives, and a label that comes before its
routed prediction waits (``route:lab``, ``route_label_wait_seconds``) for the prediction —
only labels of models that carry routed predictions (or of unknown model) wait. Outcomes
are weighted by the decision's event time, so a late outcome lands where its decision was made.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Message

from services.router.metrics import RouterMetrics
from services.router.store import Counted, EffectBuilder, RouterStore
from shared.contracts.batches import model_key
from shared.contracts.codec import AvroCodec, Decoded
from shared.contracts.dead_letters import dead_letter
from shared.contracts.topics import Topics
from shared.routing.state import ROUTE_DECISION_KEY, SEP, DecisionRecord
from shared.runtime.pipeline import Output

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Unit:
    """What one unit of fresh messages (``OffsetFence.units``) brings."""

    messages: list[Message]
    decisions: dict[str, DecisionRecord] = field(default_factory=dict)
    outcomes: list[_Outcome] = field(default_factory=list)
    links: dict[tuple[str, str], str] = field(default_factory=dict)
    labels: list[tuple[str, str, str, str | None]] = field(default_factory=list)


@dataclass(slots=True)
class _Outcome:
    decision_id: str
    tenant: str | None
    """None when the tenant is not known (dead-lettered prediction: the record says)."""
    score: float
    source: str


def _routed_rows(record: dict[str, Any]) -> list[tuple[int, str]]:
    """(row, decision id) of every event of a prediction batch that was routed."""
    meta = record.get("metadata") or []
    return [(i, m[ROUTE_DECISION_KEY]) for i, m in enumerate(meta) if m.get(ROUTE_DECISION_KEY)]


def _model(record: dict[str, Any]) -> str:
    return model_key(record["tenant"], record["model_name"], record["model_version"] or "")


class RouterProcessor:
    def __init__(
        self,
        topics: Topics,
        codec: AvroCodec,
        store: RouterStore,
        half_life_s: float,
        decision_ttl: int,
        pending_ttl: int,
        label_wait: int = 600,
        metrics: RouterMetrics | None = None,
    ) -> None:
        self._topics = topics
        self._codec = codec
        self._store = store
        self._half_life_ms = half_life_s * 1000.0
        self._decision_ttl = decision_ttl
        self._pending_ttl = pending_ttl
        self._label_wait = label_wait
        self._new_models: set[str] = set()
        self._costs: dict[str, tuple[float | None, float | None]] = {}
        self._metrics = metrics
        self.outcomes_counted = 0

    async def __call__(self, messages: Sequence[Message]) -> list[Output]:
        units = [_Unit(u) for u in await self._store.fence.units(messages)]
        unit_of = {id(m): u for u in units for m in u.messages}
        t = self._topics
        now_ms = int(time.time() * 1000)
        dead: list[Output] = []
        self._costs = {}
        self._new_models = set()
        for m in messages:
            topic = m.topic()
            if topic == t.routing:
                decoded = self._codec.decode(m.value(), {"RouteEvent"})
                if not isinstance(decoded, Decoded):
                    dead.append(
                        dead_letter(
                            t.deadletter,
                            self._codec,
                            m,
                            str(decoded.code),
                            decoded.message,
                            "router",
                            now_ms,
                        )
                    )
                    continue
            u = unit_of.get(id(m))
            if u is None:
                continue
            if topic == t.routing:
                assert isinstance(decoded, Decoded)
                self._route_event(decoded.record, u.decisions, u.outcomes)
            elif topic == t.predictions:
                self._collect_links(m, u.links)
            elif topic == t.labels:
                self._collect_labels(m, u.labels)
            elif topic == t.deadletter:
                u.outcomes.extend(self._dead_prediction(m))
        for u in units:
            await self._apply(u.messages, u.decisions, u.outcomes, u.links, u.labels)
        return dead

    def _collect_links(self, m: Message, links: dict[tuple[str, str], str]) -> None:
        """Links from the routed predictions of a batch to their decision (and label)."""
        # Columnar: the numbers (unused here) stay numpy arrays, never Python objects.
        pred = self._codec.decode(m.value(), {"PredictionBatch"}, columnar=True)
        if not isinstance(pred, Decoded):
            return
        rec = pred.record
        routed = _routed_rows(rec)
        if routed:
            self._new_models.add(_model(rec))
        for i, decision_id in routed:
            links[(rec["tenant"], rec["event_ids"][i])] = (
                f"{decision_id}{SEP}{rec['predicted_labels'][i]}"
            )

    def _collect_labels(self, m: Message, labels: list[tuple[str, str, str, str | None]]) -> None:
        """(tenant, event id, ground truth, model) of every label of a batch."""
        lab = self._codec.decode(m.value(), {"LabelBatch"}, columnar=True)
        if not isinstance(lab, Decoded):
            return
        rec = lab.record
        model = _model(rec) if rec.get("model_name") else None
        labels.extend(
            (rec["tenant"], e, g, model)
            for e, g in zip(rec["event_ids"], rec["ground_truths"], strict=True)
        )

    def _route_event(
        self,
        rec: dict[str, Any],
        decisions: dict[str, DecisionRecord],
        outcomes: list[_Outcome],
    ) -> None:
        if rec["kind"] == "decision":
            decisions[rec["decision_id"]] = DecisionRecord(
                rec["tenant"],
                rec["goal"],
                rec["path"],
                bool(rec["forced"] or rec["fallback"]),
                int(rec["time_ms"]),
            )
            self._costs[rec["decision_id"]] = (rec.get("cost"), rec.get("latency_ms"))
            if self._metrics:
                kind = "fallback" if rec["fallback"] else "forced" if rec["forced"] else "chosen"
                self._metrics.decision(rec["tenant"], rec["goal"], rec["path"], kind)
            return
        score = float(rec["score"])
        if not (math.isfinite(score) and 0.0 <= score <= 1.0):
            logger.warning("outcome of %s has score %r; skipped", rec["decision_id"], score)
            return
        outcomes.append(_Outcome(rec["decision_id"], rec["tenant"], score, rec["source"]))

    def _dead_prediction(self, m: Message) -> list[_Outcome]:
        letter = self._codec.decode(m.value(), {"DeadLetter"})
        if not isinstance(letter, Decoded):
            return []
        rec = letter.record
        if rec["source_topic"] != self._topics.inference_raw:
            return []
        raw = self._codec.decode(rec["raw"], {"InferenceEvent", "PredictionBatch"})
        if not isinstance(raw, Decoded):
            return []
        body = raw.record
        if raw.name == "InferenceEvent":
            decision_id = (body.get("metadata") or {}).get(ROUTE_DECISION_KEY)
            rows = [decision_id] if decision_id else []
        else:
            wanted = rec.get("event_id")
            rows = [
                d for i, d in _routed_rows(body) if wanted is None or body["event_ids"][i] == wanted
            ]
        tenant = body.get("tenant")
        return [_Outcome(d, tenant, 0.0, "deadletter") for d in rows]

    async def _apply(
        self,
        messages: list[Message],
        decisions: dict[str, DecisionRecord],
        outcomes: list[_Outcome],
        links: dict[tuple[str, str], str],
        labels: list[tuple[str, str, str, str | None]],
    ) -> None:
        store, keys = self._store, self._store.keys
        # First round trip: the stored links of this batch's labels, the labels that came
        # before this batch's routed predictions, and the models that carry routed ones.
        label_events = [(tenant, e) for tenant, e, _, _ in labels if (tenant, e) not in links]
        stored_links, waiting_labels, routed_models = await store.joins(label_events, list(links))
        all_links = {**stored_links, **links}
        b = EffectBuilder(keys, self._half_life_ms, self._decision_ttl)
        spent: set[tuple[str, str]] = set()
        for ev, truth in waiting_labels.items():
            labels.append((ev[0], ev[1], truth, None))
            b.effect.delete.append(keys.waiting_label(*ev))
        for tenant, event_id, truth, model in labels:
            link = all_links.get((tenant, event_id))
            if link is None:
                if model is None or model in routed_models or model in self._new_models:
                    b.effect.set.append(
                        (keys.waiting_label(tenant, event_id), truth, self._label_wait)
                    )
                continue
            decision_id, predicted = link.split(SEP, 1)
            spent.add((tenant, event_id))
            outcomes.append(
                _Outcome(decision_id, tenant, 1.0 if truth == predicted else 0.0, "label")
            )
        b.effect.sadd.extend((keys.routed_models, m) for m in self._new_models)
        ids = sorted({o.decision_id for o in outcomes} | set(decisions))
        records, counted, pending = await store.lookup(ids, list(decisions))
        records.update(decisions)
        for decision_id, record in decisions.items():
            b.decision(decision_id, record, *self._costs.get(decision_id, (None, None)))
        # Outcomes that were waiting for one of this batch's decisions come first.
        waiting = [
            _Outcome(d, decisions[d].tenant, float(raw.split(SEP)[0]), raw.split(SEP)[1])
            for d, raw in pending.items()
        ]
        for d in pending:
            b.effect.delete.append(keys.pending(d))
        for o in [*waiting, *outcomes]:
            self._count(b, o, records, counted)
        for ev, link in links.items():
            if ev not in spent:
                b.effect.set.append((keys.event(*ev), link, self._decision_ttl))
        # A label's link is spent once its outcome is counted.
        b.effect.delete.extend(keys.event(*ev) for ev in spent if ev in stored_links)
        await store.fence.apply(messages, b.build())

    def _count(
        self,
        b: EffectBuilder,
        o: _Outcome,
        records: dict[str, DecisionRecord],
        counted: set[str],
    ) -> None:
        record = records.get(o.decision_id)
        metrics = self._metrics
        if record is None:
            if o.tenant is not None:
                b.pending(o.decision_id, o.score, o.source, self._pending_ttl)
            if metrics:
                metrics.skipped.labels("pending").inc()
            return
        if o.tenant is not None and o.tenant != record.tenant:
            # Another tenant's decision id: never counted (the API already answers 404).
            if metrics:
                metrics.skipped.labels("tenant").inc()
            return
        if o.decision_id in counted:
            if metrics:
                metrics.skipped.labels("duplicate").inc()
            return
        counted.add(o.decision_id)
        b.outcome(o.decision_id, Counted(record, o.score))
        self.outcomes_counted += 1
        if metrics:
            metrics.outcome(record.tenant, record.goal, record.path, o.source, o.score)
