"""Awaitable Kafka publishing for request handlers: a request answers after acks=all."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer


class Publisher:
    """Wraps a producer; a background thread serves delivery reports into futures."""

    def __init__(self, producer: Producer) -> None:
        self.producer = producer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="kafka-delivery", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.05)

    async def send(self, messages: list[tuple[str, bytes | None, bytes]]) -> None:
        """Produce every (topic, key, value) and wait until Kafka has acknowledged all."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[None]] = []
        for topic, key, value in messages:
            fut: asyncio.Future[None] = loop.create_future()

            def done(
                err: KafkaError | None, _msg: Message, fut: asyncio.Future[None] = fut
            ) -> None:
                loop.call_soon_threadsafe(_settle, fut, err)

            while True:
                try:
                    self.producer.produce(topic, value, key, on_delivery=done)
                    break
                except BufferError:
                    await asyncio.sleep(0.01)
            futures.append(fut)
        await asyncio.gather(*futures)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.producer.flush(10)


def _settle(fut: asyncio.Future[Any], err: KafkaError | None) -> None:
    if fut.done():
        return
    if err is None:
        fut.set_result(None)
    else:
        fut.set_exception(KafkaException(err))
