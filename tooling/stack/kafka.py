"""Apache Kafka, single node in KRaft mode, from Maven Central jars run with the machine's Java."""

from __future__ import annotations

import base64
import hashlib
import logging
import shutil
import uuid
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from shared.settings import Settings
from tooling.stack.base import Server, StartAction
from tooling.stack.process import StackError, port_open, run, spawn, wait_until

logger = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy" / "kafka"
POM = DEPLOY_DIR / "pom.xml"
LOG4J_CONFIG = DEPLOY_DIR / "log4j2.properties"
# The throughput collector, not G1, on a fixed heap (java_command). On two busy cores G1
# paused the broker 0.7 times a second at 500 events/s (median 17 ms, up to 82), the
# parallel collector 2.5 times less often, and G1's barriers and concurrent refinement
# cost CPU on every request. A decision waits on more than a dozen broker requests (two
# produces, two fetches, two transactions), so the pauses set its tail (README, "twelfth
# round"). The concurrent collectors (ZGC, Shenandoah) cost the broker 20-100 % more CPU
# there and lengthened the tail. The broker's heap holds little: its data is in the page
# cache.
JVM_OPTIONS = [
    "-XX:+UseParallelGC",
    "-Djava.awt.headless=true",
]


def cache_marker(pom: bytes) -> str:
    """What the jar cache's marker holds: the version and the pom it was resolved from."""
    return f"{KAFKA_VERSION} {hashlib.sha256(pom).hexdigest()}"


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


def storage_lines(settings: Settings, data_dir: Path, replicas: int, min_isr: int) -> list[str]:
    """The properties every broker of the local stack shares, single node or cluster:
    storage, topic defaults and the internal topics' replication (``replicas`` copies, at
    least ``min_isr`` in sync for a write)."""
    return [
        f"log.dirs={data_dir}",
        f"num.partitions={settings.topic_partitions}",
        f"default.replication.factor={replicas}",
        f"min.insync.replicas={min_isr}",
        f"offsets.topic.replication.factor={replicas}",
        "offsets.topic.num.partitions=6",
        f"transaction.state.log.replication.factor={replicas}",
        f"transaction.state.log.min.isr={min_isr}",
        "transaction.state.log.num.partitions=6",
        f"share.coordinator.state.topic.replication.factor={replicas}",
        f"share.coordinator.state.topic.min.isr={min_isr}",
        "group.initial.rebalance.delay.ms=0",
        # Caliber's topics come from ensure_topics and Faust declares its own internal
        # topics through the admin API, so a topic that does not exist is a mistake
        # (a wrong namespace) that should fail, not silently get default settings.
        "auto.create.topics.enable=false",
        "log.retention.hours=168",
        "log.segment.bytes=268435456",
        "message.max.bytes=10485760",
        # The log cleaner's key map is a heap buffer allocated at start and live for good
        # (128 MB by default, a quarter of the heap: every full collection marks and moves
        # it). The compacted topics here (model updates, segment maps, the stack identity,
        # offsets, transactions) hold far fewer keys than the 1.3 million 32 MB maps (24
        # bytes each); a topic with more is cleaned in several passes.
        "log.cleaner.dedupe.buffer.size=33554432",
    ]


def render_properties(settings: Settings, data_dir: Path) -> str:
    """``server.properties`` of the single-node broker and controller."""
    port = settings.kafka_port
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
            *storage_lines(settings, data_dir, replicas=1, min_isr=1),
            # At rest the controller appended a no-op record to the metadata log every
            # 500 ms (the default); a single-node cluster has no follower to reassure.
            "metadata.max.idle.interval.ms=5000",
            "transaction.partition.verification.enable=false",
            "",
        ]
    )


def java_command(lib: Path, props: Path, heap: str = "512m") -> list[str]:
    """The command line of one broker: the cached jars, its properties file, its heap (its
    initial and largest size both)."""
    return [
        "java",
        f"-Xmx{heap}",
        f"-Xms{heap}",
        *JVM_OPTIONS,
        f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
        "-cp",
        f"{lib}/*",
        "kafka.Kafka",
        str(props),
    ]


class Kafka(Server):
    name = "kafka"
    process_marker = "kafka.Kafka"
    stop_timeout = 60.0

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

    @property
    def address(self) -> str:
        return self.settings.kafka_servers

    def ready(self) -> bool:
        if self.managed and not port_open(self.port):
            return False
        admin = AdminClient({"bootstrap.servers": self.settings.kafka_servers}, logger=logger)
        try:
            admin.list_topics(timeout=2)
        except KafkaException:
            return False
        return True

    def ensure_jars(self) -> None:
        """Resolve the broker's jars into the cache once per version of ``deploy/kafka``."""
        marker = self.lib / ".complete"
        wanted = cache_marker(POM.read_bytes())
        if marker.exists() and marker.read_text().strip() == wanted:
            return
        logger.info("resolving Kafka %s from Maven Central into %s", KAFKA_VERSION, self.lib)
        shutil.rmtree(self.lib, ignore_errors=True)  # partial or from another pom
        self.lib.mkdir(parents=True)
        run(
            [
                "mvn",
                "-q",
                "-B",
                "-f",
                str(POM),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={self.lib}",
                "-DincludeScope=runtime",
            ],
            "resolving Kafka with Maven",
        )
        marker.write_text(wanted)

    def format_storage(self) -> None:
        """Format the KRaft log folder, once: a formatted folder keeps its cluster id."""
        if (self.data / "meta.properties").exists():
            return
        self.data.mkdir(parents=True, exist_ok=True)
        run(
            [
                "java",
                "-cp",
                f"{self.lib}/*",
                f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                # `=` form: an id may start with "-", which argparse would take for a flag.
                f"--cluster-id={new_cluster_id()}",
                "-c",
                str(self.props),
            ],
            "formatting Kafka storage",
        )

    def start(self, timeout: float = 90.0) -> StartAction:
        if not self.managed:
            wait_until(self.ready, 15, f"external Kafka at {self.settings.kafka_servers}")
            return "external"
        if self.alive():
            wait_until(self.ready, timeout, "Kafka", self.log, alive=self.alive)
            return "reused"
        if port_open(self.port) or port_open(self.port + 1):
            raise StackError(
                f"port {self.port} or {self.port + 1} is taken by a process the stack did not "
                "start; set CALIBER_KAFKA_PORT to a free port or CALIBER_KAFKA_BOOTSTRAP to use "
                "that server"
            )
        self.ensure_jars()
        self.home.mkdir(parents=True, exist_ok=True)
        self.props.write_text(render_properties(self.settings, self.data))
        self.format_storage()
        spawn(java_command(self.lib, self.props), self.log, self.pidfile)
        wait_until(self.ready, timeout, "Kafka", self.log, alive=self.alive)
        return "started"
