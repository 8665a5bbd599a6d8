"""PostgreSQL from Debian's packages, run as the ``postgres`` user on a loopback port.

The server refuses to run as root, and the ``postgres`` user cannot enter root's home, so
its data lives under ``/var/tmp/caliber`` (owned by ``postgres``) while its log is opened by
the stack and handed to it, landing in the stack's logs folder with the others.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import signal
from pathlib import Path

import psycopg
from psycopg import sql

from shared.settings import Settings
from shared.stack.apt import ensure_packages
from shared.stack.base import Server
from shared.stack.process import StackError, port_open, read_pid, run, spawn, wait_until

logger = logging.getLogger(__name__)

PG_USER = "postgres"
APP_ROLE = "caliber"
APP_PASSWORD = "caliber"  # loopback-only development server
APP_DATABASE = "caliber"


def postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if not found:
        ensure_packages("/usr/lib/postgresql", ["postgresql"])
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if not found:
        raise StackError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
    return Path(found[-1]).parent


class Postgres(Server):
    stop_signal = signal.SIGINT  # fast shutdown
    name = "postgres"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = settings.postgres_port
        self.root = Path("/var/tmp/caliber") / f"postgres-{self.port}"
        self.data = self.root / "data"
        self.socket_dir = self.root / "run"
        self.pidfile = settings.stack_home / "postgres" / "postgres.pid"
        self.log = settings.logs_dir / "postgres.log"

    @property
    def managed(self) -> bool:
        return self.settings.postgres_dsn is None

    def _admin_conninfo(self) -> str:
        return f"host={self.socket_dir} port={self.port} user={PG_USER} dbname=postgres"

    def ready(self) -> bool:
        try:
            with psycopg.connect(self.settings.postgres_url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def _server_up(self) -> bool:
        try:
            with psycopg.connect(self._admin_conninfo(), connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def _initdb(self, bindir: Path) -> None:
        if (self.data / "PG_VERSION").exists():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.root.parent, PG_USER, PG_USER)
        shutil.chown(self.root, PG_USER, PG_USER)
        run(
            [
                "runuser",
                "-u",
                PG_USER,
                "--",
                str(bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                PG_USER,
                "-E",
                "UTF8",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ],
            "initialising the PostgreSQL data folder",
        )

    def _provision(self) -> None:
        with psycopg.connect(self._admin_conninfo(), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_ROLE,)
            ).fetchone()
            if not exists:
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                        sql.Identifier(APP_ROLE), sql.Literal(APP_PASSWORD)
                    )
                )
            has_db = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (APP_DATABASE,)
            ).fetchone()
            if not has_db:
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(APP_DATABASE), sql.Identifier(APP_ROLE)
                    )
                )

    def start(self, timeout: float = 60.0) -> str:
        if not self.managed:
            wait_until(self.ready, 15, "external PostgreSQL")
            return "external"
        if read_pid(self.pidfile) is not None:
            wait_until(self._server_up, timeout, "PostgreSQL", self.log)
            self._provision()
            return "reused"
        if port_open(self.port):
            raise StackError(
                f"port {self.port} is taken by a process the stack did not start; set "
                "CALIBER_POSTGRES_PORT to a free port or CALIBER_POSTGRES_DSN to use that server"
            )
        bindir = postgres_bin()
        self._initdb(bindir)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.socket_dir, PG_USER, PG_USER)
        (self.data / "postmaster.pid").unlink(missing_ok=True)  # left by a killed server
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        spawn(
            [
                str(bindir / "postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={self.socket_dir}",
                "-c",
                "max_connections=200",
                "-c",
                "shared_buffers=128MB",
            ],
            self.log,
            self.pidfile,
            env={k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL")},
            user=PG_USER,
        )
        wait_until(self._server_up, timeout, "PostgreSQL", self.log)
        self._provision()
        return "started"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}" if self.managed else "external"
