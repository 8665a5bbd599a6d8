"""Redis from Debian's redis-server package, append-only so worker state survives restarts."""

from __future__ import annotations

import redis

from shared.settings import Settings
from shared.stack.apt import ensure_packages
from shared.stack.base import Server
from shared.stack.process import StackError, port_open, read_pid, run, wait_until

REDIS_SERVER = "redis-server"


class Redis(Server):
    name = "redis"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.stack_home / "redis"
        self.pidfile = self.home / "redis.pid"
        self.log = settings.logs_dir / "redis.log"
        self.port = settings.redis_port

    @property
    def managed(self) -> bool:
        return self.settings.redis_url is None

    def ready(self) -> bool:
        try:
            client = redis.Redis.from_url(self.settings.redis_dsn, socket_timeout=1)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except (redis.RedisError, OSError):
            return False

    def start(self, timeout: float = 30.0) -> str:
        if not self.managed:
            wait_until(self.ready, 10, f"external Redis at {self.settings.redis_dsn}")
            return "external"
        if read_pid(self.pidfile) is not None:
            wait_until(self.ready, timeout, "Redis", self.log)
            return "reused"
        if port_open(self.port):
            raise StackError(
                f"port {self.port} is taken by a process the stack did not start; set "
                "CALIBER_REDIS_PORT to a free port or CALIBER_REDIS_URL to use that server"
            )
        ensure_packages(REDIS_SERVER, ["redis-server"])
        self.home.mkdir(parents=True, exist_ok=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        run(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--daemonize",
                "yes",
                "--pidfile",
                str(self.pidfile),
                "--logfile",
                str(self.log),
                "--dir",
                str(self.home),
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
                "--maxmemory-policy",
                "noeviction",
            ],
            "starting Redis",
        )
        wait_until(self.ready, timeout, "Redis", self.log)
        return "started"

    @property
    def address(self) -> str:
        return self.settings.redis_dsn
