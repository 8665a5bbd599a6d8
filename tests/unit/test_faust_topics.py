"""Which topics a namespace's clean-up removes besides Caliber's own."""

from __future__ import annotations

from shared.contracts.topics import is_worker_app_topic


def test_a_workers_faust_topics_belong_to_its_namespace() -> None:
    assert is_worker_app_topic("t0a1b2c3d4-ingest-worker-__assignor-__leader", "t0a1b2c3d4")
    assert is_worker_app_topic("bench12ab-aggregator-worker-__assignor-__leader", "bench12ab")


def test_other_namespaces_and_caliber_topics_are_left_alone() -> None:
    assert not is_worker_app_topic("t0a1b2c3d4-ingest-worker-__assignor-__leader", "t0a1b2c3")
    assert not is_worker_app_topic("t0a1b2c3d4.inference.raw", "t0a1b2c3d4")
    assert not is_worker_app_topic("caliber-ingest-worker-__assignor-__leader", "t0a1b2c3d4")
    assert not is_worker_app_topic("t0a1b2c3d4-notes", "t0a1b2c3d4")
