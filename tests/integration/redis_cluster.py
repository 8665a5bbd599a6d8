"""A private 3-master Redis Cluster on loopback for the tests (and benchmarks) that need one:
the local stack's own :class:`tooling.stack.redis_cluster.RedisCluster`, on free ports and
in a temporary stack home, stopped (and its directory removed) when the ``with`` block ends.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from shared.settings import CLUSTER_NODES, Settings
from tests.ports import free_range
from tooling.stack.redis_cluster import RedisCluster


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


@contextmanager
def redis_cluster() -> Iterator[LocalRedisCluster]:
    home = Path(tempfile.mkdtemp(prefix="caliber-redis-cluster-"))
    base = free_range(CLUSTER_NODES, 11_000, 21_000, 10_000)
    server = RedisCluster(Settings(stack_home=home, redis_cluster_port=base))
    try:
        server.start()
        yield LocalRedisCluster([node.port for node in server.nodes])
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
