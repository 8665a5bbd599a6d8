"""Free loopback ports for servers a test starts, taken below the kernel's ephemeral range
(``net.ipv4.ip_local_port_range``, 32768–60999 by default): a port found free there could be
handed to some client's outgoing connection (the suite opens thousands) before the server
binds it, and the server then exits at start-up."""

from __future__ import annotations

import random
import socket

LOW, HIGH = 20_000, 32_000
EPHEMERAL_LOW = 32_768


def _free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(span: int = 1) -> int:
    """A port p with p … p + span - 1 free."""
    return free_range(span, LOW, HIGH - span)


def free_pair() -> int:
    """A port p with p + 1 free too (Kafka's controller listens on the next port)."""
    return free_port(2)


def free_range(count: int, low: int, high: int, step: int = 0) -> int:
    """A port p (low <= p < high) with p … p + count - 1 free and, with ``step``, p + step …
    too (a Redis Cluster node's bus listens on its port + 10000): every port stays below the
    ephemeral range, where a client's outgoing connection could take it first (a Kafka node
    of the cluster campaign once exited at start-up with "Address already in use")."""
    if high - 1 + step + count > EPHEMERAL_LOW:
        raise ValueError(f"ports up to {high - 1 + step + count} reach the ephemeral range")
    for _ in range(200):
        base = random.randrange(low, high)
        ports = [base + i for i in range(count)] + [base + step + i for i in range(count) if step]
        if all(_free(p) for p in ports):
            return base
    raise AssertionError(f"no {count} free ports (step {step}) from {low} to {high}")
