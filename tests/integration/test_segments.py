"""Per-segment recalibration on the real stack: policy, aggregator and gateway.

Two segments of one model version are miscalibrated in opposite directions (``tennis``
over-confident, ``golf`` under-confident). The admin names ``sport`` as the segment key
(a key that is not a feature is refused, naming ``segment_key``); the aggregator keeps each
segment's last labeled events, is killed and restarted mid-run and still counts every label
once, refits each segment, and the policy decides later events with the segment maps: each
segment's ECE, from the decisions' calibrated confidences and the labels, falls under the
SLO, while one global map fitted on the same labels leaves it far above. A segment with 5
labels (``chess``) and events without a sport fall back to the model version's map.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import numpy as np
import pytest
import redis

from services.aggregator.settings import AggregatorSettings
from shared.contracts.batches import LabelColumns, PredictionColumns, model_key
from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.metrics.calibration import ece_from_arrays
from shared.recalibration.maps import from_registry
from shared.recalibration.segments import ClippedMap, SegmentFitOptions, encode_pair, fit_segment
from shared.runtime import redis_client
from shared.runtime.kafka import make_producer
from shared.settings import Settings
from shared.windows.segments import SegmentLayout
from tests.integration.conftest import running_service, start_service
from tests.integration.gateway_client import make_keys, start_gateway
from tests.integration.kafka_io import TopicReader

pytestmark = pytest.mark.integration

CODEC = AvroCodec()
TENANT, NAME, VERSION = "acme", "seg", "v1"
MODEL = model_key(TENANT, NAME, VERSION)
# Confidence levels and the accuracy at each: tennis claims 0.85-0.95 and is right 62-74 %
# of the time, golf claims 0.55-0.65 and is right 90-96 %. No increasing map of the
# confidence fits both, so one global map cannot calibrate either.
LEVELS = {
    "tennis": ([0.85, 0.90, 0.95], [0.62, 0.68, 0.74]),
    "golf": ([0.55, 0.60, 0.65], [0.90, 0.93, 0.96]),
    "chess": ([0.80], [0.5]),
    "": ([0.75], [0.75]),
}
REFIT_EVERY = 10
"""CALIBER_SEGMENT_REFIT_EVERY's default, which the aggregator here runs with."""
AGGREGATOR_ENV = {
    "CALIBER_AGGREGATOR_MAX_MESSAGES": "5",
    "CALIBER_SEGMENT_REFIT_SECONDS": "0.5",
    "CALIBER_SNAPSHOT_INTERVAL_SECONDS": "3600",
}


@dataclass
class Events:
    ids: list[str]
    sport: list[str]
    conf: np.ndarray
    correct: np.ndarray
    predicted: list[str]


def make_events(rng: np.random.Generator, counts: dict[str, int]) -> Events:
    sports = [s for s, n in counts.items() for _ in range(n)]
    rng.shuffle(sports)
    conf, correct = [], []
    for s in sports:
        levels, accuracy = LEVELS[s]
        i = int(rng.integers(0, len(levels)))
        conf.append(levels[i])
        correct.append(bool(rng.random() < accuracy[i]))
    predicted = ["yes" if rng.random() < 0.5 else "no" for _ in sports]
    ids = [str(uuid.UUID(int=int(rng.integers(0, 2**62)) << 64 | k)) for k in range(len(sports))]
    return Events(ids, sports, np.array(conf), np.array(correct), predicted)


def send(
    settings: Settings, ev: Events, batch: int = 50, first: int = 0, end: int | None = None
) -> None:
    """Predictions to ``<ns>.predictions`` (as ingest would), each batch's labels after it;
    the events ``first`` to ``end`` (all by default)."""
    topics = Topics.for_namespace(settings.topic_namespace)
    producer = make_producer(settings)
    now = int(time.time() * 1000)
    end = len(ev.ids) if end is None else end
    for start in range(first, end, batch):
        rows = range(start, min(start + batch, end))
        ids = [ev.ids[i] for i in rows]
        preds = PredictionColumns(
            tenant=TENANT, model_name=NAME, model_version=VERSION, event_ids=ids,
            event_time_ms=np.full(len(ids), now, dtype=np.int64),
            predicted_labels=[ev.predicted[i] for i in rows],
            confidences=ev.conf[list(rows)],
            categorical_features={"sport": [ev.sport[i] for i in rows]},
        )  # fmt: skip
        truth = [
            ev.predicted[i] if ev.correct[i] else ("no" if ev.predicted[i] == "yes" else "yes")
            for i in rows
        ]
        labels = LabelColumns(
            tenant=TENANT, model_name=NAME, model_version=VERSION, event_ids=ids,
            ground_truths=truth, sources=["feed"] * len(ids),
            label_time_ms=np.full(len(ids), now + 1000, dtype=np.int64),
        )  # fmt: skip
        key = MODEL.encode()
        producer.produce(
            topics.predictions, CODEC.encode("PredictionBatch", preds.to_record()), key
        )
        producer.produce(topics.labels, CODEC.encode("LabelBatch", labels.to_record()), key)
    assert producer.flush(30) == 0


