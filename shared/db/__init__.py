"""PostgreSQL schema, versioned with Alembic migrations kept in ``migrations/``.

``migrate(dsn)`` upgrades a database to the newest revision; it is what ``caliber db
migrate`` and ``caliber stack up`` run. Migrations use psycopg 3 through SQLAlchemy.
"""

from __future__ import annotations

import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, pool

HERE = Path(__file__).resolve().parent
ALEMBIC_INI = HERE / "alembic.ini"
MIGRATIONS = HERE / "migrations"
# Alembic's ``context`` is one module-level proxy, so one migration at a time per process;
# processes queue on an advisory lock in env.py.
_migrating = threading.Lock()


def sqlalchemy_url(dsn: str) -> str:
    """The psycopg 3 SQLAlchemy URL of a ``postgresql://`` DSN."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if dsn.startswith(prefix):
            return "postgresql+psycopg://" + dsn[len(prefix) :]
    raise ValueError(f"PostgreSQL DSN {dsn!r} must start with postgresql:// or postgres://")


def alembic_config(dsn: str | None = None) -> Config:
    """Alembic's configuration of the package, pointed at ``dsn`` when given."""
    config = Config(str(ALEMBIC_INI))
    config.set_main_option("script_location", str(MIGRATIONS))
    if dsn is not None:
        # ConfigParser interpolation: a literal % in a password must be doubled.
        config.set_main_option("sqlalchemy.url", sqlalchemy_url(dsn).replace("%", "%%"))
    return config


def migrate(dsn: str, revision: str = "head") -> None:
    """Upgrade the database at ``dsn`` to ``revision`` (idempotent; concurrent runs queue)."""
    with _migrating:
        command.upgrade(alembic_config(dsn), revision)


def head_revision() -> str | None:
    """The newest revision among the migrations."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(dsn: str) -> str | None:
    """The revision the database at ``dsn`` is at (None before the first migration)."""
    engine = create_engine(sqlalchemy_url(dsn), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
