"""``caliber demo run``: the services on the local stack, simulated traffic, a summary."""

from __future__ import annotations

import re
import time
import urllib.error

import typer

from shared import supervise
from shared.benchmarking import scrape
from shared.codec import AvroCodec
from shared.kafka import make_producer
from shared.observability import configure_logging
from shared.settings import Settings
from shared.stack import stack_up
from shared.topics import Topics
from simulator.faults import FAULTS
from simulator.generator import ModelSpec, generate
from simulator.producer import event_records, produce

app = typer.Typer(no_args_is_help=True, help="The end-to-end demo on the local stack.")
INGEST_METRICS_PORT = 9101


def _ingest_counters() -> dict[str, float]:
    try:
        text = scrape(INGEST_METRICS_PORT)
    except (urllib.error.URLError, OSError):
        return {}
    out: dict[str, float] = {}
    for m in re.finditer(
        r"^caliber_ingest_(events|dead_letters)_total\{(.*?)\} ([0-9.e+]+)$", text, re.M
    ):
        out[f"{m.group(1)}|{m.group(2)}"] = float(m.group(3))
    return out


def _delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0)}


@app.command("run")
def run(
    events: int = typer.Option(5_000, min=100, help="events per model version"),
    rate: float = typer.Option(2_000, min=0, help="events/s over all versions (0 = unpaced)"),
    faults: int = typer.Option(40, min=0, help="broken messages to show dead-lettering"),
) -> None:
    """Bring everything up, send two model versions' traffic, print what passed through."""
    settings = Settings()
    configure_logging("WARNING")
    typer.echo("== local stack")
    up = stack_up(settings)
    typer.echo("   " + ", ".join(f"{k} {v}" for k, v in up.actions.items()))
    typer.echo(f"== services (supervisord; logs in {settings.logs_dir})")
    started = supervise.start(settings)
    supervise.wait_running(settings, timeout=90)
    typer.echo("   running: " + ", ".join(started))
    _wait_metrics()
    before = _ingest_counters()
    topics = Topics.for_namespace(settings.topic_namespace)
    codec = AvroCodec()
    now = int(time.time() * 1000)
    specs = [
        ModelSpec(
            name="triage",
            version="v1",
            overconfidence=0.0,
            numeric_features=4,
            categorical_features=1,
            late_label_share=0.1,
        ),
        ModelSpec(
            name="triage",
            version="v2",
            overconfidence=0.15,
            numeric_features=4,
            categorical_features=1,
            late_label_share=0.1,
        ),
    ]
    gens = [
        generate(
            s,
            events,
            seed=i + int(time.time()),
            start_ms=now - events * 1000 // max(int(rate or 1000), 1),
        )
        for i, s in enumerate(specs)
    ]
    typer.echo(f"== sending {events} events per version at {rate or 'full'} events/s")
    producer = make_producer(settings)
    with typer.progressbar(length=len(gens), label="   producing") as bar:
        for gen in gens:
            produce(producer, topics, codec, [gen], rate=(rate / len(gens)) or None)
            bar.update(1)
    broken = list(event_records(gens[0].predictions.take(range(faults))))
    kinds = list(FAULTS)
    for i, rec in enumerate(broken):
        producer.produce(
            topics.inference_raw,
            FAULTS[kinds[i % len(kinds)]](
                codec, {**rec, "event_id": rec["event_id"][:-4] + "beef"}
            ),
        )
    producer.flush(30)
    expected = sum(len(g.predictions) for g in gens)
    deadline = time.monotonic() + 120
    delta: dict[str, float] = {}
    while time.monotonic() < deadline:
        delta = _delta(before, _ingest_counters())
        if (
            delta.get('events|kind="prediction",outcome="accepted"', 0) >= expected
            and sum(v for k, v in delta.items() if k.startswith("dead_letters")) >= faults
        ):
            break
        time.sleep(1)
    typer.echo("== what passed through ingest")
    for gen in gens:
        typer.echo(
            f"   {gen.predictions.key:<24} sent={len(gen.predictions):>6} "
            f"accuracy={gen.correct.mean():.3f} expected ECE={gen.expected_ece:.3f}"
        )
    for key, value in sorted(delta.items()):
        kind, labels = key.split("|", 1)
        typer.echo(f"   {kind:<13} {labels:<45} {int(value):>7}")
    typer.echo(
        "== where to look\n"
        f"   logs:    {settings.logs_dir}\n"
        f"   metrics: http://127.0.0.1:{INGEST_METRICS_PORT}/metrics (ingest)\n"
        "   status:  make status\n"
        "   stop:    make down"
    )


def _wait_metrics(timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            scrape(INGEST_METRICS_PORT)
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    raise RuntimeError(f"ingest metrics did not come up on port {INGEST_METRICS_PORT}")
