"""Pure parts of the cluster profile: the brokers' properties, the Redis Cluster's command
lines, the replication factor of new topics and the addresses the settings derive."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.settings import Settings
from tooling.stack.kafka_cluster import KafkaCluster, render_node_properties, voters
from tooling.stack.manager import components, data_folders, own_servers
from tooling.stack.redis_cluster import RedisCluster, cluster_url, create_command, node_arguments
from tooling.stack.topics_admin import replication_config, replication_factor


def properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")


def cluster_settings(tmp_path: Path, **extra: object) -> Settings:
    return Settings(stack_home=tmp_path, stack_profile="cluster", **extra)  # type: ignore[arg-type]


def test_every_node_is_a_voter_of_one_static_quorum(tmp_path: Path) -> None:
    settings = cluster_settings(tmp_path, kafka_cluster_port=29192)
    assert voters(settings) == "1@127.0.0.1:29195,2@127.0.0.1:29196,3@127.0.0.1:29197"
    for node in (1, 2, 3):
        lines = properties(render_node_properties(settings, node, tmp_path / f"d{node}"))
        assert lines["node.id"] == str(node)
        assert lines["process.roles"] == "broker,controller"
        assert lines["controller.quorum.voters"] == voters(settings)
        port, ctl = 29191 + node, 29194 + node
        assert lines["listeners"] == (f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{ctl}")
        assert lines["advertised.listeners"].startswith(f"PLAINTEXT://127.0.0.1:{port},")
        assert lines["log.dirs"] == str(tmp_path / f"d{node}")


def test_cluster_brokers_keep_three_copies_and_need_two_in_sync(tmp_path: Path) -> None:
    lines = properties(render_node_properties(cluster_settings(tmp_path), 2, tmp_path))
    assert lines["default.replication.factor"] == "3"
    assert lines["min.insync.replicas"] == "2"
    assert lines["offsets.topic.replication.factor"] == "3"
    assert lines["transaction.state.log.replication.factor"] == "3"
    assert lines["transaction.state.log.min.isr"] == "2"
    assert lines["auto.create.topics.enable"] == "false"
    assert "controller.quorum.bootstrap.servers" not in lines


def test_cluster_nodes_live_in_their_own_folders_and_ports(tmp_path: Path) -> None:
    cluster = KafkaCluster(cluster_settings(tmp_path, kafka_cluster_port=39192))
    assert [n.port for n in cluster.nodes] == [39192, 39193, 39194]
    assert [n.home for n in cluster.nodes] == [
        tmp_path / "cluster" / f"kafka-{i}" for i in (1, 2, 3)
    ]
    assert len({n.log for n in cluster.nodes}) == 3
    assert cluster.single.lib == tmp_path / "kafka" / "4.1.1" / "lib"


@pytest.mark.parametrize(
    ("brokers", "override", "expected"),
    [(1, None, 1), (2, None, 2), (3, None, 3), (5, None, 3), (5, 2, 2), (1, 3, 3)],
)
def test_replication_factor_follows_the_brokers(
    brokers: int, override: int | None, expected: int
) -> None:
    assert replication_factor(brokers, override) == expected


def test_no_broker_is_no_replication_factor() -> None:
    with pytest.raises(ValueError, match="no broker"):
        replication_factor(0)


def test_min_insync_two_only_with_three_copies() -> None:
    assert replication_config(1) == {}
    assert replication_config(2) == {}
    assert replication_config(3) == {"min.insync.replicas": "2"}


def test_profile_changes_the_addresses_and_the_database(tmp_path: Path) -> None:
    single = Settings(stack_home=tmp_path)
    cluster = cluster_settings(tmp_path, kafka_cluster_port=29192, redis_cluster_port=27001)
    assert single.kafka_servers == "127.0.0.1:19092"
    assert cluster.kafka_servers == "127.0.0.1:29192,127.0.0.1:29193,127.0.0.1:29194"
    assert cluster.redis_dsn == "redis+cluster://127.0.0.1:27001" == cluster_url(cluster)
    assert single.postgres_url.endswith("/caliber")
    assert cluster.postgres_url.endswith("/caliber_cluster")
    assert (single.internal_replication_factor, cluster.internal_replication_factor) == (1, 3)
    pinned = cluster_settings(tmp_path, kafka_bootstrap="b:9092", redis_url="redis://r:1/0")
    assert pinned.kafka_servers == "b:9092" and pinned.redis_dsn == "redis://r:1/0"


def test_cluster_profile_manages_clusters_and_one_postgres(tmp_path: Path) -> None:
    names = [type(c).__name__ for c in components(cluster_settings(tmp_path))]
    assert names == ["Postgres", "RedisCluster", "KafkaCluster"]
    folders = data_folders(cluster_settings(tmp_path))
    assert tmp_path / "cluster" / "kafka-3" / "data" in folders
    assert tmp_path / "cluster" / "redis-17003" in folders
    # The one PostgreSQL serves both profiles: a cluster reset drops its database only.
    assert len(folders) == 3 + 3 + 1
    assert [type(s).__name__ for s in own_servers(cluster_settings(tmp_path))] == [
        "RedisCluster",
        "KafkaCluster",
    ]


def test_redis_cluster_nodes_are_cluster_enabled_masters(tmp_path: Path) -> None:
    cluster = RedisCluster(cluster_settings(tmp_path, redis_cluster_port=27001))
    assert [n.port for n in cluster.nodes] == [27001, 27002, 27003]
    node = cluster.nodes[1]
    args = node_arguments(node.port, node.home, node.pidfile, node.log)
    pairs = dict(zip(args[::2], args[1::2], strict=True))
    assert pairs["--cluster-enabled"] == "yes"
    assert pairs["--cluster-config-file"] == str(node.home / "nodes.conf")
    assert node.home == tmp_path / "cluster" / "redis-27002"
    assert pairs["--appendonly"] == "yes"
    assert pairs["--bind"] == "127.0.0.1"
    assert create_command([27001, 27002, 27003]) == [
        "redis-cli",
        "--cluster",
        "create",
        "127.0.0.1:27001",
        "127.0.0.1:27002",
        "127.0.0.1:27003",
        "--cluster-replicas",
        "0",
        "--cluster-yes",
    ]


def test_the_benchmark_charges_every_replica_and_broker(tmp_path: Path) -> None:
    from bench.pipeline import _is_pipeline, _stack_line
    from bench.processes import _broker_name, _redis_name

    assert all(_is_pipeline(n) for n in ("ingest", "ingest-1", "gateway", "Kafka 2", "Redis"))
    assert not any(_is_pipeline(n) for n in ("load generator", "decision reader"))
    settings = cluster_settings(tmp_path, redis_cluster_port=27001)
    props = tmp_path / "cluster" / "kafka-2" / "server.properties"
    assert _broker_name(settings, f"java -cp x kafka.Kafka {props}") == "Kafka 2"
    assert _broker_name(settings, "java kafka.Kafka /elsewhere/server.properties") is None
    assert _redis_name(settings, "redis-server 127.0.0.1:27003 [cluster]") == "Redis 27003"
    assert _redis_name(settings, "redis-server 127.0.0.1:16379") is None
    single_redis = settings.model_copy(update={"redis_url": "redis://127.0.0.1:16379/0"})
    assert _redis_name(single_redis, "redis-server 127.0.0.1:16379") == "Redis"
    assert _stack_line(settings, 2).startswith("2 replica(s) of every worker; 3-broker Kafka")
    assert "one Redis" in _stack_line(single_redis, 2)
