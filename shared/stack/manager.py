"""Brings the whole local stack up or down, reusing whatever already runs."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from shared.db import migrate
from shared.settings import Settings
from shared.stack.base import ComponentStatus
from shared.stack.kafka import Kafka
from shared.stack.postgres import Postgres
from shared.stack.redis import Redis
from shared.stack.topics_admin import ensure_topics

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class UpResult:
    actions: dict[str, str]
    """Component → started | reused | external."""
    topics_created: list[str]
    seconds: float


def components(settings: Settings) -> list[Kafka | Redis | Postgres]:
    return [Postgres(settings), Redis(settings), Kafka(settings)]


def stack_up(settings: Settings) -> UpResult:
    """Start what is not running, create topics, migrate the database. Idempotent."""
    started = time.monotonic()
    actions = {c.name: c.start() for c in components(settings)}
    created = ensure_topics(settings)
    migrate(settings.postgres_url)
    return UpResult(actions, created, time.monotonic() - started)


def stack_down(settings: Settings) -> dict[str, bool]:
    """Stop what the stack started (external servers are left alone)."""
    return {c.name: c.stop() for c in reversed(components(settings))}


def stack_status(settings: Settings) -> list[ComponentStatus]:
    return [c.status() for c in components(settings)]
