"""`caliber stack reset` deletes the stack's data only after a confirmation (or --yes)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from shared.settings import Settings
from tooling.cli import app
from tooling.stack.manager import data_folders

PORTS = {"CALIBER_KAFKA_PORT": "1", "CALIBER_REDIS_PORT": "3", "CALIBER_POSTGRES_PORT": "5"}


def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    home = tmp_path / "home"
    for name in ("CALIBER_KAFKA_BOOTSTRAP", "CALIBER_REDIS_URL", "CALIBER_POSTGRES_DSN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CALIBER_STACK_HOME", str(home))
    for k, v in PORTS.items():
        monkeypatch.setenv(k, v)
    settings = Settings()
    folders = data_folders(settings)
    # Only folders inside the test's home are made (PostgreSQL's may live elsewhere).
    made = [f for f in folders if home in f.parents]
    for folder in made:
        folder.mkdir(parents=True)
        (folder / "data").write_text("x")
    (home / "logs").mkdir()
    return made


def test_the_data_folders_are_kafka_redis_postgres_and_faust(tmp_path: Path) -> None:
    home = tmp_path / "h"
    folders = data_folders(Settings(stack_home=home, postgres_port=5))
    assert {home / "kafka" / "data", home / "redis", home / "faust"} <= set(folders)
    assert len(folders) == 4  # and PostgreSQL's root, wherever the postgres user can reach
    assert not any(f.is_relative_to("/var/tmp") for f in folders)


def test_reset_without_confirmation_deletes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = _home(tmp_path, monkeypatch)
    result = CliRunner().invoke(app, ["stack", "reset"], input="n\n")
    assert result.exit_code == 1
    assert "delete them?" in result.output
    assert all(f.exists() for f in made)


def test_reset_with_yes_deletes_the_data_and_keeps_the_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = _home(tmp_path, monkeypatch)
    result = CliRunner().invoke(app, ["stack", "reset", "--yes"])
    assert result.exit_code == 0, result.output
    assert not any(f.exists() for f in made)
    assert (tmp_path / "home" / "logs").is_dir()
