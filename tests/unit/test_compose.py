"""docker-compose.yml cannot run here (no Docker engine), so its shape is checked instead."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _service_modules() -> set[str]:
    return {
        p.name for p in (ROOT / "services").iterdir() if p.is_dir() and (p / "__main__.py").exists()
    }


def test_every_service_runs_in_compose() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    commands = {
        name: " ".join(spec.get("command") or []) for name, spec in compose["services"].items()
    }
    services = _service_modules()
    assert services, "no runnable service found under services/"
    for service in services:
        assert any(f"services.{service}" in cmd for cmd in commands.values()), (
            f"services/{service} has no container in docker-compose.yml"
        )


def test_compose_has_the_stack() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert {"kafka", "redis", "postgres"} <= set(compose["services"])


COMPOSE = ROOT / "docker-compose.yml"
README = ROOT / "README.md"


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def _mounts(spec: dict[str, Any]) -> list[tuple[Path, str]]:
    """(host path, container path) of every bind mount of a service."""
    out = []
    for volume in spec.get("volumes") or []:
        host, container = str(volume).split(":")[:2]
        if host.startswith("."):
            out.append(((ROOT / host).resolve(), container))
    return out


def _metrics_ports() -> dict[str, int]:
    """service → metrics port, from the README's Services table."""
    section = README.read_text().split("## Services", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(
        r"^\| (\w+) \| `python -m services\.\w+` \|.*\| :(\d+)[^|]* \|$", section, re.M
    )
    return {name: int(port) for name, port in rows}


def test_every_mounted_file_and_build_context_exists() -> None:
    checked = 0
    for name, spec in _compose()["services"].items():
        if spec.get("build"):
            assert (ROOT / spec["build"] / "Dockerfile").is_file(), name
        for host, _ in _mounts(spec):
            assert host.exists(), f"{name} mounts {host}, which does not exist"
            checked += 1
    assert checked >= 5  # prometheus' config and rules, grafana's three folders


def test_ports_and_dependencies_are_well_formed() -> None:
    services = _compose()["services"]
    published: list[int] = []
    for name, spec in services.items():
        for port in spec.get("ports") or []:
            host, container = str(port).split(":")
            assert host.isdigit() and container.isdigit(), (name, port)
            published.append(int(host))
        depends = spec.get("depends_on") or []
        for dep in depends if isinstance(depends, list) else depends.keys():
            assert dep in services, f"{name} depends on {dep}, which compose does not define"
    assert len(published) == len(set(published)), "two services publish one host port"
    assert {8000, 9090, 3000} <= set(published)


def _prometheus_config(services: dict[str, Any]) -> tuple[dict[str, Any], Path]:
    mounts = dict((c, h) for h, c in _mounts(services["prometheus"]))
    config_path = mounts["/etc/prometheus/prometheus.yml"]
    command = " ".join(services["prometheus"].get("command") or [])
    assert "--config.file=/etc/prometheus/prometheus.yml" in command
    for rules in yaml.safe_load(config_path.read_text())["rule_files"]:
        assert f"/etc/prometheus/{rules}" in mounts, f"rule file {rules} is not mounted"
    return yaml.safe_load(config_path.read_text()), config_path


def test_prometheus_scrapes_every_service_metrics_port() -> None:
    services = _compose()["services"]
    config, _ = _prometheus_config(services)
    targets = {
        t
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for t in static["targets"]
    }
    ports = _metrics_ports()
    assert set(ports) == _service_modules(), "README's Services table misses a service"
    for service, port in ports.items():
        assert f"{service}:{port}" in targets, f"Prometheus does not scrape {service}:{port}"
        command = " ".join(services[service]["command"])
        assert f"services.{service}" in command
    # Workers must listen beyond their container's loopback, the gateway must not want a key
    anchor = services["ingest"]["environment"]
    assert anchor["CALIBER_METRICS_HOST"] == "0.0.0.0"
    assert services["gateway"]["environment"]["CALIBER_GATEWAY_OPEN_METRICS"] == "true"


def test_compose_scrape_config_mirrors_the_shipped_one() -> None:
    """Same jobs, ports, paths and rules as deploy/prometheus/prometheus.yml; only hosts differ."""
    compose_config, _ = _prometheus_config(_compose()["services"])
    shipped = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())

    def shape(config: dict[str, Any]) -> dict[str, Any]:
        return {
            job["job_name"]: (
                job.get("metrics_path", "/metrics"),
                sorted(t.split(":")[1] for s in job["static_configs"] for t in s["targets"]),
            )
            for job in config["scrape_configs"]
        }

    assert shape(compose_config) == shape(shipped)
    assert compose_config["rule_files"] == shipped["rule_files"]
    assert compose_config["global"] == shipped["global"]


def test_grafana_provisions_the_datasource_and_dashboards() -> None:
    services = _compose()["services"]
    mounts = {c: h for h, c in _mounts(services["grafana"])}
    datasources = mounts["/etc/grafana/provisioning/datasources"]
    (source,) = yaml.safe_load(next(datasources.glob("*.yml")).read_text())["datasources"]
    shipped = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]
    assert {k: v for k, v in source.items() if k != "url"} == {
        k: v for k, v in shipped.items() if k != "url"
    }
    assert source["url"] == "http://prometheus:9090"
    providers = mounts["/etc/grafana/provisioning/dashboards"]
    (provider,) = yaml.safe_load(next(providers.glob("*.yml")).read_text())["providers"]
    dashboards = mounts[provider["options"]["path"]]
    files = sorted(p.name for p in dashboards.glob("*.json"))
    assert files == ["calibration.json", "pipeline.json", "selective.json"]
    for path in dashboards.glob("*.json"):  # every panel reads the provisioned datasource
        uids = set(re.findall(r'"uid":\s*"([^"]+)"', path.read_text())) - {""}
        datasource_uids = {u for u in uids if "prometheus" in u}
        assert datasource_uids == {source["uid"]}, (path.name, datasource_uids)
