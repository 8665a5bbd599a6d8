"""docker-compose.yml cannot run here (no Docker engine), so its shape is checked instead."""

from __future__ import annotations

from pathlib import Path

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
