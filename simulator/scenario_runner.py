"""Running scenarios against a live Caliber: register, send, wait, compare.

The runner only does what a user can do from outside: it registers versions and reads
metrics through the gateway's REST API, and sends events and labels to Kafka.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.runtime import redis_client
from shared.runtime.kafka import make_producer
from shared.runtime.redis_client import shard_tag
from shared.settings import Settings
from simulator.gateway_client import GatewayClient
from simulator.producer import produce
from simulator.scenarios import Expected, Planned, Scenario, plan

Progress = Callable[[str], None]


@dataclass(slots=True)
class Measured:
    events: int = 0
    labeled: int = 0
    ece: float | None = None
    aurc: float | None = None
    backlog: int = 0
    drift_features: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Outcome:
    scenario: str
    key: str
    model_version_id: int
    expected: Expected
    measured: Measured
    drifted: tuple[str, ...] = ()

    @property
    def exact(self) -> bool:
        """Counts equal, ECE and AURC equal to 1e-9, and the drift alerts name exactly the
        shifted features."""
        e, m = self.expected, self.measured
        return (
            (e.events, e.labeled, e.backlog) == (m.events, m.labeled, m.backlog)
            and _close(e.ece, m.ece)
            and _close(e.aurc, m.aurc)
            and sorted(self.drifted) == sorted(m.drift_features)
        )


def _close(a: float | None, b: float | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and abs(a - b) < 1e-9)


def send(
    settings: Settings, clients: Callable[[str], GatewayClient], scenarios: Sequence[Scenario]
) -> list[tuple[Scenario, Planned, int]]:
    """Register every version (parents first) and send every scenario's traffic."""
    now_ms = int(time.time() * 1000)
    sent: list[tuple[Scenario, Planned, int]] = []
    for s in scenarios:
        planned = plan(s, now_ms)
        ids: list[int] = []
        for p in planned:
            spec = p.plan.spec
            parent = None if p.plan.parent is None else ids[p.plan.parent]
            row = clients(spec.tenant).ensure_version(
                spec.name, spec.version, p.plan.stage, parent, p.plan.threshold
            )
            ids.append(int(row["id"]))
            sent.append((s, p, ids[-1]))
        produce(
            make_producer(settings),
            Topics.for_namespace(settings.topic_namespace),
            AvroCodec(),
            [p.generated for p in planned],
            form="batch",
        )
    return sent


def measure(
    clients: Callable[[str], GatewayClient],
    sent: Sequence[tuple[Scenario, Planned, int]],
    timeout: float = 180.0,
    progress: Progress | None = None,
) -> list[Outcome]:
    """Wait until Caliber has counted every sent event and label (or ``timeout``), then
    read each version's figures."""
    deadline = time.monotonic() + timeout
    outcomes: list[Outcome] = []
    for s, p, mid in sent:
        measured = _measure_one(clients(p.plan.spec.tenant), s, p.expected, mid, deadline)
        key = p.generated.predictions.key
        outcomes.append(Outcome(s.name, key, mid, p.expected, measured, s.drifted))
        if progress is not None:
            progress(key)
    return outcomes


def _measure_one(
    client: GatewayClient, s: Scenario, e: Expected, mid: int, deadline: float
) -> Measured:
    cal = _until(
        lambda: client.calibration(mid),
        lambda body: body["n_predictions"] >= e.events and body["n_labeled"] >= e.labeled,
        deadline,
    )
    backlog = _until(lambda: client.review_queue_size(mid), lambda n: n == e.backlog, deadline)
    drift = _until(
        lambda: _alerted(client.drift_alerts(mid)),
        lambda names: set(s.drifted) <= set(names),
        deadline if s.drifted else 0.0,
    )
    return Measured(
        events=int(cal["n_predictions"]),
        labeled=int(cal["n_labeled"]),
        ece=cal["ece"],
        aurc=client.risk_coverage(mid)["aurc"],
        backlog=backlog,
        drift_features=drift,
    )


def _alerted(alerts: list[dict[str, Any]]) -> list[str]:
    """The features with a raised (not resolved) drift alert."""
    return sorted({a["feature"] for a in alerts if a.get("severity") in ("warning", "critical")})


def _until(read: Callable[[], Any], done: Callable[[Any], bool], deadline: float) -> Any:
    value = read()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(0.5)
        value = read()
    return value


def table(outcomes: Sequence[Outcome]) -> list[str]:
    """One line per version: expected / measured for every figure."""

    def f(v: float | None) -> str:
        return "—" if v is None else f"{v:.4f}"

    w = max([len("model version"), *(len(o.key) for o in outcomes)])
    lines = [
        f"{'scenario':<12} {'model version':<{w}} {'events':>13} {'labeled':>13} "
        f"{'ECE':>15} {'AURC':>15} {'queue':>11}  drift alerts",
    ]
    for o in outcomes:
        e, m = o.expected, o.measured
        lines.append(
            f"{o.scenario:<12} {o.key:<{w}} {e.events:>6}/{m.events:<6} "
            f"{e.labeled:>6}/{m.labeled:<6} "
            f"{f(e.ece):>7}/{f(m.ece):<7} {f(e.aurc):>7}/{f(m.aurc):<7} "
            f"{e.backlog:>5}/{m.backlog:<5}  {','.join(m.drift_features) or '—'}"
            + ("" if o.exact else "   (differs)")
        )
    return lines


def likely_causes(
    settings: Settings,
    sent: Sequence[tuple[Scenario, Planned, int]],
    outcomes: Sequence[Outcome],
    sample: int = 50,
) -> list[str]:
    """What the demo can see about why measured figures differ from the expected ones, each
    with the command that fixes it; empty when every figure matches."""
    differing = [(p, o) for (_, p, _), o in zip(sent, outcomes, strict=True) if not o.exact]
    if not differing:
        return []
    from shared.runtime import identity

    causes = [f"a store is out of step: {line}" for line in identity.check(settings)]
    client = redis_client.sync_client(settings.redis_dsn)
    try:
        for p, o in differing:
            cols = p.generated.predictions
            ids = cols.event_ids[:sample]
            # the dedupe claims' layout (services.ingest.dedupe), one shard tag per id
            scoped = [f"{cols.tenant}/{e}" for e in ids]
            keys = [f"{settings.redis_prefix}ingest:seen:{shard_tag('d', s)}:{s}" for s in scoped]
            pipe = client.pipeline(transaction=False)
            for k in keys:
                pipe.get(k)
            known = sum(1 for v in pipe.execute() if v is not None) if keys else 0
            missing = o.expected.events - o.measured.events
            if keys and known == len(keys):
                causes.append(
                    f"{o.key}: ingest already knew this run's event ids and dropped them as "
                    "duplicates of an earlier run, whose events the other stores do not hold "
                    "as they should: rebuild the store named above (`caliber rebuild "
                    "postgres` / `caliber rebuild redis`), or `caliber stack reset` to start over"
                )
            elif missing > 0:
                causes.append(
                    f"{o.key}: {missing} events not counted yet: still in flight or refused "
                    "(see `caliber services status` and the services' logs)"
                )
            else:
                causes.append(
                    f"{o.key}: counted {o.measured.events} events for {o.expected.events} sent: "
                    "the version also holds events of an earlier run or of another sender "
                    "(`caliber stack reset` starts over)"
                )
    finally:
        client.close()
    return causes
