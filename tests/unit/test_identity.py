"""The stack identity check: one line per store out of step, naming the repair; retention."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.runtime.identity import Identity, StoreIdentities, compare
from shared.settings import Settings
from tooling.stack.topics_admin import topic_config

LOG = Identity("a" * 32, 3)


def _found(
    kafka: Identity | None = LOG,
    redis: Identity | None = LOG,
    postgres: Identity | None = LOG,
    behind: list[str] | None = None,
) -> StoreIdentities:
    return StoreIdentities(kafka, redis, postgres, behind or [])


def test_stores_in_step_say_nothing() -> None:
    assert compare(_found()) == []


def test_a_stack_without_any_identity_is_not_a_mismatch() -> None:
    assert compare(_found(None, None, None)) == []


@pytest.mark.parametrize(
    ("found", "starts", "repair"),
    [
        (_found(postgres=None), "PostgreSQL holds no stack identity", "caliber rebuild postgres"),
        (_found(redis=None), "Redis holds no stack identity", "caliber rebuild redis"),
        (
            _found(postgres=Identity("b" * 32, 3)),
            "PostgreSQL belongs to another stack",
            "caliber rebuild postgres",
        ),
        (
            _found(redis=Identity(LOG.stack_id, 2)),
            "Redis is older than the log",
            "caliber rebuild redis",
        ),
        (
            _found(postgres=Identity(LOG.stack_id, 4)),
            "PostgreSQL is newer than the log",
            "caliber rebuild postgres",
        ),
        (
            _found(behind=["aggregator caliber.labels:2"]),
            "Redis is older than the log: its offset fences are behind",
            "caliber rebuild redis",
        ),
        (_found(kafka=None), "Kafka holds no stack identity", "caliber stack reset"),
    ],
)
def test_one_line_names_the_store_its_meaning_and_the_repair(
    found: StoreIdentities, starts: str, repair: str
) -> None:
    [line] = compare(found)
    assert line.startswith(starts), line
    assert f"`{repair}`" in line


def test_both_views_lost_give_a_line_each() -> None:
    lines = compare(_found(redis=None, postgres=None))
    assert [line.split()[0] for line in lines] == ["PostgreSQL", "Redis"]


def test_a_stale_generation_is_reported_once_even_when_fences_are_behind_too() -> None:
    lines = compare(_found(redis=Identity(LOG.stack_id, 1), behind=["drift caliber.predictions:0"]))
    assert len(lines) == 1 and "generation" in lines[0]


def test_topic_retention_is_applied_to_every_plain_topic() -> None:
    settings = Settings()
    assert topic_config(settings, compacted=True) == {"cleanup.policy": "compact"}
    plain = topic_config(settings, compacted=False)
    assert plain["retention.ms"] == str(15 * 24 * 3600 * 1000)
    assert plain["retention.bytes"] == "-1"


def test_retention_shorter_than_window_plus_label_horizon_is_refused() -> None:
    # 7-day window + 1-day horizon = 691,200 s needed.
    assert Settings(label_horizon_seconds=86400, topic_retention_seconds=691200)
    with pytest.raises(ValidationError, match="CALIBER_TOPIC_RETENTION_SECONDS=691199"):
        Settings(label_horizon_seconds=86400, topic_retention_seconds=691199)
