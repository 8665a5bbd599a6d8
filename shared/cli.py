"""The ``caliber`` command: local stack, topics, database, and the other tools' sub-commands."""

from __future__ import annotations

import importlib
import logging

import typer

from shared.observability import configure_logging
from shared.settings import Settings

app = typer.Typer(no_args_is_help=True, help="Caliber: trust signals for models in production.")
stack_app = typer.Typer(no_args_is_help=True, help="The local Kafka, Redis and PostgreSQL.")
topics_app = typer.Typer(no_args_is_help=True, help="Kafka topics.")
db_app = typer.Typer(no_args_is_help=True, help="PostgreSQL schema migrations.")
services_app = typer.Typer(no_args_is_help=True, help="Caliber's workers under supervisord.")
app.add_typer(stack_app, name="stack")
app.add_typer(topics_app, name="topics")
app.add_typer(db_app, name="db")
app.add_typer(services_app, name="services")

# Sub-commands that live beside the code they drive: (module, attribute, name).
PLUGINS = (
    ("simulator.cli", "app", "simulate"),
    ("services.gateway.cli", "app", "keys"),
    ("simulator.demo", "app", "demo"),
)
for module_name, attr, name in PLUGINS:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not module_name.startswith(exc.name):
            raise
        continue
    app.add_typer(getattr(module, attr), name=name)


def _settings() -> Settings:
    settings = Settings()
    configure_logging(settings.log_level)
    return settings


@stack_app.command("up")
def stack_up() -> None:
    """Start Kafka, Redis and PostgreSQL (reusing what runs), create topics, migrate."""
    from shared.stack import stack_up as up

    result = up(_settings())
    for name, action in result.actions.items():
        typer.echo(f"{name:<9} {action}")
    if result.topics_created:
        typer.echo(f"topics created: {len(result.topics_created)}")
    typer.echo(f"stack ready in {result.seconds:.1f} s")


@stack_app.command("down")
def stack_down() -> None:
    """Stop the servers the stack started (external ones are left alone)."""
    from shared import supervise
    from shared.stack import stack_down as down

    settings = _settings()
    if supervise.stop(settings):
        typer.echo("services  stopped")
    for name, stopped in down(settings).items():
        typer.echo(f"{name:<9} {'stopped' if stopped else 'was not running'}")


@stack_app.command("status")
def stack_status() -> None:
    """Show each server: address, state, pid and log file; exits 1 when one is down."""
    from shared.stack import stack_status as status

    rows = status(_settings())
    for s in rows:
        state = "running" if s.running else "down"
        kind = "managed" if s.managed else "external"
        typer.echo(f"{s.name:<9} {state:<8} {kind:<8} {s.address:<28} pid={s.pid} log={s.log}")
    if not all(s.running for s in rows):
        raise typer.Exit(1)


@topics_app.command("create")
def topics_create(
    namespace: str | None = typer.Option(None, help="topic namespace (default: settings)"),
) -> None:
    """Create every Caliber topic that does not exist yet."""
    from shared.stack import ensure_topics

    created = ensure_topics(_settings(), namespace)
    typer.echo(f"created {len(created)} topics" + (f": {', '.join(created)}" if created else ""))


@db_app.command("migrate")
def db_migrate(revision: str = typer.Option("head", help="target revision")) -> None:
    """Upgrade the database to the latest schema (idempotent)."""
    from shared.db import current_revision, migrate

    settings = _settings()
    migrate(settings.postgres_url, revision)
    typer.echo(f"database at revision {current_revision(settings.postgres_url)}")


@services_app.command("start")
def services_start(
    only: list[str] = typer.Option(None, "--only", help="start just these services"),
) -> None:
    """Start every service under supervisord (logs per service, restart on crash)."""
    from shared import supervise

    settings = _settings()
    started = supervise.start(settings, only or None)
    supervise.wait_running(settings)
    typer.echo(f"running: {', '.join(started)}; logs in {settings.logs_dir}")


@services_app.command("status")
def services_status() -> None:
    """Show each supervised service's state."""
    from shared import supervise

    rows = supervise.status(_settings())
    if not rows:
        typer.echo("no services running")
    for row in rows:
        typer.echo(f"{row.name:<11} {row.state:<9} {row.detail}")


@services_app.command("stop")
def services_stop() -> None:
    """Stop every supervised service and supervisord."""
    from shared import supervise

    typer.echo("stopped" if supervise.stop(_settings()) else "no services were running")


logging.getLogger(__name__).addHandler(logging.NullHandler())

if __name__ == "__main__":
    app()
