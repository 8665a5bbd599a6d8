"""Accepted means recorded: every edge string kind and every named bad input, through REST
and through Kafka, ends in exactly one of "recorded" (PostgreSQL row and API answer,
byte-exact) or "refused" (REST 422 naming the field and the limit; on Kafka a dead letter
with its code), never both, never neither.

The stack: gateway + ingest + policy + recorder on the isolated namespace.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from shared.contracts.topics import Topics
from shared.settings import Settings
from tests.integration.conftest import start_service
from tests.integration.edge_io import CODEC, dead_letters, event_ids_on, inference_event
from tests.integration.gateway_client import make_keys, start_gateway
from tests.integration.kafka_io import TopicReader
from tests.integration.pipeline_io import rows, wait_committed

MAX = 256  # CALIBER_LIMIT_STRING_CHARS default

EDGE_STRINGS: dict[str, tuple[str, str | None]] = {
    # kind: (category value, code when refused; None = recorded byte-exact)
    "nul": ("fr\x00ance", "string_nul"),
    "lone_surrogate": ("fr\ud800", "string_surrogate"),
    "four_byte_utf8": ("\U0001f600\U0001d11e\U00020000", None),
    "rtl_marks": ("\u200fabc\u202edef\u202c\u061c", None),
    "max_length": ("\U0001f600" * MAX, None),
    "beyond_max": ("é" * (MAX + 1), "too_large"),
}


@dataclass
class Stack:
    settings: Settings
    base: str
    key: str
    model_id: int
    topics: Topics
    reader: TopicReader

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, headers={"X-API-Key": self.key}, timeout=30)

    def settle(self, recorded: list[str]) -> None:
        """Ingest has committed past everything produced so far and the events expected to
        be recorded are in PostgreSQL. (The policy's and the recorder's inputs are written
        in transactions, whose commit markers sit past the last offset a consumer commits,
        so their groups are waited for through their effect instead.)"""
        ns = self.settings.topic_namespace
        wait_committed(self.settings, f"{ns}-ingest", [self.topics.inference_raw], timeout=90)
        deadline = time.monotonic() + 120
        while len(self.recorded(recorded)) < len(recorded):
            assert time.monotonic() < deadline, "the expected events were not recorded"
            time.sleep(0.3)
        self.reader.poll(3.0)  # a duplicate or a late dead letter would show up now

    def recorded(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        got = rows(
            self.settings,
            "SELECT event_id::text, features::text, predicted_label, status, decision "
            "FROM predictions WHERE event_id = ANY(%s::uuid[])",
            ids,
        )
        return {
            r[0]: {"features": json.loads(r[1]) if r[1] else None, "status": r[3], "decision": r[4]}
            for r in got
        }

    def dead(self, ids: list[str]) -> dict[str, str]:
        return {
            d["event_id"]: d["error_code"]
            for d in dead_letters(self.reader, self.topics.deadletter)
            if d["event_id"] in ids
        }

    def decided(self, ids: list[str]) -> list[str]:
        return [i for i in event_ids_on(self.reader, self.topics.decisions) if i in ids]


@pytest.fixture(scope="module")
def stack(isolated_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("edge")
    keys = make_keys(isolated_settings, {"admin": ("acme", ["admin"])})
    base, gateway = start_gateway(isolated_settings, logs)
    topics = Topics.for_namespace(isolated_settings.topic_namespace)
    with httpx.Client(base_url=base, headers={"X-API-Key": keys["admin"]}, timeout=30) as c:
        made = c.post(
            "/api/models",
            json={
                "name": "fraud",
                "version": "v1",
                "stage": "production",
                "abstain_threshold": 0.5,
            },
        )
        assert made.status_code == 201, made.text
    workers = [
        start_service(n, isolated_settings, logs / f"{n}.log")
        for n in ("ingest", "policy", "recorder")
    ]
    reader = TopicReader(isolated_settings, [topics.decisions, topics.deadletter], CODEC)
    try:
        yield Stack(isolated_settings, base, keys["admin"], made.json()["id"], topics, reader)
    finally:
        reader.close()
        for p in [*workers, gateway]:
            p.terminate()  # type: ignore[attr-defined]
        for p in [*workers, gateway]:
            p.wait(30)  # type: ignore[attr-defined]


def rest_event(stack: Stack, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "model_version_id": stack.model_id,
        "predicted_label": "yes",
        "confidence": 0.8,
        "probabilities": {"yes": 0.8, "no": 0.2},
        "features": {"amount": 1.5, "country": "fr"},
    }
    body.update(changes)
    return body


def post_raw(c: httpx.Client, path: str, body: Any) -> httpx.Response:
    """JSON with ``ensure_ascii`` (a lone surrogate travels as its \\ud800 escape, as any
    JSON client would send it) and NaN allowed (as a careless client sends it)."""
    data = json.dumps(body, ensure_ascii=True, allow_nan=True)
    return c.post(path, content=data, headers={"Content-Type": "application/json"})


def kafka_value(event: dict[str, Any]) -> bytes:
    """The InferenceEvent's bytes; a lone surrogate, which no Avro writer can encode, is
    written as its WTF-8 bytes (what a buggy producer puts on the wire)."""
    country = event["features"]["country"]
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in country):
        placeholder = "S" * len(country.encode("utf-8", "surrogatepass"))
        value = CODEC.encode(
            "InferenceEvent", {**event, "features": {**event["features"], "country": placeholder}}
        )
        return value.replace(placeholder.encode(), country.encode("utf-8", "surrogatepass"))
    return CODEC.encode("InferenceEvent", event)


def produce(stack: Stack, values: list[bytes]) -> None:
    from tests.integration.edge_io import produce_raw

    produce_raw(stack.settings, stack.topics.inference_raw, values)


def test_every_edge_string_is_recorded_or_refused_never_both_never_neither(
    stack: Stack,
) -> None:
    rest_ids: dict[str, str] = {}
    with stack.client() as c:
        for kind, (value, code) in EDGE_STRINGS.items():
            body = rest_event(stack, features={"amount": 1.0, "country": value})
            r = post_raw(c, "/api/predictions", body)
            if code is None:
                assert r.status_code == 202, (kind, r.text)
            else:
                assert r.status_code == 422, (kind, r.status_code, r.text[:300])
                (detail,) = r.json()["detail"]
                assert detail["type"] == code and detail["loc"][-1] == "country", (kind, detail)
            rest_ids[kind] = body["event_id"]
    kafka_ids: dict[str, str] = {}
    values = []
    for kind, (value, _) in EDGE_STRINGS.items():
        e = inference_event(features={"amount": 1.0, "country": value})
        kafka_ids[kind] = e["event_id"]
        values.append(kafka_value(e))
    produce(stack, values)
    stack.settle(
        [i for ids in (rest_ids, kafka_ids) for k, i in ids.items() if EDGE_STRINGS[k][1] is None]
    )
    every = [*rest_ids.values(), *kafka_ids.values()]
    recorded, dead, decided = stack.recorded(every), stack.dead(every), stack.decided(every)
    with stack.client() as c:
        api = {p["event_id"]: p for p in c.get("/api/predictions", params={"limit": 1000}).json()}
    for path, ids in (("rest", rest_ids), ("kafka", kafka_ids)):
        for kind, eid in ids.items():
            value, code = EDGE_STRINGS[kind]
            if code is None:
                assert eid in recorded and eid not in dead, (path, kind)
                assert recorded[eid]["features"]["country"] == value, (path, kind)
                assert api[eid]["features"]["country"] == value, (path, kind)
                assert decided.count(eid) == 1, (path, kind)
            else:
                assert eid not in recorded and eid not in api and eid not in decided, (path, kind)
                if path == "kafka":
                    # A lone surrogate cannot even be decoded: the message is not Avro text.
                    want = "malformed_avro" if kind == "lone_surrogate" else code
                    if kind == "lone_surrogate":
                        assert any(
                            d["error_code"] == want and d["raw"] == values[list(ids).index(kind)]
                            for d in dead_letters(stack.reader, stack.topics.deadletter)
                        )
                    else:
                        assert dead.get(eid) == want, (path, kind, dead.get(eid))


def test_a_nul_in_a_batch_of_four_costs_only_that_event_on_kafka(stack: Stack) -> None:
    events = [inference_event() for _ in range(4)]
    events[2]["features"]["country"] = "f\x00r"
    produce(stack, [CODEC.encode("InferenceEvent", e) for e in events])
    stack.settle([events[i]["event_id"] for i in (0, 1, 3)])
    ids = [e["event_id"] for e in events]
    good = [ids[0], ids[1], ids[3]]
    assert sorted(stack.recorded(ids)) == sorted(good)
    assert sorted(stack.decided(ids)) == sorted(good), "each good event decided exactly once"
    assert stack.dead(ids) == {ids[2]: "string_nul"}


def test_a_nul_in_a_rest_batch_of_four_refuses_the_request_before_anything_is_accepted(
    stack: Stack,
) -> None:
    events = [rest_event(stack) for _ in range(4)]
    events[2]["features"] = {"amount": 1.0, "country": "f\x00r"}
    with stack.client() as c:
        r = post_raw(c, "/api/predictions/batch", {"events": events})
        assert r.status_code == 422, r.text
        (detail,) = r.json()["detail"]
        assert detail["loc"][:3] == ["body", "events", 2] and detail["type"] == "string_nul"
        # The good three, sent again alone, are accepted and recorded.
        again = post_raw(c, "/api/predictions/batch", {"events": [events[i] for i in (0, 1, 3)]})
        assert again.status_code == 202, again.text
    stack.settle([events[i]["event_id"] for i in (0, 1, 3)])
    ids = [e["event_id"] for e in events]
    assert sorted(stack.recorded(ids)) == sorted(ids[i] for i in (0, 1, 3))


def test_an_event_in_the_year_2999_is_refused(stack: Stack) -> None:
    with stack.client() as c:
        r = post_raw(c, "/api/predictions", rest_event(stack, event_time="2999-01-01T00:00:00Z"))
    assert r.status_code == 422
    (detail,) = r.json()["detail"]
    assert detail["type"] == "invalid_time" and detail["loc"][-1] == "event_time"
    assert "300 s" in detail["msg"], "the message names the limit"
    t2999 = int(datetime(2999, 1, 1, tzinfo=UTC).timestamp() * 1000)
    e = inference_event(event_time_ms=t2999)
    produce(stack, [CODEC.encode("InferenceEvent", e)])
    stack.settle([])
    assert stack.dead([e["event_id"]]) == {e["event_id"]: "invalid_time"}
    assert stack.recorded([e["event_id"]]) == {}


def test_a_nan_confidence_is_refused(stack: Stack) -> None:
    with stack.client() as c:
        r = post_raw(
            c, "/api/predictions", rest_event(stack, confidence=math.nan, probabilities=None)
        )
    assert r.status_code == 422, r.text
    (detail,) = r.json()["detail"]
    assert detail["type"] == "confidence_not_finite" and detail["loc"][-1] == "confidence"
    e = inference_event(confidence=math.nan, probabilities=None)
    produce(stack, [CODEC.encode("InferenceEvent", e)])
    stack.settle([])
    assert stack.dead([e["event_id"]]) == {e["event_id"]: "confidence_not_finite"}


def test_a_one_megabyte_category_value_is_refused_and_costs_no_worker(stack: Stack) -> None:
    huge = "x" * 1_000_000
    with stack.client() as c:
        r = post_raw(c, "/api/predictions", rest_event(stack, features={"country": huge}))
    assert r.status_code == 422
    (detail,) = r.json()["detail"]
    assert detail["type"] == "too_large" and "at most 256" in detail["msg"]
    e = inference_event(features={"country": huge})
    after = inference_event()
    produce(stack, [CODEC.encode("InferenceEvent", x) for x in (e, after)])
    stack.settle([after["event_id"]])
    assert stack.dead([e["event_id"]]) == {e["event_id"]: "too_large"}
    assert list(stack.recorded([e["event_id"], after["event_id"]])) == [after["event_id"]]


def test_a_boolean_or_a_string_is_not_a_number(stack: Stack) -> None:
    with stack.client() as c:
        for changes in ({"confidence": True}, {"confidence": "0.8"}, {"features": {"a": True}}):
            r = post_raw(c, "/api/predictions", rest_event(stack, **changes))
            assert r.status_code == 422, (changes, r.text)
        big = post_raw(c, "/api/predictions", rest_event(stack, model_version_id=2**63))
        assert big.status_code == 422 and big.json()["detail"][0]["type"] == "number_out_of_range"
