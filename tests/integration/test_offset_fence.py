"""The fenced write of shared/runtime/offset_fence.py on the real Redis.

Each kind of write lands as written (increments summed, TTLs set or not, hashes without a
field skipped), a replay changes nothing, and the global keys (watermarks, sets of model
versions) are written only after the parts they announce.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

from confluent_kafka import Message

from shared.runtime.offset_fence import Effect, OffsetFence
from shared.settings import Settings
from tests.fence_message import FenceMessage
from tests.integration.redis_scratch import with_scratch_prefix


def _msgs(*offsets: int, partition: int = 0) -> list[Message]:
    return [cast(Message, FenceMessage("caliber.decisions", partition, o)) for o in offsets]


def _with_fence(
    settings: Settings, body: Callable[[Any, OffsetFence, str], Awaitable[None]]
) -> None:
    with_scratch_prefix(
        settings,
        "fencetest",
        lambda client, prefix: body(client, OffsetFence(client, f"{prefix}offsets"), prefix),
    )


def _text(raw: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in raw.items()}


def test_increments_and_sets_land_as_written_and_a_replay_changes_nothing(
    stack_settings: Settings,
) -> None:
    async def body(r: Any, fence: OffsetFence, p: str) -> None:
        h, g, empty = f"{p}{{m/1}}:h", f"{p}{{m/1}}:g", f"{p}{{m/1}}:empty"
        s_ttl, s_keep = f"{p}{{m/1}}:s1", f"{p}{{m/1}}:s2"
        effect = Effect(
            incr=[
                (h, 600, {"n": 3, "7": -2}),
                (g, 0, {"a": 1}),
                (h, 0, {"n": 4, "x": 10}),  # the same hash twice in one batch: summed
                (empty, 600, {}),  # no field: nothing written, not even the TTL
            ],
            set=[(s_ttl, "v|1|2", 300), (s_keep, "kept", 0)],
            zadd=[(f"{p}{{m/1}}:idx", 60.0, "60", 900)],
        )
        assert await fence.apply(_msgs(10, 11), effect) is True
        assert _text(await r.hgetall(h)) == {"n": "7", "7": "-2", "x": "10"}
        assert _text(await r.hgetall(g)) == {"a": "1"}
        assert 590 <= await r.ttl(h) <= 600
        assert await r.ttl(g) == -1  # a TTL of 0 means none
        assert await r.exists(empty) == 0
        assert await r.get(s_ttl) == b"v|1|2" and 290 <= await r.ttl(s_ttl) <= 300
        assert await r.get(s_keep) == b"kept" and await r.ttl(s_keep) == -1
        assert await r.zrange(f"{p}{{m/1}}:idx", 0, -1, withscores=True) == [(b"60", 60.0)]
        assert await fence.done() == {"caliber.decisions:0": 11}
        # the same offsets again (a replay after a crash before the Kafka commit): refused
        assert await fence.apply(_msgs(10, 11), effect) is False
        assert _text(await r.hgetall(h)) == {"n": "7", "7": "-2", "x": "10"}
        # the next batch adds to what is there
        later = Effect(incr=[(h, 600, {"n": 1})], set=[(s_keep, "again", 0)])
        assert await fence.apply(_msgs(12), later) is True
        assert (await r.hget(h, "n"), await r.get(s_keep)) == (b"8", b"again")

    _with_fence(stack_settings, body)


def test_global_keys_are_written_after_the_parts_they_announce(
    stack_settings: Settings,
) -> None:
    """A reader follows a watermark to the windows: it must never find the watermark of a
    batch whose counts are not written yet."""

    async def body(r: Any, fence: OffsetFence, p: str) -> None:
        marks, models = f"{p}watermarks", f"{p}models"
        seen_by_parts: list[tuple[Any, bool]] = []
        real = fence._part

        async def part(tag: str, effect: Effect, first: Any, last: Any) -> bool:
            seen_by_parts.append(
                (await r.hget(marks, "m/1"), bool(await r.sismember(models, "m/1")))
            )
            return await real(tag, effect, first, last)

        fence._part = part  # type: ignore[method-assign]
        effect = Effect(
            incr=[(f"{p}{{m/1}}:h", 0, {"n": 5}), (f"{p}{{~d3}}:j", 0, {"k": 1})],
            sadd=[(models, "m/1")],
            hmax=[(marks, "m/1", 1_000)],
        )
        assert await fence.apply(_msgs(5), effect) is True
        assert seen_by_parts == [(None, False), (None, False)]  # two parts, neither saw them
        assert await r.hget(marks, "m/1") == b"1000" and await r.sismember(models, "m/1")
        # hmax keeps the maximum: an older batch (another partition) never moves it back
        older = Effect(incr=[(f"{p}{{m/1}}:h", 0, {"n": 1})], hmax=[(marks, "m/1", 900)])
        assert await fence.apply(_msgs(3, partition=1), older) is True
        assert await r.hget(marks, "m/1") == b"1000"
        assert await r.hget(f"{p}{{m/1}}:h", "n") == b"6"

    _with_fence(stack_settings, body)