def send_unlabeled(settings: Settings, ev: Events) -> None:
    topics = Topics.for_namespace(settings.topic_namespace)
    preds = PredictionColumns(
        tenant=TENANT, model_name=NAME, model_version=VERSION, event_ids=ev.ids,
        event_time_ms=np.full(len(ev.ids), int(time.time() * 1000), dtype=np.int64),
        predicted_labels=ev.predicted, confidences=ev.conf,
        categorical_features={"sport": ev.sport},
    )  # fmt: skip
    producer = make_producer(settings)
    producer.produce(
        topics.predictions, CODEC.encode("PredictionBatch", preds.to_record()), MODEL.encode()
    )
    assert producer.flush(30) == 0


def record_a_prediction(settings: Settings, model_id: int) -> None:
    """One recorded prediction with a ``sport`` feature, as the recorder writes it."""

    async def go() -> None:
        conn = await asyncpg.connect(settings.postgres_url)
        try:
            await conn.execute(
                "INSERT INTO predictions (event_id, tenant_id, model_name, model_version, "
                "model_version_id, event_time, predicted_label, confidence, status, features, "
                "metadata) VALUES ($1, $2, $3, $4, $5, $6, 'yes', 0.9, 'auto', $7, $8)",
                uuid.uuid4(), TENANT, NAME, VERSION, model_id, datetime.now(UTC),
                json.dumps({"sport": "tennis", "age": 31}), json.dumps({"region": "eu"}),
            )  # fmt: skip
        finally:
            await conn.close()

    asyncio.run(go())


def wait_until_maps_serve(
    settings: Settings, reader: TopicReader, rng: np.random.Generator, workers: list[Any]
) -> None:
    """Unlabeled probes until the policy decides both segments with their maps."""
    topic = Topics.for_namespace(settings.topic_namespace).decisions
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        probe = make_events(rng, {"tennis": 1, "golf": 1})
        send_unlabeled(settings, probe)
        versions: dict[str, str] = {}

        def seen(probe: Events = probe, versions: dict[str, str] = versions) -> bool:
            for d in reader.records[topic]:
                rec = d.record
                ids = rec["predictions"]["event_ids"]
                per_event = rec["calibrator_versions"] or [rec["calibrator_version"]] * len(ids)
                versions.update(
                    (e, v) for e, v in zip(ids, per_event, strict=True) if e in probe.ids
                )
            return len(versions) == 2

        reader.wait_for(seen, 60, "the probe decisions", workers)
        if all(v.startswith("isotonic-") for v in versions.values()):
            return
        time.sleep(0.5)
    raise AssertionError("the policy did not decide with the segment maps within 60 s")


def counts(r: redis.Redis, key: str) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in r.hgetall(key).items()}


def fitted_on_all(r: redis.Redis, lay: SegmentLayout, labeled: dict[str, int]) -> bool:
    """Each segment counted its ``labeled`` events and was last fitted fewer than N of them
    before the end (a refit comes after every N = 10 new labels, so up to 9 may wait)."""
    got, fits = counts(r, lay.counts(MODEL)), counts(r, lay.fits(MODEL))
    return all(
        got.get(s) == n and 0 <= n - fits.get(s, -100) < REFIT_EVERY for s, n in labeled.items()
    )


def settle_refits(r: redis.Redis, fits_key: str) -> None:
    """Wait until no segment was refitted for 3 s (refits run every 0.5 s here), then give
    the policy and the gateway a moment to read the last maps."""
    last, since = counts(r, fits_key), time.monotonic()
    deadline = since + 60
    while time.monotonic() - since < 3:
        assert time.monotonic() < deadline, "segments kept being refitted"
        time.sleep(0.25)
        now = counts(r, fits_key)
        if now != last:
            last, since = now, time.monotonic()
    time.sleep(2)


