"""Pure parts of the stack manager: server configuration, pid files, waits, the status table."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from shared.db import head_revision, sqlalchemy_url
from shared.settings import Settings
from tooling import supervise
from tooling.cli import render_status
from tooling.stack import ComponentStatus, StackError
from tooling.stack.kafka import (
    Kafka,
    cache_marker,
    java_command,
    new_cluster_id,
    render_properties,
)
from tooling.stack.kafka_cluster import KafkaCluster, KafkaNode
from tooling.stack.postgres import Postgres, can_traverse, public_address
from tooling.stack.process import read_pid, spawn, wait_until
from tooling.stack.redis import public_url, server_arguments

MIGRATIONS = Path(__file__).resolve().parents[2] / "shared" / "db" / "migrations" / "versions"


def properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")


def test_kafka_properties_follow_the_settings(tmp_path: Path) -> None:
    settings = Settings(stack_home=tmp_path, kafka_port=29092, topic_partitions=3)
    lines = properties(render_properties(settings, tmp_path / "kafka" / "data"))
    assert lines["listeners"] == "PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert lines["advertised.listeners"] == "PLAINTEXT://127.0.0.1:29092"
    assert lines["controller.quorum.bootstrap.servers"] == "127.0.0.1:29093"
    assert lines["num.partitions"] == "3"
    assert lines["process.roles"] == "broker,controller"
    assert lines["node.id"] == "1"
    assert lines["log.dirs"] == str(tmp_path / "kafka" / "data")
    assert lines["group.initial.rebalance.delay.ms"] == "0"
    assert lines["auto.create.topics.enable"] == "false"
    assert lines["offsets.topic.replication.factor"] == "1"
    assert lines["transaction.state.log.replication.factor"] == "1"


def test_kafka_keeps_its_files_under_the_stack_home(tmp_path: Path) -> None:
    kafka = Kafka(Settings(stack_home=tmp_path))
    assert kafka.lib == tmp_path / "kafka" / "4.1.1" / "lib"
    assert kafka.log == tmp_path / "logs" / "kafka.log"


def test_a_brokers_heap_is_fixed_at_its_size(tmp_path: Path) -> None:
    """-Xms above -Xmx stops the JVM before the broker starts; both follow the node's heap."""
    command = java_command(tmp_path / "lib", tmp_path / "server.properties", heap="384m")
    heap = [o for o in command if o[:4] in ("-Xms", "-Xmx")]
    assert sorted(heap) == ["-Xms384m", "-Xmx384m"]
    assert command[-2:] == ["kafka.Kafka", str(tmp_path / "server.properties")]
    assert command[command.index("-cp") + 1] == f"{tmp_path / 'lib'}/*"


def test_jar_cache_marker_changes_with_the_pom() -> None:
    assert cache_marker(b"<project/>") == cache_marker(b"<project/>")
    assert cache_marker(b"<project/>") != cache_marker(b"<project> </project>")
    assert cache_marker(b"x").startswith("4.1.1 ")


def test_cluster_id_is_16_bytes_of_url_safe_base64() -> None:
    ids = {new_cluster_id() for _ in range(20)}
    assert len(ids) == 20
    assert all(len(i) == 22 and "=" not in i and "+" not in i and "/" not in i for i in ids)


def test_redis_is_append_only_on_loopback(tmp_path: Path) -> None:
    args = server_arguments(16379, tmp_path, tmp_path / "r.pid", tmp_path / "r.log")
    pairs = dict(zip(args[::2], args[1::2], strict=True))
    assert pairs["--port"] == "16379"
    assert pairs["--bind"] == "127.0.0.1"
    assert pairs["--appendonly"] == "yes"
    assert pairs["--appendfsync"] == "everysec"
    assert pairs["--auto-aof-rewrite-min-size"] == "512mb"
    assert pairs["--daemonize"] == "yes"
    assert pairs["--dir"] == str(tmp_path)


def test_external_servers_are_not_managed(tmp_path: Path) -> None:
    assert Kafka(Settings(stack_home=tmp_path)).managed
    assert not Kafka(Settings(stack_home=tmp_path, kafka_bootstrap="broker:9092")).managed
    external = Postgres(Settings(stack_home=tmp_path, postgres_dsn="postgresql://h/db"))
    assert not external.managed and external.pid() is None


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:s3cret@cache:6379/1", "redis://:***@cache:6379/1"),
        ("rediss://app:s3cret@cache/0", "rediss://app:***@cache/0"),
    ],
)
def test_status_never_shows_a_redis_password(url: str, shown: str) -> None:
    assert public_url(url) == shown


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("postgresql://caliber:pw@db.internal:6432/caliber", "db.internal:6432/caliber"),
        ("postgresql://u:pw@h/x", "h:5432/x"),
        ("host=h port=7 dbname=d user=u password=pw", "h:7/d"),
    ],
)
def test_status_never_shows_a_postgres_password(dsn: str, shown: str) -> None:
    assert public_address(dsn) == shown


