"""The ``caliber`` command: local stack, topics, database, and the other tools' sub-commands.

Sub-commands that live beside the code they drive are registered in ``PLUGINS`` below, the
one place to add another: the name it goes by, its module and the ``typer.Typer`` in it.
Heavy imports happen inside the commands, and plugins load only when used, so
``caliber stack up`` starts quickly.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import typer
import typer.main
from typer.core import TyperGroup

from shared.runtime.observability import configure_logging
from shared.settings import Settings

if TYPE_CHECKING:
    from tooling.stack.base import ComponentStatus

PLUGINS: dict[str, tuple[str, str]] = {
    # sub-command name: (module, attribute holding its typer.Typer)
    "simulate": ("simulator.cli", "app"),
    "keys": ("services.gateway.cli", "app"),
    "demo": ("simulator.demo", "app"),
    "rebuild": ("tooling.rebuild_cli", "app"),
}


class PluginGroup(TyperGroup):
    """The root group: a plugin's module is imported only when its sub-command runs, so
    ``caliber stack up`` does not pay for the simulator's scientific stack.

    ``ctx`` and the returned command are click's types, which typer vendors in some
    versions and not in others; hence ``Any``.
    """

    def list_commands(self, ctx: Any) -> list[str]:
        names = list(super().list_commands(ctx))
        return names + [n for n in PLUGINS if n not in names and _installed(PLUGINS[n][0])]

    def get_command(self, ctx: Any, name: str) -> Any:
        if name in PLUGINS and name not in self.commands:
            module_name, attr = PLUGINS[name]
            if _installed(module_name):
                plugin = getattr(importlib.import_module(module_name), attr)
                # Wrapped exactly as add_typer would: a one-command plugin stays a group.
                wrapper = typer.Typer()
                wrapper.add_typer(plugin, name=name)
                command = typer.main.get_group(wrapper).get_command(ctx, name)
                if command is not None:
                    self.add_command(command, name)
        return super().get_command(ctx, name)


def _installed(module_name: str) -> bool:
    try:
        return importlib.util.find_spec(module_name) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


app = typer.Typer(
    cls=PluginGroup,
    no_args_is_help=True,
    help="Caliber: trust signals for models in production.",
)
stack_app = typer.Typer(no_args_is_help=True, help="The local Kafka, Redis and PostgreSQL.")
topics_app = typer.Typer(no_args_is_help=True, help="Kafka topics.")
db_app = typer.Typer(no_args_is_help=True, help="PostgreSQL schema migrations.")
services_app = typer.Typer(no_args_is_help=True, help="Caliber's workers under supervisord.")
app.add_typer(stack_app, name="stack")
app.add_typer(topics_app, name="topics")
app.add_typer(db_app, name="db")
app.add_typer(services_app, name="services")


def _settings() -> Settings:
    settings = Settings()
    configure_logging(settings.log_level)
    return settings


@contextmanager
def _reported_errors() -> Iterator[None]:
    """A server that cannot be started or reached ends the command with its message (which
    names the log to read), not a traceback."""
    from confluent_kafka import KafkaException
    from sqlalchemy.exc import OperationalError

    from tooling.stack import StackError

    try:
        yield
    except (StackError, KafkaException, OperationalError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


def render_status(rows: Sequence[ComponentStatus]) -> str:
    """The ``stack status`` table: one line per server."""
    header = ("COMPONENT", "STATE", "KIND", "PORT", "PID", "ADDRESS", "LOG")
    lines = [
        (
            s.name,
            "running" if s.running else "down",
            "managed" if s.managed else "external",
            "-" if s.port is None else str(s.port),
            "-" if s.pid is None else str(s.pid),
            s.address,
            "-" if s.log is None else str(s.log),
        )
        for s in rows
    ]
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]])
        for row in [header, *lines]
    )


@stack_app.command("up")
def stack_up() -> None:
    """Start Kafka, Redis and PostgreSQL (reusing what runs), create topics, migrate."""
    from tooling.stack import stack_up as up

    with _reported_errors():
        result = up(_settings())
    for name, action in result.actions.items():
        typer.echo(f"{name:<9} {action:<8} {result.component_seconds.get(name, 0.0):5.1f} s")
    if result.topics_created:
        typer.echo(f"topics created: {len(result.topics_created)}")
    typer.echo(f"database at revision {result.database_revision}")
    if result.identity is not None:
        typer.echo(f"identity  {result.identity}")
    for line in result.identity_problems:
        typer.echo(f"mismatch: {line}", err=True)
    if result.identity_problems:
        raise typer.Exit(2)
    typer.echo(f"stack ready in {result.seconds:.1f} s")


@stack_app.command("down")
def stack_down() -> None:
    """Stop the services and the servers the stack started (external ones are left alone)."""
    from tooling import supervise
    from tooling.stack import stack_down as down

    settings = _settings()
    if supervise.stop(settings):
        typer.echo("services  stopped")
    with _reported_errors():
        outcome = down(settings)
    for name, action in outcome.items():
        typer.echo(f"{name:<9} {action}")


@stack_app.command("status")
def stack_status() -> None:
    """Show each server: state, port, pid, log file; exits 1 when one is down."""
    from tooling.stack import stack_status as status

    settings = _settings()
    with _reported_errors():
        rows = status(settings)
    typer.echo(render_status(rows))
    if not all(s.running for s in rows):
        raise typer.Exit(1)
    from shared.runtime import identity

    with _reported_errors():
        found = identity.read_all(settings)
    problems = identity.compare(found)
    if found.kafka is not None:
        typer.echo(f"identity  {found.kafka}")
    for line in problems:
        typer.echo(f"mismatch: {line}", err=True)
    if problems:
        raise typer.Exit(2)


@stack_app.command("reset")
def stack_reset(
    yes: bool = typer.Option(False, "--yes", help="do not ask for confirmation (scripts)"),
) -> None:
    """Stop everything and DELETE the stack's data (Kafka's log, Redis, PostgreSQL): the
    next `up` starts an empty stack. `stack down` (and `make down`) keep the data."""
    from tooling import supervise
    from tooling.stack import stack_reset as reset
    from tooling.stack.manager import data_folders

    settings = _settings()
    folders = data_folders(settings)
    if not yes:
        typer.echo("this deletes every event, label, review, alert and registry entry in:")
        for folder in folders:
            typer.echo(f"  {folder}")
        typer.confirm("delete them?", abort=True)
    if supervise.stop(settings):
        typer.echo("services  stopped")
    with _reported_errors():
        removed = reset(settings)
    typer.echo(f"removed {len(removed)} data folders; `caliber stack up` starts a new stack")


@topics_app.command("create")
def topics_create(
    namespace: str | None = typer.Option(None, help="topic namespace (default: settings)"),
) -> None:
    """Create every Caliber topic that does not exist yet."""
    from tooling.stack import ensure_topics

    with _reported_errors():
        created = ensure_topics(_settings(), namespace)
    typer.echo(f"created {len(created)} topics" + (f": {', '.join(created)}" if created else ""))


@db_app.command("migrate")
def db_migrate(revision: str = typer.Option("head", help="target revision")) -> None:
    """Upgrade the database to the latest schema (idempotent)."""
    from shared.db import current_revision, migrate

    settings = _settings()
    with _reported_errors():
        migrate(settings.postgres_url, revision)
        now = current_revision(settings.postgres_url)
    typer.echo(f"database at revision {now}")


@services_app.command("start")
def services_start(
    only: list[str] = typer.Option(None, "--only", help="start just these services"),
) -> None:
    """Start every service under supervisord (logs per service, restart on crash)."""
    from tooling import supervise

    settings = _settings()
    started = supervise.start(settings, only or None)
    supervise.wait_running(settings)
    typer.echo(f"running: {', '.join(started)}; logs in {settings.logs_dir}")


@services_app.command("status")
def services_status() -> None:
    """Show each supervised service's state."""
    from tooling import supervise

    rows = supervise.status(_settings())
    if not rows:
        typer.echo("no services running")
    for row in rows:
        typer.echo(f"{row.name:<11} {row.state:<9} {row.detail}")


@services_app.command("stop")
def services_stop() -> None:
    """Stop every supervised service and supervisord."""
    from tooling import supervise

    typer.echo("stopped" if supervise.stop(_settings()) else "no services were running")


if __name__ == "__main__":
    app()
