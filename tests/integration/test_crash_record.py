"""The crash record in Redis (shared/runtime/quarantine.py), attempt by attempt.

A committed attempt leaves its mark for the next attempt to overwrite (two round trips per
iteration instead of three); these tests check that such a leftover never reads as a crash,
that a real crash still does, and that the careful span and an abandoned attempt behave as
before.
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
        # a crash in that attempt: the restart reads from 121 again
        assert await record.suspects({TP: 121}) == {TP: Suspect(crashes=1, careful=True)}
        # one message later (the careful attempt over 121 committed): still careful, no crash
        assert await record.suspects({TP: 122}) == {TP: Suspect(crashes=0, careful=True)}
        # past the crashed span's end the record is stale again
        assert await record.suspects({TP: 131}) == {}

    _with_record(stack_settings, body)


def test_crashes_at_one_offset_count_up_and_a_careful_commit_moves_on(
    stack_settings: Settings,
) -> None:
    async def body(record: CrashRecord) -> None:
        await record.mark({TP: (100, 120)}, {})  # crashed
        first = await record.suspects({TP: 100})
        assert first == {TP: Suspect(crashes=1, careful=True)}
        await record.mark({TP: (100, 100)}, first)  # careful, crashed again
        second = await record.suspects({TP: 100})
        assert second == {TP: Suspect(crashes=2, careful=True)}
        await record.mark({TP: (100, 100)}, second)
        await record.finished({TP: (100, 100)})  # this time it committed
        assert await record.suspects({TP: 101}) == {TP: Suspect(crashes=0, careful=True)}
        # the span still ends where the first crash's attempt ended
        assert await record.suspects({TP: 120}) == {TP: Suspect(crashes=0, careful=True)}
        assert await record.suspects({TP: 121}) == {}
        # and the next normal mark starts a span of its own
        await record.mark({TP: (121, 125)}, {})
        assert await record.suspects({TP: 121}) == {TP: Suspect(crashes=1, careful=True)}
        assert await record.suspects({TP: 126}) == {}

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
