"""Apache Kafka, single node in KRaft mode, from Maven Central jars run with the machine's Java."""

from __future__ import annotations

import base64
import logging
import os
import uuid
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from shared.settings import Settings
from shared.stack.base import Server
from shared.stack.process import StackError, port_open, read_pid, run, spawn, wait_until

logger = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy" / "kafka"
HEAP = "-Xmx512m"


class Kafka(Server):
    stop_timeout = 60.0
    name = "kafka"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.stack_home / "kafka"
        self.lib = self.home / KAFKA_VERSION / "lib"
        self.data = self.home / "data"
        self.props = self.home / "server.properties"
        self.pidfile = self.home / "kafka.pid"
        self.log = settings.logs_dir / "kafka.log"
        self.port = settings.kafka_port

    @property
    def managed(self) -> bool:
        return self.settings.kafka_bootstrap is None

    def ready(self) -> bool:
        if self.managed and not port_open(self.port):
            return False
        admin = AdminClient({"bootstrap.servers": self.settings.kafka_servers})
        try:
            admin.list_topics(timeout=2)
        except KafkaException:
            return False
        return True

    def ensure_jars(self) -> None:
        marker = self.lib / ".complete"
        if marker.exists():
            return
        logger.info("resolving Kafka %s from Maven Central into %s", KAFKA_VERSION, self.lib)
        self.lib.mkdir(parents=True, exist_ok=True)
        run(
            [
                "mvn",
                "-q",
                "-B",
                "-f",
                str(DEPLOY_DIR / "pom.xml"),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={self.lib}",
                "-DincludeScope=runtime",
            ],
            "resolving Kafka with Maven",
        )
        marker.write_text(KAFKA_VERSION)

    def render_properties(self) -> str:
        port = self.port
        return "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.bootstrap.servers=127.0.0.1:{port + 1}",
                f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{port + 1}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                f"log.dirs={self.data}",
                f"num.partitions={self.settings.topic_partitions}",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=6",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "transaction.state.log.num.partitions=6",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                # Topics are created by `caliber topics create`; Faust creates its own.
                "auto.create.topics.enable=true",
                "log.retention.hours=168",
                "log.segment.bytes=268435456",
                "message.max.bytes=10485760",
                "",
            ]
        )

    def format_storage(self) -> None:
        if (self.data / "meta.properties").exists():
            return
        self.data.mkdir(parents=True, exist_ok=True)
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        run(
            [
                "java",
                "-cp",
                f"{self.lib}/*",
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                "-t",
                cluster_id,
                "-c",
                str(self.props),
            ],
            "formatting Kafka storage",
        )

    def start(self, timeout: float = 90.0) -> str:
        if not self.managed:
            wait_until(self.ready, 15, f"external Kafka at {self.settings.kafka_servers}")
            return "external"
        pid = read_pid(self.pidfile)
        if pid is not None:
            wait_until(self.ready, timeout, "Kafka", self.log)
            return "reused"
        if port_open(self.port):
            raise StackError(
                f"port {self.port} is taken by a process the stack did not start; set "
                "CALIBER_KAFKA_PORT to a free port or CALIBER_KAFKA_BOOTSTRAP to use that server"
            )
        self.ensure_jars()
        self.home.mkdir(parents=True, exist_ok=True)
        self.props.write_text(self.render_properties())
        self.format_storage()
        env = {**os.environ, "KAFKA_HEAP_OPTS": HEAP}
        spawn(
            [
                "java",
                HEAP,
                "-Xms256m",
                "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20",
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={DEPLOY_DIR / 'log4j2.properties'}",
                "-cp",
                f"{self.lib}/*",
                "kafka.Kafka",
                str(self.props),
            ],
            self.log,
            self.pidfile,
            env=env,
        )
        wait_until(self.ready, timeout, "Kafka", self.log)
        return "started"

    @property
    def address(self) -> str:
        return self.settings.kafka_servers
