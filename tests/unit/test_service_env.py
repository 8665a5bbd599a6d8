"""The environment a benchmark gives the services it starts."""

from __future__ import annotations

import pytest

from shared.settings import Settings
from tooling.benchmarking import service_env


def test_the_callers_service_settings_reach_the_services(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CALIBER_BATCH_LINGER_SECONDS", "0.3")
    monkeypatch.setenv("CALIBER_TOPIC_NAMESPACE", "someone-elses")
    monkeypatch.setenv("PATH_FOR_THE_TEST", "kept")
    settings = Settings(topic_namespace="bench1234", redis_prefix="bench1234:")
    env = service_env(settings, CALIBER_METRICS_PORT="0")
    assert env["CALIBER_BATCH_LINGER_SECONDS"] == "0.3"
    assert env["PATH_FOR_THE_TEST"] == "kept"
    # The benchmark's own namespace and the extras win over the caller's.
    assert env["CALIBER_TOPIC_NAMESPACE"] == "bench1234"
    assert env["CALIBER_REDIS_PREFIX"] == "bench1234:"
    assert env["CALIBER_METRICS_PORT"] == "0"


def test_where_the_stores_are_comes_from_the_settings_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CALIBER_KAFKA_BOOTSTRAP", "10.0.0.1:9092")
    monkeypatch.setenv("CALIBER_REDIS_URL", "redis://10.0.0.1:6379/0")
    monkeypatch.setenv("CALIBER_POSTGRES_DSN", "postgresql://x@10.0.0.1/y")
    settings = Settings(kafka_bootstrap=None, redis_url=None, postgres_dsn=None, kafka_port=19092)
    env = service_env(settings)
    for name in ("CALIBER_KAFKA_BOOTSTRAP", "CALIBER_REDIS_URL", "CALIBER_POSTGRES_DSN"):
        assert name not in env
    assert env["CALIBER_KAFKA_PORT"] == "19092"
    on_a_cluster = Settings(kafka_bootstrap="127.0.0.1:29092,127.0.0.1:29093")
    assert service_env(on_a_cluster)["CALIBER_KAFKA_BOOTSTRAP"] == (
        "127.0.0.1:29092,127.0.0.1:29093"
    )
