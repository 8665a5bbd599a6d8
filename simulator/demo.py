"""``caliber demo run``: the whole product on the local stack, in the order a new user meets it.

It brings the stack up, starts every service under supervisord, creates an admin key, sends
the ``seed`` and ``drift`` scenarios and the real scikit-learn models, a few broken messages
for the dead-letter topic, waits until Caliber has counted everything, and prints per model
version what the generated events say against what Caliber measured. Running it again
sends the same events (same ids), which ingest drops as duplicates, so the figures stay.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.error
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace

import typer

from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.metrics.selective import ConfidenceHistogram
from shared.runtime.kafka import make_producer
from shared.runtime.observability import configure_logging
from shared.settings import WORKER_METRICS_PORTS, GatewayAddress, Settings
from simulator.faults import FAULTS
from simulator.gateway_client import GatewayClient, wait_ready
from simulator.producer import event_records
from simulator.scenario_runner import likely_causes, measure, send, table
from simulator.scenarios import SCENARIOS, Planned, Scenario, VersionPlan, plan, scenario
from tooling import supervise
from tooling.benchmarking import scrape
from tooling.stack import stack_up

app = typer.Typer(no_args_is_help=True, help="The end-to-end demo on the local stack.")


@contextmanager
def step(title: str) -> Iterator[None]:
    started = time.monotonic()
    typer.echo(f"== {title} …", nl=False)
    yield
    typer.echo(f" {time.monotonic() - started:.1f} s")


def _dead_letter_counters(port: int) -> dict[str, float]:
    """ingest's dead letters so far by code, from its /metrics (none where it serves none)."""
    if port == 0:
        return {}
    try:
        text = scrape(port)
    except (urllib.error.URLError, OSError):
        return {}
    out: dict[str, float] = {}
    for m in re.finditer(r"^caliber_ingest_dead_letters_total\{(.*?)\} ([0-9.e+]+)$", text, re.M):
        out[m.group(1)] = float(m.group(2))
    return out


def create_keys(settings: Settings, tenants: list[str]) -> dict[str, str]:
    """A new admin key per tenant (the tenant is created when missing), made the way an
    operator makes one: ``caliber keys create``, which prints the key once."""
    keys = {}
    for tenant in tenants:
        done = subprocess.run(
            [sys.executable, "-m", "tooling.cli", "keys", "create", "--tenant", tenant],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "CALIBER_POSTGRES_DSN": settings.postgres_url},
        )
        keys[tenant] = done.stdout.strip().splitlines()[-1]
    return keys


def _ingest_metrics_port(settings: Settings) -> int:
    """The ingest worker's /metrics port: ``CALIBER_METRICS_PORT`` when set, else its default."""
    if "metrics_port" in settings.model_fields_set:
        return settings.metrics_port
    return WORKER_METRICS_PORTS["ingest"]


def _send_faults(settings: Settings, n: int) -> None:
    """``n`` broken messages, every kind of fault in turn, for the dead-letter topic."""
    if n == 0:
        return
    codec = AvroCodec()
    producer = make_producer(settings)
    topics = Topics.for_namespace(settings.topic_namespace)
    base = plan(scenario("seed"), int(time.time() * 1000))[0].generated.predictions
    kinds = list(FAULTS)
    for i, rec in enumerate(event_records(base.take(range(n)))):
        fresh = {**rec, "event_id": rec["event_id"][:-4] + f"{i:04x}"[-4:]}
        producer.produce(topics.inference_raw, FAULTS[kinds[i % len(kinds)]](codec, fresh))
    producer.flush(30)


def _send_real_models(
    settings: Settings, client: GatewayClient
) -> list[tuple[Scenario, Planned, int]]:
    from simulator.real_models import register_and_stream

    real = Scenario("real-model", "scikit-learn models on held-out data", (), 0, 0)
    sent = []
    for s in register_and_stream(settings, client, ["digits", "breast-cancer"]):
        g = s.generated
        p = Planned(VersionPlan(g.spec), g)
        # Caliber resolves confidence to 0.001 for risk–coverage; real confidences lie
        # between those steps, so the AURC to expect is that curve's.
        p.expected = replace(
            p.expected,
            aurc=ConfidenceHistogram.from_arrays(g.predictions.confidences, g.correct).curve().aurc,
        )
        sent.append((real, p, s.model_version_id))
    return sent


@app.command("run")
def run(
    scenarios: list[str] = typer.Option(
        ["seed", "drift"], "--scenario", help=f"scenarios to send: {', '.join(SCENARIOS)}"
    ),
    real_models: bool = typer.Option(True, help="also stream the real scikit-learn models"),
    faults: int = typer.Option(40, min=0, help="broken messages to show dead-lettering"),
    timeout: float = typer.Option(240, min=10, help="longest wait for Caliber to count it all"),
) -> None:
    """Bring everything up, send the scenarios and real models, print expected vs measured."""
    settings = Settings()
    gateway = GatewayAddress()
    configure_logging("WARNING")
    chosen = [scenario(n) for n in scenarios]
    base_url = f"http://{gateway.gateway_host}:{gateway.gateway_port}"
    with step("local stack (Kafka, Redis, PostgreSQL)"):
        up = stack_up(settings)
    for line in up.identity_problems:
        typer.echo(f"   mismatch: {line}", err=True)
    if up.identity_problems:
        raise typer.Exit(2)
    with step(f"services under supervisord (logs in {settings.logs_dir})"):
        started = supervise.start(settings)
        supervise.wait_running(settings, timeout=90)
        wait_ready(base_url, 90)
    typer.echo("   running: " + ", ".join(started))
    tenants = sorted({"default", *(t for s in chosen for t in s.tenants)})
    keys = create_keys(settings, tenants)
    ingest_port = _ingest_metrics_port(settings)
    before = _dead_letter_counters(ingest_port)
    with ExitStack() as stack:
        clients = {t: stack.enter_context(GatewayClient(base_url, k)) for t, k in keys.items()}
        with step(f"sending scenarios {', '.join(scenarios) or '(none)'}"):
            sent = send(settings, clients.__getitem__, chosen)
            _send_faults(settings, faults)
            if real_models:
                sent += _send_real_models(settings, clients["default"])
        typer.echo("== waiting for Caliber to count every event and label")
        with typer.progressbar(length=len(sent), label="   versions counted") as bar:
            outcomes = measure(clients.__getitem__, sent, timeout, lambda _: bar.update(1))
    typer.echo("== per model version: expected (from the generated events) / measured by Caliber")
    for line in table(outcomes):
        typer.echo("   " + line)
    for cause in likely_causes(settings, sent, outcomes):
        typer.echo(f"   likely cause: {cause}")
    dead = {k: v - before.get(k, 0.0) for k, v in _dead_letter_counters(ingest_port).items()}
    typer.echo(
        "== dead letters by code: "
        + ", ".join(
            f"{k.split('=')[1].strip(chr(34))} {int(v)}" for k, v in sorted(dead.items()) if v
        )
    )
    typer.echo(
        "== where to look\n"
        f"   admin key: {keys['default']}   (tenant default; keep it, it is shown once)\n"
        f"   console:   {base_url}/console\n"
        f"   API docs:  {base_url}/docs\n"
        f"   metrics:   http://127.0.0.1:{ingest_port}/metrics (ingest; the other workers on the "
        f"next ports), {base_url}/metrics\n"
        f"   logs:      {settings.logs_dir}\n"
        "   status:    make status\n"
        "   stop:      make down (every service and the local stack)"
    )
