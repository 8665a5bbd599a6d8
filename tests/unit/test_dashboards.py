"""Dashboards and the scrape configuration against what the services really export.

The exported names come from each service's metrics class, instantiated on a fresh
registry, so a renamed or removed metric fails here instead of leaving an empty panel.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from tooling.benchmarking import REPO_ROOT

DASHBOARDS = sorted((REPO_ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
SCRAPE_CONFIG = REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml"
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
}
PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
}


def service_metric_classes() -> dict[str, list[type]]:
    """``services/<name>/metrics.py`` → the ``*Metrics`` classes it defines."""
    out: dict[str, list[type]] = {}
    for path in sorted((REPO_ROOT / "services").glob("*/metrics.py")):
        module = importlib.import_module(f"services.{path.parent.name}.metrics")
        out[path.parent.name] = [
            cls
            for _, cls in inspect.getmembers(module, inspect.isclass)
            if cls.__module__ == module.__name__ and cls.__name__.endswith("Metrics")
        ]
    return out


def exported_names() -> set[str]:
    """Every sample name any service can export, histogram and counter suffixes included."""
    names: set[str] = set()
    for classes in service_metric_classes().values():
        for cls in classes:
            registry = CollectorRegistry()
            cls(registry)
            for family in registry.collect():
                names.update(s.name for s in family.samples)
                # Labelled families have no samples until first used: derive their names.
                names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, label matchers,
    grouping labels, durations and strings left out)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\$\{?\w+\}?", " ", s)
    found = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", s):
        if m.group(2) is None and m.group(1).lower() not in PROMQL_WORDS:
            found.add(m.group(1))
    return found


def queries(dashboard: dict[str, object]) -> list[str]:
    out = []
    for p in dashboard.get("panels", []):  # type: ignore[attr-defined]
        out += [t["expr"] for t in p.get("targets", []) if t.get("expr")]
    for var in dashboard.get("templating", {}).get("list", []):  # type: ignore[attr-defined]
        q = var.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        if var.get("type") == "query" and q:
            # label_values(metric, label): the metric is the first argument.
            m = re.fullmatch(r"\s*label_values\(\s*(.+?)\s*,\s*\w+\s*\)\s*", q)
            out.append(m.group(1) if m else q)
    return out


def all_queries() -> dict[str, list[str]]:
    return {p.name: queries(json.loads(p.read_text())) for p in DASHBOARDS}


def test_expression_parser_finds_only_metric_names() -> None:
    expr = (
        'histogram_quantile(0.9, sum by (le, model) (rate(caliber_x_bucket{model=~"$model",'
        ' window="1h"}[5m]))) / on (model) group_left 1.1 * caliber_y offset 5m'
    )
    assert metric_names(expr) == {"caliber_x_bucket", "caliber_y"}
    assert metric_names("1.5 * max(caliber_ece_slo)") == {"caliber_ece_slo"}


def test_exported_names_come_from_every_service() -> None:
    classes = service_metric_classes()
    assert {"ingest", "policy", "aggregator", "recorder", "gateway"} <= set(classes)
    assert all(classes[s] for s in ("ingest", "policy", "aggregator", "recorder", "gateway"))
    names = exported_names()
    # Labelled and unlabelled histograms alike, shared pipeline metrics, counters' _total.
    assert {
        "caliber_gateway_request_seconds_bucket",
        "caliber_label_delay_seconds_count",
        "caliber_aggregator_batch_seconds_sum",
        "caliber_recorder_consumer_lag_messages",
        "caliber_ingest_dead_letters_total",
    } <= names
    assert "caliber_ingest_dead_letters" not in names


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_dashboard_query_names_exported_metrics(path: Path) -> None:
    exported = exported_names()
    exprs = queries(json.loads(path.read_text()))
    assert exprs, f"{path.name} has no queries"
    for expr in exprs:
        names = metric_names(expr)
        assert names, f"{path.name}: {expr!r} selects no metric"
        missing = names - exported
        assert not missing, f"{path.name}: {expr!r} names {sorted(missing)}, not exported"


@pytest.mark.parametrize(
    ("what", "needs"),
    [
        ("reliability per model version", {"caliber_reliability_accuracy"}),
        ("reliability per model version", {"caliber_reliability_confidence"}),
        ("ECE against its SLO", {"caliber_ece", "caliber_ece_slo"}),
        ("ECE control chart", {"caliber_ece_control_limit"}),
        ("Brier against its baseline", {"caliber_brier", "caliber_brier_baseline"}),
        ("risk–coverage", {"caliber_selective_risk"}),
        ("AURC", {"caliber_aurc"}),
        ("review queue depth", {"caliber_review_queue_depth"}),
        ("review rate", {"caliber_review_rate"}),
        ("reviews withheld per second", {"caliber_policy_decisions_total"}),
        ("throughput", {"caliber_ingest_events_total", "caliber_aggregator_events_total"}),
        ("consumer lag", {"caliber_aggregator_consumer_lag_messages"}),
        ("dead letters", {"caliber_ingest_dead_letters_total"}),
        ("labels pending", {"caliber_labels_pending"}),
        ("label delay", {"caliber_label_delay_seconds_bucket"}),
    ],
)
def test_dashboards_cover(what: str, needs: set[str]) -> None:
    panels = [
        (p["title"], {n for t in p.get("targets", []) for n in metric_names(t.get("expr", ""))})
        for path in DASHBOARDS
        for p in json.loads(path.read_text())["panels"]
    ]
    assert any(needs <= names for _, names in panels), f"no panel shows {what} ({needs})"


def test_reliability_panel_repeats_per_model_version() -> None:
    panels = json.loads((REPO_ROOT / "deploy/grafana/dashboards/calibration.json").read_text())
    reliability = [p for p in panels["panels"] if p["title"].startswith("Reliability")]
    assert reliability and reliability[0].get("repeat") == "model"


def test_prometheus_scrapes_every_service() -> None:
    from services.aggregator.settings import AggregatorSettings
    from services.gateway.settings import GatewaySettings
    from services.ingest.settings import IngestSettings
    from services.policy.settings import PolicySettings
    from services.recorder.settings import RecorderSettings

    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = {name: job["static_configs"][0]["targets"] for name, job in jobs.items()}
    expected = {
        "ingest": IngestSettings.model_fields["metrics_port"].default,
        "policy": PolicySettings.model_fields["metrics_port"].default,
        "aggregator": AggregatorSettings.model_fields["metrics_port"].default,
        "recorder": RecorderSettings.model_fields["metrics_port"].default,
        "gateway": GatewaySettings.model_fields["gateway_port"].default,
        "drift": 9104,
    }
    for service, port in expected.items():
        assert targets.get(service) == [f"127.0.0.1:{port}"], (service, targets.get(service))
    # Every service that has a metrics class has a job (the drift worker included, once
    # it lands).
    assert set(service_metric_classes()) <= set(jobs)
    gateway = jobs["gateway"]
    assert gateway.get("metrics_path", "/metrics") == "/metrics"
    assert gateway["authorization"]["type"] == "Bearer"  # /metrics needs an API key


def test_readme_lists_the_scraped_ports() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    for job in config["scrape_configs"]:
        if job["job_name"] == "drift" and "| drift |" not in readme:
            continue  # the drift worker documents its port when it lands
        port = job["static_configs"][0]["targets"][0].rsplit(":", 1)[1]
        row = next(
            line for line in readme.splitlines() if line.startswith(f"| {job['job_name']} |")
        )
        assert f":{port}" in row, (job["job_name"], row)
