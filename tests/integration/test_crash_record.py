"""The crash record in Redis (shared/runtime/quarantine.py), attempt by attempt.

A committed attempt leaves its mark for the next attempt to overwrite (two round trips per
iteration instead of three); these tests check that such a leftover never reads as a crash,
that a real crash still does, that a crashed span is searched by halves for its culprit,
and that an abandoned attempt is forgotten.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from shared.runtime.quarantine import CrashRecord, Suspect
from shared.settings import Settings
from tests.integration.redis_scratch import with_scratch_prefix

TP = ("caliber.inference.raw", 3)


def _with_record(settings: Settings, body: Callable[[CrashRecord], Awaitable[None]]) -> None:
    with_scratch_prefix(
        settings, "crashtest", lambda client, prefix: body(CrashRecord(client, prefix, "grp", 3))
    )


def test_a_committed_attempts_mark_is_overwritten_and_never_reads_as_a_crash(
    stack_settings: Settings,
) -> None:
    async def body(record: CrashRecord) -> None:
        assert await record.suspects({TP: 100}) == {}
        await record.mark({TP: (100, 120)}, {})
        # committed: nothing is removed; the next attempt starts after it
        assert await record.suspects({TP: 121}) == {}
        await record.mark({TP: (121, 130)}, {})
        # a crash in that attempt (10 offsets): the restart reads half of it from 121
        assert await record.suspects({TP: 121}) == {TP: Suspect(crashes=0, careful=True, width=5)}
        # later in the span with no crash there: careful, as wide as what is left of the span
        assert await record.suspects({TP: 128}) == {TP: Suspect(crashes=0, careful=True, width=3)}
        # past the crashed span's end the record is stale again
        assert await record.suspects({TP: 131}) == {}

    _with_record(stack_settings, body)


def test_a_crashed_span_is_searched_by_halves_and_its_culprit_counted_alone(
    stack_settings: Settings,
) -> None:
    async def body(record: CrashRecord) -> None:
        await record.mark({TP: (100, 119)}, {})  # 20 offsets, crashed (the culprit: 106)
        s = await record.suspects({TP: 100})
        assert s == {TP: Suspect(crashes=0, careful=True, width=10)}
        await record.mark({TP: (100, 109)}, s)  # 100..109 crashed again
        s = await record.suspects({TP: 100})
        assert s == {TP: Suspect(crashes=0, careful=True, width=5)}
        await record.mark({TP: (100, 104)}, s)
        await record.finished({TP: (100, 104)})  # 100..104 committed
        s = await record.suspects({TP: 105})
        assert s == {TP: Suspect(crashes=0, careful=True, width=5)}  # the same width goes on
        await record.mark({TP: (105, 109)}, s)  # crashed
        s = await record.suspects({TP: 105})
        assert s == {TP: Suspect(crashes=0, careful=True, width=2)}
        await record.mark({TP: (105, 106)}, s)  # crashed
        s = await record.suspects({TP: 105})
        assert s == {TP: Suspect(crashes=0, careful=True, width=1)}
        await record.mark({TP: (105, 105)}, s)
        await record.finished({TP: (105, 105)})  # 105 alone committed
        s = await record.suspects({TP: 106})
        assert s == {TP: Suspect(crashes=0, careful=True, width=1)}
        # one message now: its crashes count up (the quarantine's count)
        await record.mark({TP: (106, 106)}, s)
        s = await record.suspects({TP: 106})
        assert s == {TP: Suspect(crashes=1, careful=True, width=1)}
        await record.mark({TP: (106, 106)}, s)
        s = await record.suspects({TP: 106})
        assert s == {TP: Suspect(crashes=2, careful=True, width=1)}

    _with_record(stack_settings, body)


def test_crashes_at_one_offset_count_up_and_a_careful_commit_moves_on(
    stack_settings: Settings,
) -> None:
    async def body(record: CrashRecord) -> None:
        await record.mark({TP: (100, 100)}, {})  # one message, crashed
        first = await record.suspects({TP: 100})
        assert first == {TP: Suspect(crashes=1, careful=True)}
        await record.mark({TP: (100, 100)}, first)  # careful, crashed again
        second = await record.suspects({TP: 100})
        assert second == {TP: Suspect(crashes=2, careful=True)}
        await record.mark({TP: (100, 100)}, second)
        await record.finished({TP: (100, 100)})  # this time it committed
        assert await record.suspects({TP: 101}) == {}  # the span was that message alone
        # and the next normal mark starts a span of its own
        await record.mark({TP: (101, 125)}, {})
        assert await record.suspects({TP: 101}) == {TP: Suspect(crashes=0, careful=True, width=12)}
        assert await record.suspects({TP: 126}) == {}

    _with_record(stack_settings, body)


def test_a_record_written_before_widths_reads_as_one_message_at_a_time(
    stack_settings: Settings,
) -> None:
    async def body(record: CrashRecord) -> None:
        key = f"{record._prefix}{TP[0]}:{TP[1]}"
        await record._redis.hset(key, mapping={"offset": 100, "crashes": 1, "until": 120})
        assert await record.suspects({TP: 100}) == {TP: Suspect(crashes=1, careful=True)}
        assert await record.suspects({TP: 110}) == {TP: Suspect(crashes=0, careful=True)}

    _with_record(stack_settings, body)


def test_an_abandoned_attempt_is_forgotten_and_read_again_normally(
    stack_settings: Settings,
) -> None:
    async def body(record: CrashRecord) -> None:
        await record.mark({TP: (100, 120)}, {})
        await record.forget({TP: (100, 120)})  # the group moved on under it: not a crash
        assert await record.suspects({TP: 100}) == {}

    _with_record(stack_settings, body)


def test_a_replay_from_before_a_leftover_mark_is_read_normally(
    stack_settings: Settings,
) -> None:
    async def body(record: CrashRecord) -> None:
        await record.mark({TP: (100, 120)}, {})  # committed, its mark left behind
        # the group's offsets moved back for a replay: not a crashed span
        assert await record.suspects({TP: 0}) == {}
        assert await record.suspects({TP: 99}) == {}

    _with_record(stack_settings, body)
