"""A private Redis for routing tests that kill it (never the shared stack's)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis

from tests.ports import free_port


class PrivateRedis:
    """``redis-server`` on a free port with an fsync-always append-only file in ``home``:
    killed with SIGKILL and started again, it comes back with every acknowledged write."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        with (self.home / "redis.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    "redis-server",
                    "--port", str(self.port),
                    "--bind", "127.0.0.1",
                    "--dir", str(self.home),
                    "--appendonly", "yes",
                    "--appendfsync", "always",
                    "--save", "",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.1)
        raise AssertionError(f"private redis on {self.port} did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)
