"""A stand-in for a consumed Kafka message, with only what the offset fence reads of one
(``shared.runtime.offset_fence``): its topic, partition and offset."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FenceMessage:
    t: str
    p: int
    o: int

    def topic(self) -> str:
        return self.t

    def partition(self) -> int:
        return self.p

    def offset(self) -> int:
        return self.o
