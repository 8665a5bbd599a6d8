"""``caliber simulate``: stream synthetic model traffic into Kafka."""

from __future__ import annotations

import time

import typer

from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.runtime.kafka import make_producer
from shared.runtime.observability import configure_logging
from shared.settings import Settings
from simulator.generator import ModelSpec, generate
from simulator.producer import produce

app = typer.Typer(no_args_is_help=True, help="Synthetic inference events and labels.")


@app.command("run")
def run(
    events: int = typer.Option(10_000, min=1, help="events per model version"),
    models: int = typer.Option(2, min=1, help="model versions (v1, v2, …)"),
    overconfidence: list[float] = typer.Option(
        [0.0, 0.15], help="per version: P(correct|c) = c − this (repeat the option per version)"
    ),
    rate: float = typer.Option(
        0.0, min=0, help="events/s over all versions; 0 = as fast as possible"
    ),
    form: str = typer.Option("single", help="single | batch messages"),
    numeric: int = typer.Option(4, min=0, help="numeric features"),
    categorical: int = typer.Option(1, min=0, help="categorical features"),
    late_share: float = typer.Option(0.1, min=0, max=1, help="share of labels delivered late"),
    label_share: float = typer.Option(0.9, min=0, max=1, help="share of events ever labelled"),
    model_name: str = typer.Option("classifier", help="model name"),
    tenant: str = typer.Option("default", help="tenant"),
    seed: int = typer.Option(7, help="random seed (same seed, same events)"),
) -> None:
    """Generate and send events for each model version; print what was sent."""
    settings = Settings()
    configure_logging(settings.log_level)
    start_ms = int(time.time() * 1000) - events * 1000 // max(int(rate or 1000), 1)
    generated = []
    for i in range(models):
        spec = ModelSpec(
            name=model_name,
            version=f"v{i + 1}",
            tenant=tenant,
            overconfidence=overconfidence[i] if i < len(overconfidence) else 0.0,
            numeric_features=numeric,
            categorical_features=categorical,
            label_share=label_share,
            late_label_share=late_share,
        )
        generated.append(generate(spec, events, seed + i, start_ms, rate_per_s=rate or 1000.0))
    sent = produce(
        make_producer(settings),
        Topics.for_namespace(settings.topic_namespace),
        AvroCodec(),
        generated,
        form=form,
        rate=rate or None,
    )
    for gen in generated:
        typer.echo(
            f"{gen.predictions.key:<32} events={len(gen.predictions):>7} "
            f"labelled={int(gen.labeled.sum()):>7} late={int(gen.late.sum()):>6} "
            f"accuracy={gen.correct.mean():.3f} expected_ece={gen.expected_ece:.4f}"
        )
    rate_done = sent.predictions / sent.seconds if sent.seconds else 0.0
    typer.echo(
        f"sent {sent.predictions} predictions and {sent.labels} labels in {sent.messages} "
        f"messages, {sent.seconds:.1f} s ({rate_done:,.0f} events/s)"
    )


@app.command("real-models")
def real_models(
    api_key: str = typer.Option(..., envvar="CALIBER_API_KEY", help="an admin key of the tenant"),
    gateway: str = typer.Option("http://127.0.0.1:8000", help="the gateway's base URL"),
    dataset: list[str] = typer.Option(
        ["digits", "breast-cancer"], help="scikit-learn data sets (repeat the option)"
    ),
    seed: int = typer.Option(0, help="train/test split seed"),
) -> None:
    """Train logistic regression and Gaussian naive Bayes on data sets shipped with
    scikit-learn, register them as two versions of one model, stream their held-out outputs."""
    from simulator.gateway_client import GatewayClient
    from simulator.real_models import register_and_stream

    settings = Settings()
    configure_logging(settings.log_level)
    with GatewayClient(gateway, api_key) as registry:
        streamed = register_and_stream(settings, registry, dataset, seed=seed)
    for s in streamed:
        typer.echo(
            f"{s.key:<32} id={s.model_version_id:<5} events={s.events:>5} "
            f"accuracy={s.accuracy:.3f} ece_of_outputs={s.expected_ece:.4f}"
        )


@app.command("scenario")
def run_scenario(
    names: list[str] = typer.Argument(..., help="seed | drift | label-delay | tenants"),
    gateway: str = typer.Option("http://127.0.0.1:8000", help="the gateway's base URL"),
    timeout: float = typer.Option(240, min=1, help="longest wait for Caliber to count it all"),
) -> None:
    """Send named scenarios through the running services (an admin key per tenant is
    created) and print what their events say beside what Caliber measured."""
    from contextlib import ExitStack

    from simulator.demo import create_keys
    from simulator.gateway_client import GatewayClient
    from simulator.scenario_runner import measure, send, table
    from simulator.scenarios import scenario

    settings = Settings()
    configure_logging(settings.log_level)
    try:
        chosen = [scenario(n) for n in names]
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    keys = create_keys(settings, sorted({t for s in chosen for t in s.tenants}))
    with ExitStack() as stack:
        clients = {t: stack.enter_context(GatewayClient(gateway, k)) for t, k in keys.items()}
        outcomes = measure(
            clients.__getitem__, send(settings, clients.__getitem__, chosen), timeout
        )
    for line in table(outcomes):
        typer.echo(line)
