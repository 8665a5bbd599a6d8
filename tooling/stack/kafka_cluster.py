"""Apache Kafka as a 3-broker KRaft cluster on loopback: the stack's ``cluster`` profile.

Each node is a combined broker and controller, and the three controllers form a static
voter quorum (``controller.quorum.voters``), so any one node may be down and the cluster
still elects a leader and takes writes: topics get three replicas and ``min.insync.replicas``
2. The nodes share the single node's jars, JVM options and storage properties
(:mod:`tooling.stack.kafka`); each has its own folder under ``<stack home>/cluster``.
Tests call :meth:`KafkaCluster.kill_node` and :meth:`KafkaCluster.start_node` to take one
broker away and bring it back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from shared.settings import CLUSTER_NODES, Settings
from tooling.stack.base import ComponentStatus, Server, StartAction, StopAction
from tooling.stack.kafka import Kafka, new_cluster_id, storage_lines
from tooling.stack.kafka import java_command as broker_command
from tooling.stack.process import (
    StackError,
    port_open,
    read_pid,
    run,
    spawn,
    terminate,
    wait_until,
)

logger = logging.getLogger(__name__)

NODE_HEAP = "512m"
MIN_INSYNC = 2


def client_port(settings: Settings, node: int) -> int:
    return settings.kafka_cluster_port + node - 1


def controller_port(settings: Settings, node: int) -> int:
    return settings.kafka_cluster_port + CLUSTER_NODES + node - 1


def voters(settings: Settings) -> str:
    """``controller.quorum.voters``: every node's id and controller address."""
    return ",".join(
        f"{n}@127.0.0.1:{controller_port(settings, n)}" for n in range(1, CLUSTER_NODES + 1)
    )


def render_node_properties(settings: Settings, node: int, data_dir: Path) -> str:
    """``server.properties`` of cluster node ``node`` (1-based)."""
    port = client_port(settings, node)
    ctl = controller_port(settings, node)
    return "\n".join(
        [
            "process.roles=broker,controller",
            f"node.id={node}",
            f"controller.quorum.voters={voters(settings)}",
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{ctl}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{ctl}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            *storage_lines(settings, data_dir, replicas=CLUSTER_NODES, min_isr=MIN_INSYNC),
            # A broker that comes back catches up and takes its partitions' leadership back,
            # so the load spreads again after a restart.
            "auto.leader.rebalance.enable=true",
            "leader.imbalance.check.interval.seconds=30",
            "",
        ]
    )


class KafkaNode:
    """One broker+controller of the cluster: its folder, properties, pid file and log."""

    process_marker = "kafka.Kafka"

    def __init__(self, settings: Settings, node: int) -> None:
        self.settings = settings
        self.node = node
        self.home = settings.stack_home / "cluster" / f"kafka-{node}"
        self.data = self.home / "data"
        self.props = self.home / "server.properties"
        self.pidfile = self.home / "kafka.pid"
        self.log = settings.logs_dir / f"kafka-{node}.log"
        self.port = client_port(settings, node)

    def pid(self) -> int | None:
        return read_pid(self.pidfile, str(self.props))

    def ready(self) -> bool:
        """The node itself answers a metadata request and counts itself among the brokers
        (the cluster's metadata keeps a killed broker listed until its session expires)."""
        if not port_open(self.port):
            return False
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{self.port}"}, logger=logger)
        try:
            return self.node in admin.list_topics(timeout=2).brokers
        except KafkaException:
            return False

    def alive(self) -> bool:
        return self.pid() is not None

    def format_storage(self, lib: Path, cluster_id: str) -> None:
        """Format the node's log folder once, with the cluster's shared id."""
        if (self.data / "meta.properties").exists():
            return
        self.data.mkdir(parents=True, exist_ok=True)
        run(
            [
                "java",
                "-cp",
                f"{lib}/*",
                "kafka.tools.StorageTool",
                "format",
                f"--cluster-id={cluster_id}",
                "-c",
                str(self.props),
            ],
            f"formatting the storage of Kafka node {self.node}",
        )

    def spawn(self, lib: Path, cluster_id: str) -> None:
        for port in (self.port, controller_port(self.settings, self.node)):
            if port_open(port):
                raise StackError(
                    f"port {port} of Kafka node {self.node} is taken by a process the stack "
                    "did not start; set CALIBER_KAFKA_CLUSTER_PORT to a free range"
                )
        self.home.mkdir(parents=True, exist_ok=True)
        self.props.write_text(render_node_properties(self.settings, self.node, self.data))
        self.format_storage(lib, cluster_id)
        spawn(broker_command(lib, self.props, NODE_HEAP), self.log, self.pidfile)


