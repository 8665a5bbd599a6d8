"""Redis from Debian's redis-server package, append-only so worker state survives restarts."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis

from shared.runtime.priority import renice_threads
from shared.settings import Settings
from tooling.stack.apt import ensure_packages
from tooling.stack.base import Server, StartAction
from tooling.stack.process import StackError, port_open, run, wait_until

REDIS_SERVER = "redis-server"


logger = logging.getLogger(__name__)


def prioritise(pid: int | None, nice: int) -> None:
    """Run every thread of the Redis server ``pid`` at niceness ``nice`` (see
    ``Settings.redis_nice``); a Redis raised before goes back to 0 when the setting is 0."""
    if pid is None:
        return
    if not renice_threads(pid, lambda _: nice):
        logger.warning(
            "Redis runs at the default priority: niceness %d needs root or CAP_SYS_NICE", nice
        )


def server_arguments(port: int, home: Path, pidfile: Path, log: Path) -> list[str]:
    """Command-line configuration of the stack's Redis (no config file to keep in sync)."""
    return [
        "--port",
        str(port),
        # Loopback only: protected mode then never refuses a client, and nothing else
        # on the network can reach a server without a password.
        "--bind",
        "127.0.0.1",
        "--protected-mode",
        "yes",
        "--daemonize",
        "yes",
        "--pidfile",
        str(pidfile),
        "--logfile",
        str(log),
        "--dir",
        str(home),
        # Workers keep windows, dedupe and pending joins here and count on them after a
        # restart: every write is in the append-only file within a second.
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        # The file is compacted (a fork writing the whole dataset) when it has doubled and
        # passed this size. Every event appends its dedupe claim and join record, so at the
        # default 64 MB a busy stack compacted every 20 to 30 s, a second of a core each time
        # (and a fork pausing every client); at 512 MB, every few minutes.
        "--auto-aof-rewrite-min-size",
        "512mb",
        "--save",
        "",
        "--maxmemory-policy",
        "noeviction",
    ]


def public_url(url: str) -> str:
    """``url`` with its password, if any, masked."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class Redis(Server):
    name = "redis"
    process_marker = REDIS_SERVER

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.stack_home / "redis"
        self.pidfile = self.home / "redis.pid"
        self.log = settings.logs_dir / "redis.log"
        self.port = settings.redis_port

    @property
    def managed(self) -> bool:
        return self.settings.redis_url is None

    @property
    def address(self) -> str:
        return public_url(self.settings.redis_dsn)

    def ready(self) -> bool:
        try:
            client = redis.Redis.from_url(self.settings.redis_dsn, socket_timeout=1)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except (redis.RedisError, OSError):
            return False

    def start(self, timeout: float = 30.0) -> StartAction:
        if not self.managed:
            wait_until(self.ready, 10, f"external Redis at {self.settings.redis_dsn}")
            return "external"
        if self.alive():
            wait_until(self.ready, timeout, "Redis", self.log, alive=self.alive)
            prioritise(self.pid(), self.settings.redis_nice)
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
            [REDIS_SERVER, *server_arguments(self.port, self.home, self.pidfile, self.log)],
            "starting Redis",
        )
        # A daemonized Redis writes its pid file just after forking; until then only the
        # readiness check can tell.
        wait_until(self.ready, timeout, "Redis", self.log)
        prioritise(self.pid(), self.settings.redis_nice)
        return "started"
