"""Linger and size bounds of the batcher, and failures surfaced by flush and on_error.

The sink here is an in-memory list (the batching logic needs no broker); the Kafka and
REST sinks are tested against the real stack in test_client_stack.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import pytest
from caliber_client.batcher import Batcher, Item
from caliber_client.errors import DeliveryError
from caliber_client.events import Event, LabelEvent


class ListSink:
    def __init__(self, fail: bool = False) -> None:
        self.batches: list[tuple[float, list[str]]] = []
        self.fail = fail
        self.lock = threading.Lock()

    def deliver(self, items: Sequence[Item], failed: Callable[[list[str], str], None]) -> None:
        with self.lock:
            self.batches.append((time.monotonic(), [i.event_id for i in items]))
        if self.fail:
            failed([i.event_id for i in items], "refused")

    def service(self, timeout: float) -> None:
        time.sleep(timeout)

    def drain(self, timeout: float) -> list[str]:
        return []

    def close(self) -> None:
        return None


def _event(version: str = "v1") -> Event:
    return Event("m", version, "a", 0.9)


def _until(predicate: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + 5
    while not predicate():
        assert time.monotonic() < deadline, f"not within 5 s: {what}"
        time.sleep(0.005)


def test_a_full_buffer_is_sent_without_waiting_for_linger() -> None:
    sink = ListSink()
    b = Batcher(sink, linger_ms=60_000, max_events=3)
    events = [_event() for _ in range(7)]
    for e in events:
        b.add(e)
    _until(lambda: len(sink.batches) == 2, "the two full batches")
    assert [ids for _, ids in sink.batches] == [
        [e.event_id for e in events[:3]],
        [e.event_id for e in events[3:6]],
    ]
    b.close()
    assert sink.batches[-1][1] == [events[6].event_id]  # the rest on flush


def test_a_lingering_buffer_is_sent_after_linger() -> None:
    sink = ListSink()
    b = Batcher(sink, linger_ms=100, max_events=1000)
    start = time.monotonic()
    b.add(_event())
    deadline = start + 5
    while not sink.batches and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sink.batches, "nothing sent within 5 s"
    waited = sink.batches[0][0] - start
    assert 0.1 <= waited < 2.0
    b.close()


def test_shapes_never_share_a_batch() -> None:
    sink = ListSink()
    b = Batcher(sink, linger_ms=60_000, max_events=100)
    b.add(_event("v1"))
    b.add(_event("v2"))
    b.add(Event("m", "v1", "a", 0.9, probabilities={"a": 0.9, "b": 0.1}))
    b.add(LabelEvent("e1", "a"))
    b.flush()
    assert sorted(len(ids) for _, ids in sink.batches) == [1, 1, 1, 1]
    b.close()


def test_failures_reach_on_error_and_flush() -> None:
    seen: list[DeliveryError] = []
    b = Batcher(ListSink(fail=True), linger_ms=60_000, max_events=2, on_error=seen.append)
    events = [_event() for _ in range(3)]
    for e in events:
        b.add(e)
    _until(lambda: seen, "on_error")
    assert seen[0].event_ids == [events[0].event_id, events[1].event_id]
    with pytest.raises(DeliveryError) as caught:
        b.flush()
    assert caught.value.event_ids == [e.event_id for e in events]
    b.flush()  # reported once: a second flush has nothing to raise
    b.close()


class SlowSink(ListSink):
    def deliver(self, items: Sequence[Item], failed: Callable[[list[str], str], None]) -> None:
        time.sleep(0.3)  # a slow REST post, say
        super().deliver(items, failed)


def test_the_caller_never_waits_for_the_sink_and_flush_names_what_is_late() -> None:
    sink = SlowSink()
    b = Batcher(sink, linger_ms=60_000, max_events=1)
    started = time.monotonic()
    events = [_event() for _ in range(4)]
    for e in events:
        b.add(e)
    assert time.monotonic() - started < 0.2  # four full batches queued, none waited for
    with pytest.raises(DeliveryError) as caught:
        b.flush(timeout=0.45)  # one batch delivered in time, the first of the rest in flight
    late = caught.value.event_ids  # still queued at the timeout: the newest ones
    assert 1 <= len(late) <= 3 and late == [e.event_id for e in events[-len(late) :]]
    b.close()
    assert [ids for _, ids in sink.batches] == [[e.event_id] for e in events]


def test_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="max_events"):
        Batcher(ListSink(), max_events=0)
