"""Which topics a namespace's clean-up removes besides Caliber's own."""

from __future__ import annotations

from tooling.stack.topics_admin import _faust_topic_of


def test_a_workers_faust_topics_belong_to_its_namespace() -> None:
    assert _faust_topic_of("t0a1b2c3d4-ingest-worker-__assignor-__leader", "t0a1b2c3d4")
    assert _faust_topic_of("bench12ab-aggregator-worker-__assignor-__leader", "bench12ab")


def test_other_namespaces_and_caliber_topics_are_left_alone() -> None:
    assert not _faust_topic_of("t0a1b2c3d4-ingest-worker-__assignor-__leader", "t0a1b2c3")
    assert not _faust_topic_of("t0a1b2c3d4.inference.raw", "t0a1b2c3d4")
    assert not _faust_topic_of("caliber-ingest-worker-__assignor-__leader", "t0a1b2c3d4")
    assert not _faust_topic_of("t0a1b2c3d4-notes", "t0a1b2c3d4")
