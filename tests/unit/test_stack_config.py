"""Pure parts of the stack manager: broker configuration, pid files, the supervisor config."""

from __future__ import annotations

import os
from pathlib import Path

from shared import supervise
from shared.settings import Settings
from shared.stack.kafka import Kafka
from shared.stack.process import read_pid


def test_kafka_properties_follow_the_settings(tmp_path: Path) -> None:
    props = Kafka(
        Settings(stack_home=tmp_path, kafka_port=29092, topic_partitions=3)
    ).render_properties()
    lines = dict(line.split("=", 1) for line in props.splitlines() if line)
    assert lines["listeners"] == "PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert lines["controller.quorum.bootstrap.servers"] == "127.0.0.1:29093"
    assert lines["num.partitions"] == "3"
    assert lines["process.roles"] == "broker,controller"
    assert lines["log.dirs"] == str(tmp_path / "kafka" / "data")


def test_external_servers_are_not_managed(tmp_path: Path) -> None:
    assert Kafka(Settings(stack_home=tmp_path)).managed
    assert not Kafka(Settings(stack_home=tmp_path, kafka_bootstrap="broker:9092")).managed


def test_stale_pid_file_is_removed(tmp_path: Path) -> None:
    pidfile = tmp_path / "x.pid"
    pidfile.write_text("999999999")
    assert read_pid(pidfile) is None and not pidfile.exists()
    pidfile.write_text(str(os.getpid()))
    assert read_pid(pidfile) == os.getpid()
    pidfile.write_text("garbage")
    assert read_pid(pidfile) is None


def test_supervisor_config_has_a_program_and_log_per_service(tmp_path: Path) -> None:
    settings = Settings(stack_home=tmp_path, topic_namespace="demo")
    conf = supervise.render_config(settings, ["ingest", "policy"])
    assert "[program:ingest]" in conf and "[program:policy]" in conf
    assert f"stdout_logfile={tmp_path / 'logs' / 'ingest.log'}" in conf
    assert "-m services.policy" in conf
    assert 'CALIBER_TOPIC_NAMESPACE="demo"' in conf
    assert "autorestart=true" in conf
