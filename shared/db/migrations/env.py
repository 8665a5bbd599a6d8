"""Alembic environment: online migrations only, all pending ones in one transaction.

``shared.db.migrate`` passes the database URL in the configuration. Run from the alembic
command line (``alembic -c shared/db/alembic.ini …``), which is an entry point of its own,
the URL comes from Caliber's settings (``CALIBER_POSTGRES_DSN`` or the local stack).
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine, pool, text

# Any fixed number: migrators of one database queue on it instead of racing.
MIGRATION_LOCK = 7_316_021

config = context.config
url = config.get_main_option("sqlalchemy.url")
if not url:
    from shared.db import sqlalchemy_url
    from shared.settings import Settings

    if config.config_file_name:
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    url = sqlalchemy_url(Settings().postgres_url)

engine = create_engine(url, poolclass=pool.NullPool)
try:
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=None)
        with context.begin_transaction():
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            context.run_migrations()
finally:
    engine.dispose()
