"""A private 3-master Redis Cluster on loopback for the tests that need one.

Three ``redis-server --cluster-enabled yes`` in a temporary directory, joined by
``redis-cli --cluster create … --cluster-replicas 0``; ready once every node reports
``cluster_state:ok``. Stopped (and its directory removed) when the ``with`` block ends.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

MASTERS = 3


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ports(n: int) -> list[int]:
    """``n`` ports free on loopback whose cluster bus ports (+10000) are free too."""
    out: list[int] = []
    while len(out) < n:
        p = random.randint(21000, 29000)
        if p not in out and _free(p) and _free(p + 10000):
            out.append(p)
    return out


@dataclass(frozen=True)
class LocalRedisCluster:
    ports: list[int]

    @property
    def url(self) -> str:
        """The ``CALIBER_REDIS_URL`` of the cluster (any node is a seed)."""
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    @property
    def node_url(self) -> str:
        """A plain URL of one node: the client factory detects the cluster behind it."""
        return f"redis://127.0.0.1:{self.ports[1]}"


def _wait_ok(ports: list[int], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        states = []
        for p in ports:
            try:
                info = redis.Redis(port=p, socket_timeout=2).cluster("info")
                states.append(info.get("cluster_state"))
            except redis.RedisError:
                states.append(None)
        if all(s == "ok" for s in states):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"Redis Cluster not ok: {states}")
        time.sleep(0.2)


@contextmanager
def redis_cluster() -> Iterator[LocalRedisCluster]:
    root = Path(tempfile.mkdtemp(prefix="caliber-redis-cluster-"))
    ports = _ports(MASTERS)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for p in ports:
            procs.append(
                subprocess.Popen(
                    [
                        "redis-server",
                        "--port",
                        str(p),
                        "--bind",
                        "127.0.0.1",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        f"nodes-{p}.conf",
                        "--dir",
                        str(root),
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--logfile",
                        str(root / f"{p}.log"),
                    ],
                )
            )
        for p in ports:
            deadline = time.monotonic() + 15
            while True:
                try:
                    redis.Redis(port=p, socket_timeout=1).ping()
                    break
                except redis.RedisError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        _wait_ok(ports)
        yield LocalRedisCluster(ports)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        shutil.rmtree(root, ignore_errors=True)