class KafkaCluster(Server):
    """The three nodes: idempotent start, stop, status, and one node's kill and restart."""

    name = "kafka"
    process_marker = KafkaNode.process_marker

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.single = Kafka(settings)  # owns the jar cache the nodes share
        self.home = settings.stack_home / "cluster"
        self.nodes = [KafkaNode(settings, n) for n in range(1, CLUSTER_NODES + 1)]
        self.pidfile = self.nodes[0].pidfile
        self.log = self.nodes[0].log
        self.port = self.nodes[0].port

    @property
    def managed(self) -> bool:
        return self.settings.kafka_bootstrap is None

    @property
    def address(self) -> str:
        return self.settings.kafka_servers

    def cluster_id(self) -> str:
        """The id every node is formatted with, kept beside the nodes' folders."""
        path = self.home / "cluster.id"
        if not path.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            path.write_text(new_cluster_id())
        return path.read_text().strip()

    def live_brokers(self) -> int:
        """How many brokers the cluster's metadata lists (0 when it does not answer)."""
        admin = AdminClient({"bootstrap.servers": self.settings.kafka_servers}, logger=logger)
        try:
            return len(admin.list_topics(timeout=2).brokers)
        except KafkaException:
            return 0

    def ready(self) -> bool:
        return all(node.ready() for node in self.nodes)

    def pid(self) -> int | None:
        return self.nodes[0].pid()

    def alive(self) -> bool:
        return any(node.alive() for node in self.nodes)

    def start(self, timeout: float = 120.0) -> StartAction:
        """Start every node that does not run (reusing the others); wait for all brokers."""
        if not self.managed:
            wait_until(self.ready, 15, f"external Kafka at {self.settings.kafka_servers}")
            return "external"
        down = [node for node in self.nodes if not node.alive()]
        if down:
            self.single.ensure_jars()
            cluster_id = self.cluster_id()
            for node in down:
                node.spawn(self.single.lib, cluster_id)
        wait_until(self._ready_or_raise, timeout, "the Kafka cluster", self.nodes[0].log)
        return "started" if down else "reused"

    def _ready_or_raise(self) -> bool:
        """Whether every broker is up; raises, naming its log, when a node exited during
        start-up (a port taken, a bad data directory), rather than wait out the timeout."""
        for i, node in enumerate(self.nodes, start=1):
            if not node.alive():
                raise StackError(f"Kafka node {i} exited during start-up; read {node.log}")
        return self.ready()

    def start_node(self, node: int, timeout: float = 120.0) -> None:
        """Start node ``node`` (1-based) again and wait until the cluster lists it."""
        target = self.nodes[node - 1]
        if not target.alive():
            target.spawn(self.single.lib, self.cluster_id())
        wait_until(target.ready, timeout, f"Kafka node {node}", target.log, alive=target.alive)

    def kill_node(self, node: int) -> int:
        """SIGKILL node ``node``: no clean shutdown, no leadership handed over. Its pid."""
        target = self.nodes[node - 1]
        pid = target.pid()
        if pid is None:
            raise StackError(f"Kafka node {node} is not running")
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not target.alive(), 30, f"Kafka node {node} to die")
        return pid

    def stop(self) -> StopAction:
        if not self.managed:
            return "external"
        pids = [pid for node in self.nodes if (pid := node.pid()) is not None]
        if not pids:
            return "not running"
        for pid in pids:  # all at once: each broker's shutdown waits for the others' answers
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in pids:
            terminate(pid, timeout=60)
        for node in self.nodes:
            node.pidfile.unlink(missing_ok=True)
        return "stopped"

    def status(self) -> ComponentStatus:
        running = [node.node for node in self.nodes if node.alive()]
        return ComponentStatus(
            name=self.name,
            address=self.address,
            managed=self.managed,
            running=self.ready(),
            pid=self.pid(),
            log=self.nodes[0].log if self.managed else None,
            port=self.nodes[0].port if self.managed else None,
            detail=f"{len(running)}/{len(self.nodes)} nodes running",
        )
