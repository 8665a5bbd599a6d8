"""``caliber rebuild postgres|redis``: rebuild a lost or stale store from the Kafka log."""

from __future__ import annotations

import asyncio

import typer

from tooling.log_reader import Progress

app = typer.Typer(
    no_args_is_help=True,
    help="Rebuild PostgreSQL or Redis from the Kafka topics (stop the services first).",
)


def _progress(store: str) -> object:
    def report(progress: Progress, events: int) -> None:
        rate = events / progress.seconds if progress.seconds > 0 else 0.0
        typer.echo(
            f"{store}: {progress.share:6.1%} of the log, {progress.records:,} records, "
            f"{events:,} events, {rate:,.0f} events/s"
        )

    return report


def _refuse_beside_writers(settings: object, store: str) -> None:
    from shared.settings import Settings
    from tooling.rebuild import running_writers

    assert isinstance(settings, Settings)
    busy = running_writers(settings, store)
    if busy:
        typer.echo(
            f"error: {', '.join(busy)} still run and write {store}; stop them first "
            "(caliber services stop)",
            err=True,
        )
        raise typer.Exit(1)


def _finish(result: object) -> None:
    from tooling.rebuild import Rebuilt

    assert isinstance(result, Rebuilt)
    typer.echo(
        f"{result.store} rebuilt from {result.records:,} records ({result.events:,} events) in "
        f"{result.seconds:.1f} s, {result.rate:,.0f} events/s; stack generation now "
        f"{result.generation}"
    )
    for name, n in result.counts.items():
        typer.echo(f"  {name:<26} {n:,}")
    if result.truncated:
        typer.echo(
            f"warning: retention already removed the start of {len(result.truncated)} "
            f"partitions ({', '.join(result.truncated[:4])}…): what they held is not rebuilt"
        )


@app.command("postgres")
def postgres() -> None:
    """Re-record the registry, predictions, labels, reviews and alerts from the log."""
    from services.recorder.settings import RecorderSettings
    from shared.runtime.observability import configure_logging
    from tooling.rebuild import rebuild_postgres

    settings = RecorderSettings()
    configure_logging("WARNING")
    _refuse_beside_writers(settings, "postgres")
    typer.echo(
        "note: API keys, tenants' names and uploaded drift references are not on the log; "
        "they come back only from a PostgreSQL backup (create new keys: caliber keys create)"
    )
    _finish(asyncio.run(rebuild_postgres(settings, _progress("postgres"))))  # type: ignore[arg-type]


@app.command("redis")
def redis() -> None:
    """Rebuild dedupe sets, metric windows, offset fences, drift and alert state."""
    from services.drift.settings import DriftSettings
    from shared.runtime.observability import configure_logging
    from tooling.rebuild import rebuild_redis

    settings = DriftSettings()
    configure_logging("WARNING")
    _refuse_beside_writers(settings, "redis")
    _finish(asyncio.run(rebuild_redis(settings, _progress("redis"))))  # type: ignore[arg-type]
