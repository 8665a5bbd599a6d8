"""PostgreSQL from Debian's packages, run as the ``postgres`` user on a loopback port.

The server refuses to run as root, so its data folder belongs to ``postgres``. It lives in
``<stack_home>/postgres/data`` when that user can reach the folder; a stack home inside
root's private home (the default, ``/root/.cache/caliber``) is out of its reach, so the data
then lives in ``/var/lib/caliber/postgres-<port>``: never under a temporary folder, which a
machine may clear between runs while the other stores survive. A data folder an earlier
version left in ``/var/tmp/caliber/postgres-<port>`` is moved there on start. The server
is started directly rather than through ``pg_ctl`` so that its output goes to a log the
stack opens and hands to it, in the logs folder with the others, and so that the stack
holds its pid.
"""

from __future__ import annotations

import glob
import logging
import os
import pwd
import shutil
import signal
import stat
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from shared.settings import Settings
from tooling.stack.apt import ensure_installed
from tooling.stack.base import Server, StartAction
from tooling.stack.process import (
    StackError,
    command_line,
    pid_alive,
    port_open,
    run,
    spawn,
    wait_until,
)

logger = logging.getLogger(__name__)

PG_USER = "postgres"
APP_ROLE = "caliber"
APP_PASSWORD = "caliber"  # loopback-only development server
SHARED_ROOT = Path("/var/lib/caliber")
LEGACY_ROOT = Path("/var/tmp/caliber")
"""Where earlier versions kept the data when the ``postgres`` user cannot reach the home."""


def server_binaries() -> list[Path]:
    return [Path(p).parent for p in sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))]


def postgres_bin() -> Path:
    """The newest installed server's ``bin`` folder, installing PostgreSQL when none is."""
    ensure_installed(lambda: bool(server_binaries()), ["postgresql"], "the PostgreSQL server")
    found = server_binaries()
    if not found:
        raise StackError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
    return found[-1]


def can_traverse(path: Path, uid: int, gids: set[int]) -> bool:
    """Whether a user (``uid`` with groups ``gids``) may enter every existing folder on
    the way to ``path``; folders still to be created will be made world-enterable."""
    for folder in [path, *path.parents]:
        try:
            st = folder.stat()
        except FileNotFoundError:
            continue
        if uid == 0:
            continue
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid in gids:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def data_root(settings: Settings) -> Path:
    """Where the server's data and socket folders live (see the module's docstring)."""
    preferred = settings.stack_home / "postgres"
    try:
        user = pwd.getpwnam(PG_USER)
    except KeyError:
        return SHARED_ROOT / f"postgres-{settings.postgres_port}"
    gids = set(os.getgrouplist(PG_USER, user.pw_gid))
    if can_traverse(preferred.resolve(), user.pw_uid, gids):
        return preferred
    return SHARED_ROOT / f"postgres-{settings.postgres_port}"


