"""A 3-master Redis Cluster on loopback: the stack's ``cluster`` profile.

Three ``redis-server --cluster-enabled yes`` processes, each with its own folder (append-only
file and ``nodes.conf``) under ``<stack home>/cluster``, joined once by
``redis-cli --cluster create`` with no replicas; the 16,384 hash slots are split between the
three masters. A started cluster remembers itself in each ``nodes.conf``, so a later start
only reuses or restarts the servers. Clients reach it through ``redis+cluster://`` URLs.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from urllib.parse import urlsplit

import redis

from shared.settings import CLUSTER_NODES, Settings
from tooling.stack.apt import ensure_packages
from tooling.stack.base import ComponentStatus, Server, StartAction, StopAction
from tooling.stack.process import StackError, port_open, read_pid, run, terminate, wait_until
from tooling.stack.redis import REDIS_SERVER, prioritise, public_url, server_arguments

REDIS_CLI = "redis-cli"
SLOTS = 16_384
NODE_TIMEOUT_MS = 5_000


def node_arguments(port: int, home: Path, pidfile: Path, log: Path) -> list[str]:
    """The single server's configuration plus cluster mode, with its state in ``home``."""
    return [
        *server_arguments(port, home, pidfile, log),
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        str(home / "nodes.conf"),
        "--cluster-node-timeout",
        str(NODE_TIMEOUT_MS),
    ]


def create_command(ports: list[int]) -> list[str]:
    """``redis-cli --cluster create``: every node a master, no questions asked."""
    return [
        REDIS_CLI,
        "--cluster",
        "create",
        *(f"127.0.0.1:{port}" for port in ports),
        "--cluster-replicas",
        "0",
        "--cluster-yes",
    ]


def cluster_url(settings: Settings) -> str:
    """The URL of the cluster (any node finds the others): what ``CALIBER_REDIS_URL`` takes."""
    return f"redis+cluster://127.0.0.1:{settings.redis_cluster_port}"


class RedisNode:
    def __init__(self, settings: Settings, index: int) -> None:
        self.port = settings.redis_cluster_port + index
        self.home = settings.stack_home / "cluster" / f"redis-{self.port}"
        self.pidfile = self.home / "redis.pid"
        self.log = settings.logs_dir / f"redis-{self.port}.log"

    def pid(self) -> int | None:
        return read_pid(self.pidfile, REDIS_SERVER)

    def info(self) -> dict[str, str]:
        """``CLUSTER INFO`` of this node ({} when it does not answer)."""
        client = redis.Redis(port=self.port, socket_timeout=1)
        try:
            raw = client.execute_command("CLUSTER INFO")
        except (redis.RedisError, OSError):
            return {}
        finally:
            client.close()
        if isinstance(raw, dict):  # redis-py parses the reply into a dict
            return {str(k): str(v) for k, v in raw.items()}
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

    def start(self) -> None:
        if port_open(self.port):
            raise StackError(
                f"port {self.port} is taken by a process the stack did not start; set "
                "CALIBER_REDIS_CLUSTER_PORT to a free range"
            )
        self.home.mkdir(parents=True, exist_ok=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        run(
            [REDIS_SERVER, *node_arguments(self.port, self.home, self.pidfile, self.log)],
            f"starting Redis Cluster node {self.port}",
        )
        wait_until(lambda: bool(self.info()), 30, f"Redis node {self.port}", self.log)


class RedisCluster(Server):
    name = "redis"
    process_marker = REDIS_SERVER

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.nodes = [RedisNode(settings, i) for i in range(CLUSTER_NODES)]
        self.pidfile = self.nodes[0].pidfile
        self.log = self.nodes[0].log
        self.port = self.nodes[0].port

    @property
    def managed(self) -> bool:
        return self.settings.redis_url is None

    @property
    def address(self) -> str:
        return public_url(self.settings.redis_dsn)

    @property
    def url(self) -> str:
        return cluster_url(self.settings)

    def pid(self) -> int | None:
        return self.nodes[0].pid()

    def alive(self) -> bool:
        return any(node.pid() is not None for node in self.nodes)

    def ready(self) -> bool:
        """Every node sees a whole cluster: all slots served, all masters known."""
        if not self.managed:
            return _external_ready(self.settings.redis_dsn)
        for node in self.nodes:
            info = node.info()
            if info.get("cluster_state") != "ok":
                return False
            if int(info.get("cluster_known_nodes", 0)) < len(self.nodes):
                return False
        return True

    def start(self, timeout: float = 60.0) -> StartAction:
        if not self.managed:
            wait_until(self.ready, 10, f"external Redis at {self.address}")
            return "external"
        down = [node for node in self.nodes if node.pid() is None]
        if down:
            ensure_packages(REDIS_SERVER, ["redis-server"])
            for node in down:
                node.start()
        if not self.formed():
            run(create_command([n.port for n in self.nodes]), "creating the Redis Cluster")
        wait_until(self.ready, timeout, "the Redis Cluster", self.nodes[0].log)
        for node in self.nodes:
            prioritise(node.pid(), self.settings.redis_nice)
        return "started" if down else "reused"

    def formed(self) -> bool:
        """Whether the slots were ever assigned (a restarted cluster reads them back from
        ``nodes.conf``; creating it twice would fail)."""
        return any(int(node.info().get("cluster_slots_assigned", 0)) > 0 for node in self.nodes)

    def kill_node(self, index: int) -> int:
        node = self.nodes[index]
        pid = node.pid()
        if pid is None:
            raise StackError(f"Redis node {node.port} is not running")
        os.kill(pid, signal.SIGKILL)
        return pid

    def stop(self) -> StopAction:
        if not self.managed:
            return "external"
        pids = [pid for node in self.nodes if (pid := node.pid()) is not None]
        for pid in pids:
            terminate(pid)
        for node in self.nodes:
            node.pidfile.unlink(missing_ok=True)
        return "stopped" if pids else "not running"

    def status(self) -> ComponentStatus:
        running = sum(node.pid() is not None for node in self.nodes)
        return ComponentStatus(
            name=self.name,
            address=self.address,
            managed=self.managed,
            running=self.ready(),
            pid=self.pid(),
            log=self.nodes[0].log if self.managed else None,
            port=self.nodes[0].port if self.managed else None,
            detail=f"{running}/{len(self.nodes)} masters running",
        )


def _external_ready(url: str) -> bool:
    """An external Redis (single or cluster) answers a PING on the URL's host and port."""
    parts = urlsplit(url)
    client = redis.Redis(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 6379,
        password=parts.password,
        socket_timeout=1,
    )
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()
