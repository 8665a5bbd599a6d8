"""The README's configuration table lists every setting the code reads, and nothing else."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from pydantic_settings import BaseSettings

from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _settings_classes() -> list[type[BaseSettings]]:
    classes: list[type[BaseSettings]] = [Settings]
    for path in sorted((ROOT / "services").glob("*/settings.py")):
        module = importlib.import_module(f"services.{path.parent.name}.settings")
        classes += [
            v
            for v in vars(module).values()
            if isinstance(v, type) and issubclass(v, Settings) and v is not Settings
        ]
    return classes


def test_configuration_table_matches_the_settings() -> None:
    readme = (ROOT / "README.md").read_text()
    table = set(re.findall(r"^\| `(CALIBER_[A-Z0-9_]+)` \|", readme, re.M))
    fields = {f"CALIBER_{name.upper()}" for cls in _settings_classes() for name in cls.model_fields}
    assert fields - table == set(), "settings missing from the README table"
    assert table - fields == set(), "README documents settings the code does not read"


def test_the_two_commands_are_make_targets() -> None:
    readme = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    for target in ("demo", "test"):
        assert f"make {target}" in readme
        assert re.search(rf"^{target}:", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()