def public_address(dsn: str) -> str:
    """``host:port/database`` of a DSN, without its credentials."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "(unparsable DSN)"
    host = parts.get("host") or "localhost"
    return f"{host}:{parts.get('port') or 5432}/{parts.get('dbname') or ''}"


def server_arguments(data: Path, port: int, socket_dir: Path) -> list[str]:
    return [
        "-D",
        str(data),
        "-p",
        str(port),
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        f"unix_socket_directories={socket_dir}",
        "-c",
        "max_connections=200",
        "-c",
        "shared_buffers=512MB",
        # Caliber writes a row per prediction: with the default 1 GB of WAL between
        # checkpoints a sustained load checkpoints every minute or so, and the first change
        # of every page after a checkpoint writes the whole page to the WAL again. Fewer
        # checkpoints write a fraction of it; durability is unchanged (every commit still
        # reaches the disk before it returns).
        "-c",
        "max_wal_size=4GB",
        "-c",
        "checkpoint_timeout=15min",
    ]


class Postgres(Server):
    name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown: roll back open transactions, then stop

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = settings.postgres_port
        self.root = data_root(settings)
        self.data = self.root / "data"
        self.socket_dir = self.root / "run"
        self.pidfile = settings.stack_home / "postgres" / "postgres.pid"
        self.log = settings.logs_dir / "postgres.log"
        self.process_marker = str(self.data)

    @property
    def managed(self) -> bool:
        return self.settings.postgres_dsn is None

    @property
    def address(self) -> str:
        if self.managed:
            return f"127.0.0.1:{self.port}"
        return public_address(self.settings.postgres_url)

    def ready(self) -> bool:
        """A real login with the application's own DSN."""
        try:
            with psycopg.connect(self.settings.postgres_url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def _admin_conninfo(self) -> str:
        return f"host={self.socket_dir} port={self.port} user={PG_USER} dbname=postgres"

    def _server_up(self) -> bool:
        try:
            with psycopg.connect(self._admin_conninfo(), connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def _lock_holder(self) -> int | None:
        """The pid of a server that runs on our data folder per its own lock file."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return None
        if pid_alive(pid) and self.process_marker in command_line(pid):
            return pid
        return None

    def _adopt_legacy_data(self) -> None:
        legacy = LEGACY_ROOT / self.root.name
        if self.root.parent != SHARED_ROOT or self.root.exists():
            return
        if not (legacy / "data" / "PG_VERSION").exists():
            return
        SHARED_ROOT.mkdir(parents=True, exist_ok=True)
        shutil.chown(SHARED_ROOT, PG_USER, PG_USER)
        shutil.move(str(legacy), str(self.root))
        logger.warning("moved PostgreSQL's data out of a temporary folder: %s", self.root)

    def _initdb(self, bindir: Path) -> None:
        self._adopt_legacy_data()
        if (self.data / "PG_VERSION").exists():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        if self.root.parent == SHARED_ROOT:
            shutil.chown(SHARED_ROOT, PG_USER, PG_USER)
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
        """The application's role (allowed to create databases, as tests do) and database."""
        with psycopg.connect(self._admin_conninfo(), autocommit=True) as conn:
            if not conn.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_ROLE,)
            ).fetchone():
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                        sql.Identifier(APP_ROLE), sql.Literal(APP_PASSWORD)
                    )
                )
            # DROP DATABASE ... WITH (FORCE) of a scratch database must be able to end an
            # autovacuum worker still on it, which runs under no role of the application's.
            conn.execute(sql.SQL("GRANT pg_signal_backend TO {}").format(sql.Identifier(APP_ROLE)))
            if not conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.settings.postgres_database,)
            ).fetchone():
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(self.settings.postgres_database),
                        sql.Identifier(APP_ROLE),
                    )
                )

    def drop_database(self, name: str) -> None:
        """Drop one database of the server (a profile's own), ending its sessions."""
        with psycopg.connect(self._admin_conninfo(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def start(self, timeout: float = 60.0) -> StartAction:
        if not self.managed:
            wait_until(self.ready, 15, "external PostgreSQL")
            return "external"
        if not self.alive() and (holder := self._lock_holder()) is not None:
            # Our pid file was lost while the server kept running: adopt it.
            self.pidfile.parent.mkdir(parents=True, exist_ok=True)
            self.pidfile.write_text(str(holder))
        if self.alive():
            wait_until(self._server_up, timeout, "PostgreSQL", self.log, alive=self.alive)
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
        # Left by a killed server; its pid may since belong to another process, which
        # would make the new server refuse to start.
        (self.data / "postmaster.pid").unlink(missing_ok=True)
        spawn(
            [str(bindir / "postgres"), *server_arguments(self.data, self.port, self.socket_dir)],
            self.log,
            self.pidfile,
            env={k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL")},
            user=PG_USER,
        )
        wait_until(self._server_up, timeout, "PostgreSQL", self.log, alive=self.alive)
        self._provision()
        return "started"
