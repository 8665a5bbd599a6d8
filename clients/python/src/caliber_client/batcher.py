"""Batching with linger and size bounds, over a pluggable sink (Kafka or REST).

Events (or labels) of one shape collect in a buffer; a buffer is sealed when it holds
``max_events`` or when its oldest item has waited ``linger_ms``. One background thread hands
sealed batches to the sink (so a caller never waits on the network: a REST post and its
retries happen there) and lets the sink serve its callbacks. At most ``max_pending``
sealed batches wait for it; beyond that :meth:`Batcher.add` blocks (back-pressure rather
than unbounded memory while Caliber is unreachable). Failures reported by the sink are
kept until :meth:`Batcher.flush` raises them as one :class:`DeliveryError`, and are passed
to ``on_error`` as they happen.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from caliber_client.errors import DeliveryError
from caliber_client.events import Event, LabelEvent

logger = logging.getLogger(__name__)

Item = Event | LabelEvent
ErrorHandler = Callable[[DeliveryError], None]


class Sink(Protocol):
    """Where sealed batches go. ``deliver`` reports failures through ``failed``."""

    def deliver(self, items: Sequence[Item], failed: Callable[[list[str], str], None]) -> None:
        """Send one batch (items of one shape); may return before it is acknowledged."""

    def service(self, timeout: float) -> None:
        """Serve delivery callbacks for up to ``timeout`` seconds."""

    def drain(self, timeout: float) -> list[str]:
        """Wait for every batch handed over; the ids still unacknowledged at the timeout."""

    def close(self) -> None: ...


@dataclass(slots=True)
class _Buffer:
    started: float
    items: list[Item] = field(default_factory=list)


class Batcher:
    def __init__(
        self,
        sink: Sink,
        linger_ms: float = 20.0,
        max_events: int = 500,
        on_error: ErrorHandler | None = None,
        max_pending: int = 100,
    ) -> None:
        if max_events < 1 or linger_ms < 0:
            raise ValueError(
                f"max_events must be >= 1 and linger_ms >= 0; got {max_events}, {linger_ms}"
            )
        self._sink = sink
        self._linger = linger_ms / 1000.0
        self._max = max_events
        self._on_error = on_error
        self._buffers: dict[Any, _Buffer] = {}
        self._ready: queue.Queue[list[Item]] = queue.Queue(max(max_pending, 1))
        self._lock = threading.Lock()
        self._failed_ids: list[str] = []
        self._reasons: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="caliber-batcher", daemon=True)
        self._thread.start()

    def add(self, item: Item) -> None:
        """Buffer one event or label; a full buffer is queued for the sender thread."""
        ready: list[Item] | None = None
        with self._lock:
            buf = self._buffers.get(item.shape())
            if buf is None:
                buf = self._buffers[item.shape()] = _Buffer(time.monotonic())
            buf.items.append(item)
            if len(buf.items) >= self._max:
                ready = buf.items
                del self._buffers[item.shape()]
        if ready is not None:
            self._ready.put(ready)

    def _failed(self, ids: list[str], reason: str) -> None:
        logger.warning("caliber: %d events or labels not delivered: %s", len(ids), reason)
        with self._lock:
            self._failed_ids.extend(ids)
            self._reasons.append(reason)
        if self._on_error is not None:
            try:
                self._on_error(DeliveryError(ids, [reason]))
            except Exception:
                logger.exception("caliber: the on_error handler failed")

    def _seal(self, everything: bool) -> list[list[Item]]:
        now = time.monotonic()
        with self._lock:
            due = [
                k for k, b in self._buffers.items() if everything or now - b.started >= self._linger
            ]
            return [self._buffers.pop(k).items for k in due]

    def _deliver(self, items: list[Item]) -> None:
        try:
            self._sink.deliver(items, self._failed)
        except Exception as exc:  # the thread must survive whatever a sink raises
            logger.exception("caliber: delivering a batch failed")
            self._failed([i.event_id for i in items], f"{type(exc).__name__}: {exc}")

    def _run(self) -> None:
        step = max(min(self._linger / 2, 0.05), 0.001)
        while not self._stop.is_set():
            try:
                items: list[Item] | None = self._ready.get(timeout=step)
            except queue.Empty:
                items = None
            while items is not None:  # every queued batch first: they are the older ones
                self._deliver(items)
                self._ready.task_done()
                try:
                    items = self._ready.get_nowait()
                except queue.Empty:
                    items = None
            for batch in self._seal(everything=False):
                self._deliver(batch)
            try:
                self._sink.service(0)
            except Exception:
                logger.exception("caliber: serving delivery callbacks failed")

    def flush(self, timeout: float = 30.0) -> None:
        """Send every buffer and wait until all is acknowledged.

        Raises :class:`DeliveryError` naming every event or label not delivered since the
        previous flush (including those still unacknowledged at ``timeout``).
        """
        deadline = time.monotonic() + timeout
        for batch in self._seal(everything=True):
            self._ready.put(batch)
        while self._ready.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)
        pending = self._queued_ids()
        pending += self._sink.drain(max(deadline - time.monotonic(), 0.0))
        if pending:
            self._failed(pending, f"not acknowledged within {timeout} s")
        with self._lock:
            ids, reasons = self._failed_ids, self._reasons
            self._failed_ids, self._reasons = [], []
        if ids:
            raise DeliveryError(ids, reasons)

    def _queued_ids(self) -> list[str]:
        """Ids of the batches still waiting for the sender (after a flush timed out)."""
        with self._ready.mutex:
            return [i.event_id for batch in self._ready.queue for i in batch]

    def close(self, timeout: float = 30.0) -> None:
        """Flush, stop the background thread and close the sink."""
        try:
            self.flush(timeout)
        finally:
            self._stop.set()
            self._thread.join(timeout)
            self._sink.close()
