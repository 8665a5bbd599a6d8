"""Which processes a benchmark run charges CPU to, and how fast the machine is.

The servers of the local stack are found by their command lines (the Kafka broker, the Redis
server on the stack's port, the PostgreSQL postmaster on its port and every backend it
forks); the services and the benchmark's own processes by the pids it started. A
PostgreSQL backend is short-lived, so the postmaster's count includes the CPU of the
children it has already reaped.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from shared.settings import CLUSTER_NODES, Settings

MACHINE_LOOP = 20_000_000
"""Additions in :func:`machine_seconds`'s loop."""


def machine_seconds() -> float:
    """Seconds this machine takes for 20 M additions in plain CPython: one figure, printed
    beside every result, that says how fast (and how busy) the machine was."""
    started = time.perf_counter()
    total = 0
    for i in range(MACHINE_LOOP):
        total += i
    assert total == MACHINE_LOOP * (MACHINE_LOOP - 1) // 2
    return time.perf_counter() - started


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def stack_pids(settings: Settings) -> dict[str, int]:
    """Pids of the stack's Kafka brokers, Redis servers and PostgreSQL postmaster (those of
    them running on this host). On the cluster profile, every broker and Redis master by
    its number ("Kafka 2", "Redis 17002"); Redis is the single one when ``redis_url`` names
    it."""
    cluster = settings.stack_profile == "cluster"
    found: dict[str, int] = {}
    for pid in _pids():
        cmd = _cmdline(pid)
        if "kafka.Kafka" in cmd and "java" in cmd:
            name = _broker_name(settings, cmd) if cluster else "Kafka"
            if name is not None:
                found.setdefault(name, pid)
        elif cmd.startswith("redis-server"):
            name = _redis_name(settings, cmd)
            if name is not None:
                found.setdefault(name, pid)
        elif "postgres" in cmd and f"-p {settings.postgres_port}" in cmd and " -D " in cmd:
            found.setdefault("PostgreSQL", pid)
    return found


def _broker_name(settings: Settings, cmd: str) -> str | None:
    home = settings.stack_home / "cluster"
    for node in range(1, CLUSTER_NODES + 1):
        if str(home / f"kafka-{node}" / "server.properties") in cmd:
            return f"Kafka {node}"
    return None


def _redis_name(settings: Settings, cmd: str) -> str | None:
    if settings.stack_profile == "cluster" and settings.redis_url is None:
        for port in range(settings.redis_cluster_port, settings.redis_cluster_port + CLUSTER_NODES):
            if f":{port}" in cmd:
                return f"Redis {port}"
        return None
    return "Redis" if f":{settings.redis_port}" in cmd else None


def cpu_seconds(pid: int, with_children: bool = False) -> float:
    """User + system CPU seconds of ``pid``; with its live children and the reaped ones
    when ``with_children`` (a PostgreSQL postmaster and its backends)."""
    tick = os.sysconf("SC_CLK_TCK")
    try:
        fields = _stat(pid)
    except OSError:
        return 0.0
    total = int(fields[11]) + int(fields[12])
    if with_children:
        total += int(fields[13]) + int(fields[14])
        for child in _pids():
            try:
                f = _stat(child)
            except OSError:
                continue
            if int(f[1]) == pid:
                total += int(f[11]) + int(f[12])
    return total / tick


def machine_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of every core since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


class Meter:
    """CPU seconds per named process between :meth:`start` and :meth:`stop`, plus the rest
    of the machine (the kernel and every other process on it)."""

    REST = "the kernel and everything else on the machine"

    def __init__(self, pids: dict[str, int], servers: dict[str, int]) -> None:
        self.pids = pids
        self.servers = servers
        self._cpu0: dict[str, float] = {}
        self._machine0 = (0, 0)
        self._t0 = 0.0

    def _now(self) -> dict[str, float]:
        out = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        out.update(
            {
                name: cpu_seconds(pid, with_children=name == "PostgreSQL")
                for name, pid in self.servers.items()
            }
        )
        return out

    def start(self) -> None:
        self._cpu0 = self._now()
        self._machine0 = machine_cpu()
        self._t0 = time.monotonic()

    def stop(self) -> tuple[dict[str, float], float, float]:
        """(CPU seconds per process, wall seconds, machine busy share)."""
        now = self._now()
        busy1, total1 = machine_cpu()
        busy0, total0 = self._machine0
        cpu = {name: max(now[name] - self._cpu0.get(name, 0.0), 0.0) for name in now}
        machine_s = (busy1 - busy0) / os.sysconf("SC_CLK_TCK")
        cpu[self.REST] = max(machine_s - sum(cpu.values()), 0.0)
        busy = (busy1 - busy0) / max(total1 - total0, 1)
        return cpu, time.monotonic() - self._t0, busy