def assert_calibrate_agrees(
    base: str,
    key: str,
    model_id: int,
    asked: list[tuple[Events, int]],
    decided: dict[str, tuple[float, str, str | None]],
) -> None:
    """``POST /api/calibrate`` answers each event with the policy's confidence and map."""
    body = {
        "model_version_id": model_id,
        "events": [
            {"event_id": ev.ids[i], "confidence": float(ev.conf[i]),
             "features": {"sport": ev.sport[i]}}
            for ev, i in asked
        ],
    }  # fmt: skip
    want = [(decided[ev.ids[i]][0], decided[ev.ids[i]][1]) for ev, i in asked]
    with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=30) as c:
        deadline = time.monotonic() + 30
        while True:  # the gateway follows the segment maps as the policy does
            answer = c.post("/api/calibrate", json=body)
            assert answer.status_code == 200, answer.text
            got = [(x["calibrated_confidence"], x["calibrator_version"])
                   for x in answer.json()["results"]]  # fmt: skip
            if got == want or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert got == want


@pytest.fixture(scope="module")
def env(isolated_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    keys = make_keys(isolated_settings, {"admin": (TENANT, ["admin"])})
    logs = tmp_path_factory.mktemp("segments")
    base, gateway = start_gateway(isolated_settings, logs)
    try:
        yield isolated_settings, base, keys, logs
    finally:
        gateway.terminate()  # type: ignore[attr-defined]
        gateway.wait(30)  # type: ignore[attr-defined]


def test_segment_key_is_checked_against_the_versions_events(env: Any) -> None:
    _, base, keys, _ = env
    with httpx.Client(base_url=base, headers={"X-API-Key": keys["admin"]}, timeout=30) as c:
        model = c.post("/api/models", json={"name": "other", "version": "v1", "stage": "staging",
                                            "abstain_threshold": 0.5}).json()  # fmt: skip
        r = c.put(f"/api/models/{model['id']}/segments", json={"segment_key": "sport"})
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["loc"] == ["body", "segment_key"]
        assert "no recorded event" in r.json()["detail"][0]["msg"]
        r = c.put(f"/api/models/{model['id']}/segments", json={"segment_key": 5})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "segment_key"]
        r = c.put("/api/models/999999/segments", json={"segment_key": "sport"})
        assert r.status_code == 404


