"""A scratch key prefix on the stack's Redis, for tests of one store module at a time: the
body gets an async client and a fresh prefix, and every key under that prefix is deleted
afterwards, whatever the body did."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from shared.runtime import redis_client
from shared.settings import Settings


def with_scratch_prefix(
    settings: Settings, name: str, body: Callable[[Any, str], Awaitable[None]]
) -> None:
    async def go() -> None:
        client = redis_client.async_client(settings.redis_dsn)
        prefix = f"{name}{uuid.uuid4().hex[:8]}:"
        try:
            await body(client, prefix)
        finally:
            keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()

    asyncio.run(go())