@pytest.mark.parametrize(
    ("mode", "uid", "gids", "expected"),
    [
        (0o700, 4242, set(), False),  # someone else's private folder
        (0o711, 4242, set(), True),  # enterable by all
        (0o710, 4242, set(), False),  # enterable by the group only, not a member
        (0o700, 0, set(), True),  # root enters anything
    ],
)
def test_can_traverse_follows_the_mode_bits(
    mode: int, uid: int, gids: set[int], expected: bool
) -> None:
    # Not under tmp_path: pytest's own temporary root is private to its user.
    with tempfile.TemporaryDirectory(dir="/tmp") as scratch:
        Path(scratch).chmod(0o755)
        private = Path(scratch) / "home"
        private.mkdir()
        private.chmod(mode)
        assert can_traverse(private / "not-yet" / "data", uid, gids) is expected
        private.chmod(0o755)


def test_stale_pid_file_is_removed(tmp_path: Path) -> None:
    pidfile = tmp_path / "x.pid"
    pidfile.write_text("999999999")
    assert read_pid(pidfile) is None and not pidfile.exists()
    pidfile.write_text(str(os.getpid()))
    assert read_pid(pidfile) == os.getpid()
    pidfile.write_text("garbage")
    assert read_pid(pidfile) is None


def test_a_recycled_pid_does_not_count_as_the_server(tmp_path: Path) -> None:
    pidfile = tmp_path / "kafka.pid"
    pidfile.write_text(str(os.getpid()))  # alive, but this is pytest, not the broker
    assert read_pid(pidfile, expect="kafka.Kafka") is None
    assert not pidfile.exists()
    pidfile.write_text(str(os.getpid()))
    assert read_pid(pidfile, expect=Path(sys.executable).name) == os.getpid()


def test_wait_until_names_the_log_on_timeout(tmp_path: Path) -> None:
    with pytest.raises(StackError, match=r"Kafka was not ready after 0 s; read .*kafka\.log"):
        wait_until(lambda: False, 0.3, "Kafka", tmp_path / "kafka.log")


def test_wait_until_fails_at_once_when_the_process_exits(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    with pytest.raises(StackError, match=r"Redis exited during start-up; read .*redis\.log"):
        wait_until(lambda: False, 60, "Redis", tmp_path / "redis.log", alive=lambda: False)


def test_the_kafka_cluster_fails_at_once_when_a_node_exits_at_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node that exits (its port taken by another process's connection) fails the start
    naming that node's log, instead of the cluster waiting out its whole timeout."""

    def fake_spawn(node: KafkaNode, lib: Path, cluster_id: str) -> None:
        code = "pass" if node.node == 3 else "import time; time.sleep(60)"
        spawn([sys.executable, "-c", code], node.log, node.pidfile)

    monkeypatch.setattr(KafkaNode, "spawn", fake_spawn)
    cluster = KafkaCluster(Settings(stack_home=tmp_path, kafka_cluster_port=1))
    monkeypatch.setattr(cluster.single, "ensure_jars", lambda: None)
    try:
        started = time.monotonic()
        exited = r"Kafka node 3 exited during start-up; read .*kafka-3\.log"
        with pytest.raises(StackError, match=exited):
            cluster.start(timeout=60)
        assert time.monotonic() - started < 10
    finally:
        for node in cluster.nodes:
            if (pid := node.pid()) is not None:
                os.kill(pid, signal.SIGKILL)


def test_status_table_lists_port_pid_and_log(tmp_path: Path) -> None:
    rows = [
        ComponentStatus("kafka", "127.0.0.1:19092", True, True, 41, tmp_path / "k.log", 19092),
        ComponentStatus("redis", "redis://cache:6379/0", False, True, None, None, None),
    ]
    header, kafka, redis = render_status(rows).splitlines()
    assert header.split() == ["COMPONENT", "STATE", "KIND", "PORT", "PID", "ADDRESS", "LOG"]
    assert kafka.split() == [
        "kafka", "running", "managed", "19092", "41", "127.0.0.1:19092", str(tmp_path / "k.log")
    ]  # fmt: skip
    assert redis.split() == ["redis", "running", "external", "-", "-", "redis://cache:6379/0", "-"]
    assert header.index("PORT") == kafka.index("19092")


@pytest.mark.parametrize(
    ("dsn", "url"),
    [
        ("postgresql://u:p@h:5/db", "postgresql+psycopg://u:p@h:5/db"),
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg://h/db", "postgresql+psycopg://h/db"),
    ],
)
def test_sqlalchemy_url_uses_psycopg_3(dsn: str, url: str) -> None:
    assert sqlalchemy_url(dsn) == url


def test_sqlalchemy_url_rejects_other_schemes() -> None:
    with pytest.raises(ValueError, match="mysql://h/db"):
        sqlalchemy_url("mysql://h/db")


def test_the_migrations_form_one_line_ending_at_the_newest_file() -> None:
    # get_current_head raises when two revisions branch off one parent
    files = sorted(p.name for p in MIGRATIONS.glob("[0-9]*.py"))
    assert head_revision() == files[-1].split("_", 1)[0]


def test_supervisor_config_has_a_program_and_log_per_service(tmp_path: Path) -> None:
    settings = Settings(stack_home=tmp_path, topic_namespace="demo")
    conf = supervise.render_config(settings, ["ingest", "policy"])
    assert "[program:ingest]" in conf and "[program:policy]" in conf
    assert f"stdout_logfile={tmp_path / 'logs' / 'ingest.log'}" in conf
    assert "-m services.policy" in conf
    assert 'CALIBER_TOPIC_NAMESPACE="demo"' in conf
    assert "autorestart=true" in conf
