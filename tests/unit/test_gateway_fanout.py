"""The /ws/live hub: per-client filters and order, bounded queues, event shapes."""

from __future__ import annotations

import asyncio
import json

import numpy as np
from prometheus_client import CollectorRegistry

from services.gateway.fanout import Hub, route
from services.gateway.metrics import GatewayMetrics
from shared.contracts.batches import DecisionColumns, PredictionColumns
from shared.contracts.codec import AvroCodec, Decoded


def hub(queue: int = 3) -> tuple[Hub, GatewayMetrics]:
    metrics = GatewayMetrics(CollectorRegistry())
    return Hub(queue, metrics), metrics


def drain(q: asyncio.Queue[str]) -> list[dict[str, object]]:
    out = []
    while not q.empty():
        out.append(json.loads(q.get_nowait()))
    return out


async def test_filters_by_tenant_and_model_and_keeps_order() -> None:
    h, metrics = hub(queue=10)
    everything = h.join("acme", None)
    only_7 = h.join("acme", 7)
    other_tenant = h.join("globex", None)
    h.publish("acme", 7, [{"n": 1}, {"n": 2}])
    h.publish("acme", 8, [{"n": 3}])
    h.publish("acme", 7, [{"n": 4}])
    assert [e["n"] for e in drain(everything.queue)] == [1, 2, 3, 4]
    assert [e["n"] for e in drain(only_7.queue)] == [1, 2, 4]
    assert drain(other_tenant.queue) == []
    assert metrics.ws_clients._value.get() == 3
    h.leave(other_tenant)
    assert metrics.ws_clients._value.get() == 2
    assert not h.listening("globex") and h.listening("acme")


async def test_messages_are_compact_json_with_string_keys() -> None:
    h, _ = hub(queue=10)
    client = h.join("acme", None)
    event = {"type": "metrics", "ece": 0.1, "bins": {3: 0.25}, "id": None, "ok": True}
    h.publish("acme", 1, [event])
    text = client.queue.get_nowait()
    assert text == '{"type":"metrics","ece":0.1,"bins":{"3":0.25},"id":null,"ok":true}'
    assert json.loads(text) == json.loads(json.dumps(event))


async def test_a_full_queue_drops_that_client_only() -> None:
    h, metrics = hub(queue=3)
    slow = h.join("acme", None)
    fast = h.join("acme", None)
    for i in range(3):
        h.publish("acme", 1, [{"n": i}])
        drain(fast.queue)  # the fast client keeps up
    assert not slow.dropped.is_set()
    h.publish("acme", 1, [{"n": 3}, {"n": 4}])
    assert slow.dropped.is_set()
    assert [e["n"] for e in drain(fast.queue)] == [3, 4]
    h.publish("acme", 1, [{"n": 5}])
    assert slow.queue.qsize() == 3, "a dropped client gets nothing more"
    assert [e["n"] for e in drain(fast.queue)] == [5]
    assert metrics.ws_dropped._value.get() == 1


def decision_record(model_version_id: int | None) -> dict[str, object]:
    preds = PredictionColumns(
        tenant="acme",
        model_name="triage",
        model_version="v1",
        model_version_id=model_version_id,
        event_ids=["e1", "e2"],
        event_time_ms=np.asarray([10, 20], dtype=np.int64),
        predicted_labels=["yes", "no"],
        confidences=np.asarray([0.9, 0.4]),
    )
    return DecisionColumns(
        preds, np.asarray([0.9, 0.4]), np.asarray([False, True]), 0.6, "registry", "identity", 99
    ).to_record()


def test_decision_batch_becomes_one_message_per_event(codec: AvroCodec) -> None:
    decoded = codec.decode(codec.encode("DecisionBatch", decision_record(None)))
    assert isinstance(decoded, Decoded)
    routed = route(decoded, {"acme/triage/v1": 7}.get)
    assert routed is not None
    tenant, model_id, events = routed
    assert (tenant, model_id) == ("acme", 7)
    assert [(e["event_id"], e["status"], e["confidence"]) for e in events] == [
        ("e1", "auto", 0.9),
        ("e2", "review", 0.4),
    ]
    assert events[0]["model"] == "acme/triage/v1" and events[0]["model_version_id"] == 7
    assert events[1]["threshold"] == 0.6 and events[1]["event_time_ms"] == 20
    assert events[0]["id"] == "e1" and events[0]["type"] == "decision"


def test_metric_snapshot_gets_the_model_id_from_the_registry(codec: AvroCodec) -> None:
    snapshot = {
        "tenant": "acme",
        "model_name": "triage",
        "model_version": "v1",
        "window": "5m",
        "window_start_ms": 0,
        "window_end_ms": 300_000,
        "computed_at_ms": 300_001,
        "n_predictions": 10,
        "n_labeled": 4,
        "ece": 0.05,
    }
    decoded = codec.decode(codec.encode("MetricSnapshot", snapshot))
    assert isinstance(decoded, Decoded)
    routed = route(decoded, {"acme/triage/v1": 7}.get)
    assert routed is not None
    _, model_id, [message] = routed
    assert model_id == 7 and message["type"] == "metrics" and message["ece"] == 0.05


def test_prediction_messages_follow_each_decision_when_asked(codec: AvroCodec) -> None:
    decoded = codec.decode(codec.encode("DecisionBatch", decision_record(None)))
    assert isinstance(decoded, Decoded)
    plain = route(decoded, {"acme/triage/v1": 7}.get)
    routed = route(decoded, {"acme/triage/v1": 7}.get, predictions=True)
    assert plain is not None and routed is not None
    assert [e["type"] for e in plain[2]] == ["decision", "decision"]
    events = routed[2]
    assert [(e["type"], e["event_id"]) for e in events] == [
        ("decision", "e1"),
        ("prediction", "e1"),
        ("decision", "e2"),
        ("prediction", "e2"),
    ]
    assert (events[3]["confidence"], events[3]["status"]) == (0.4, "review")
    assert {k: v for k, v in events[1].items() if k != "type"} == {
        k: v for k, v in events[0].items() if k != "type"
    }


def test_columnar_decode_gives_the_same_json_messages(codec: AvroCodec) -> None:
    data = codec.encode("DecisionBatch", decision_record(5))
    plain, columnar = codec.decode(data), codec.decode(data, columnar=True)
    assert isinstance(plain, Decoded) and isinstance(columnar, Decoded)
    assert isinstance(columnar.record["calibrated_confidences"], np.ndarray)
    routed_plain = route(plain, {}.get, predictions=True)
    routed_columnar = route(columnar, {}.get, predictions=True)
    assert routed_plain is not None and routed_columnar is not None
    texts = [json.dumps(e) for e in routed_columnar[2]]  # numpy values would not serialise
    assert texts == [json.dumps(e) for e in routed_plain[2]]
    assert json.loads(texts[2])["event_time_ms"] == 20
