"""Reading topics back in integration tests (read_committed, bounded waits)."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable, Sequence

from confluent_kafka import Consumer

from shared.contracts.codec import AvroCodec, Decoded
from shared.runtime.kafka import consumer_config
from shared.settings import Settings


class TopicReader:
    """Accumulates every committed record of some topics from the beginning."""

    def __init__(self, settings: Settings, topics: list[str], codec: AvroCodec) -> None:
        self._consumer = Consumer(consumer_config(settings, f"reader-{uuid.uuid4().hex[:8]}"))
        self._consumer.subscribe(topics)
        self._codec = codec
        self.records: dict[str, list[Decoded]] = {t: [] for t in topics}
        self.raw: dict[str, list[bytes]] = {t: [] for t in topics}

    def poll(self, seconds: float = 0.5) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for m in self._consumer.consume(5_000, timeout=0.2):
                if m.error() is not None:
                    continue
                topic = str(m.topic())
                value = m.value() or b""
                self.raw[topic].append(value)
                decoded = self._codec.decode(value)
                assert isinstance(decoded, Decoded), f"undecodable record on {topic}: {decoded}"
                self.records[topic].append(decoded)

    def wait_for(
        self,
        done: Callable[[], bool],
        timeout: float,
        what: str,
        workers: Sequence[subprocess.Popen[bytes]] = (),
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for w in workers:
                if w.poll() is not None:
                    raise AssertionError(
                        f"{w.args} exited with {w.returncode} while waiting for {what}"
                    )
            self.poll(0.5)
            if done():
                return
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")

    def close(self) -> None:
        self._consumer.close()