def test_segments_refit_and_beat_one_global_map(env: Any) -> None:
    settings, base, keys, logs = env
    topics = Topics.for_namespace(settings.topic_namespace)
    slo = AggregatorSettings().ece_slo
    with httpx.Client(base_url=base, headers={"X-API-Key": keys["admin"]}, timeout=30) as c:
        model = c.post("/api/models", json={"name": NAME, "version": VERSION,
                       "stage": "production", "abstain_threshold": 0.5}).json()  # fmt: skip
        record_a_prediction(settings, model["id"])
        r = c.put(f"/api/models/{model['id']}/segments", json={"segment_key": "spin"})
        assert r.status_code == 422, r.text
        detail = r.json()["detail"][0]
        assert detail["loc"] == ["body", "segment_key"] and "'spin'" in detail["msg"]
        for key in ("region", "sport"):  # a metadata key, then a feature
            r = c.put(f"/api/models/{model['id']}/segments", json={"segment_key": key})
            assert r.status_code == 200, r.text
        assert r.json()["segment_key"] == "sport"
        assert c.get(f"/api/models/{model['id']}").json()["segment_key"] == "sport"
    reader = TopicReader(settings, [topics.model_updates, topics.decisions], CODEC)
    reader.wait_for(
        lambda: any(
            d.record.get("segment_key") == "sport" for d in reader.records[topics.model_updates]
        ),
        60,
        "the segment key on model-updates",
    )
    rng = np.random.default_rng(16)
    first = make_events(rng, {"tennis": 600, "golf": 600, "chess": 5})
    later = make_events(rng, {"tennis": 2000, "golf": 2000})
    r = redis_client.sync_client(settings.redis_dsn)
    lay = SegmentLayout(settings.redis_prefix)
    with running_service("policy", settings, logs / "policy.log") as policy:
        # The aggregator is killed once mid-run, while the second half is on its way (a
        # batching aggregator may count a first half at once); every label counts once.
        send(settings, first, end=600)
        agg = start_service("aggregator", settings, logs / "aggregator.log", **AGGREGATOR_ENV)
        deadline = time.monotonic() + 120
        while sum(counts(r, lay.counts(MODEL)).values()) < 300 and time.monotonic() < deadline:
            time.sleep(0.05)
        send(settings, first, first=600)
        agg.send_signal(signal.SIGKILL)
        agg.wait(10)
        assert sum(counts(r, lay.counts(MODEL)).values()) < 1205, "killed too late to test"
        agg = start_service("aggregator", settings, logs / "aggregator.log", **AGGREGATOR_ENV)
        try:
            reader.wait_for(
                lambda: fitted_on_all(r, lay, {"sport=tennis": 600, "sport=golf": 600}),
                180,
                "both segments fitted on their last labels",
                [agg, policy],
            )
            assert counts(r, lay.counts(MODEL)) == {
                "sport=tennis": 600, "sport=golf": 600, "sport=chess": 5,
            }  # fmt: skip
            wait_until_maps_serve(settings, reader, rng, [agg, policy])
            send(settings, later)
            fresh = make_events(rng, {"chess": 3, "": 2})
            send_unlabeled(settings, fresh)
            wanted = set(later.ids) | set(fresh.ids)
            decided: dict[str, tuple[float, str, str | None]] = {}

            def collect() -> bool:
                for d in reader.records[topics.decisions]:
                    rec = d.record
                    ids = rec["predictions"]["event_ids"]
                    versions = rec["calibrator_versions"] or [rec["calibrator_version"]] * len(ids)
                    for i, eid in enumerate(ids):
                        if eid in wanted:
                            decided[eid] = (
                                rec["calibrated_confidences"][i],
                                versions[i],
                                rec["segments"][i],
                            )
                reader.records[topics.decisions].clear()
                return wanted <= decided.keys()

            reader.wait_for(collect, 180, "every later decision", [agg, policy])
            # Every label counted once, killed or not; each window holds its last 500.
            reader.wait_for(
                lambda: counts(r, lay.counts(MODEL)).get("sport=golf") == 2600
                and counts(r, lay.counts(MODEL)).get("sport=tennis") == 2600,
                180, "all later labels counted", [agg, policy],
            )  # fmt: skip
            time.sleep(2)
            assert counts(r, lay.counts(MODEL)) == {
                "sport=tennis": 2600, "sport=golf": 2600, "sport=chess": 5,
            }  # fmt: skip
            assert r.llen(lay.ring(MODEL, "sport=tennis")) == 500
            assert r.llen(lay.ring(MODEL, "sport=chess")) == 5
            # Probes decided once the maps are settled, for POST /api/calibrate below.
            settle_refits(r, lay.fits(MODEL))
            probe = make_events(rng, {"tennis": 5, "golf": 5, "chess": 2, "": 1})
            send_unlabeled(settings, probe)
            wanted = set(probe.ids)
            reader.wait_for(collect, 60, "the probes' decisions", [agg, policy])
        finally:
            agg.terminate()
            agg.wait(30)
    reader.close()

    # Each segment's ECE from the decisions the policy took with the segment maps.
    report = {}
    for sport in ("tennis", "golf"):
        rows = [i for i, s in enumerate(later.sport) if s == sport]
        calibrated = np.array([decided[later.ids[i]][0] for i in rows])
        assert all(decided[later.ids[i]][2] == sport for i in rows)
        assert all(decided[later.ids[i]][1].startswith("isotonic-") for i in rows)
        report[sport] = {
            "raw": ece_from_arrays(later.conf[rows], later.correct[rows]),
            "segment maps": ece_from_arrays(calibrated, later.correct[rows]),
        }
    # One global map fitted on the same labels (the first 600 of each segment).
    both = [i for i, s in enumerate(first.sport) if s in ("tennis", "golf")]
    pooled = [encode_pair(first.conf[i], first.correct[i]) for i in both]
    glob = fit_segment(pooled, SegmentFitOptions())
    assert glob.version is not None and glob.artifact is not None
    global_map = ClippedMap(from_registry(glob.version, glob.artifact), 0.01, 0.99)
    for sport in ("tennis", "golf"):
        rows = [i for i, s in enumerate(later.sport) if s == sport]
        out = global_map.apply(later.conf[rows], None, None, [])
        report[sport]["global map"] = ece_from_arrays(out, later.correct[rows])
    print(f"ECE by segment (SLO {slo}): {json.dumps(report)}")
    for ece in report.values():
        assert ece["raw"] is not None and ece["raw"] > 0.15, report
        assert ece["segment maps"] is not None and ece["segment maps"] < slo, report
    assert max(e["global map"] or 0 for e in report.values()) > 2 * slo, report

    # chess has 5 labels (< M = 50) and no fit; it and events without a sport fall back to
    # the model version's map: identity here, so the raw confidence.
    for i, eid in enumerate(fresh.ids):
        conf, version, segment = decided[eid]
        assert version == "identity" and conf == fresh.conf[i]
        assert segment == (fresh.sport[i] or None)
    assert "sport=chess" not in counts(r, lay.fits(MODEL))

    # POST /api/calibrate applies the map the policy applied to the same event.
    asked = [(probe, i) for i in range(len(probe.ids))]
    assert_calibrate_agrees(base, keys["admin"], model["id"], asked, decided)
