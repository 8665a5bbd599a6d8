"""Every current schema reads data written with every released version of it."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.utils import generate_many

from shared.contracts.codec import SCHEMA_DIR, SCHEMA_ORDER

RELEASED = SCHEMA_DIR / "released"


def _named(upto: str) -> dict[str, Any]:
    """Named types of the current schemas defined before ``upto`` (references resolve)."""
    named: dict[str, Any] = {}
    for name in SCHEMA_ORDER:
        if name == upto:
            break
        parse_schema(json.loads((SCHEMA_DIR / f"{name}.avsc").read_text()), named_schemas=named)
    return named


def incompatibilities(old: dict[str, Any], new: dict[str, Any], name: str) -> list[str]:
    """Why records written with ``old`` cannot be read with ``new`` (empty when they can)."""
    writer = parse_schema(old, named_schemas=_named(name))
    try:
        reader = parse_schema(new, named_schemas=_named(name))
    except Exception as exc:
        return [f"current schema does not parse: {exc}"]
    problems = []
    for record in generate_many(writer, 50):
        buf = io.BytesIO()
        schemaless_writer(buf, writer, record)
        buf.seek(0)
        try:
            schemaless_reader(buf, writer, reader)
        except Exception as exc:
            problems.append(f"{type(exc).__name__}: {exc}")
            break
    return problems


def _released() -> list[tuple[str, Path]]:
    return [
        (folder.name, path)
        for folder in sorted(RELEASED.iterdir())
        for path in sorted(folder.glob("*.avsc"))
    ]


def test_every_record_type_has_a_released_version() -> None:
    assert {name for name, _ in _released()} == set(SCHEMA_ORDER)


@pytest.mark.parametrize(("name", "path"), _released(), ids=lambda v: str(v))
def test_current_schema_reads_released_version(name: str, path: Path) -> None:
    old = json.loads(path.read_text())
    new = json.loads((SCHEMA_DIR / f"{name}.avsc").read_text())
    assert incompatibilities(old, new, name) == []


def test_the_check_catches_an_incompatible_change() -> None:
    old = json.loads((SCHEMA_DIR / "Alert.avsc").read_text())
    new = copy.deepcopy(old)
    # A new required field without a default breaks every old record.
    new["fields"].append({"name": "owner", "type": "string"})
    assert incompatibilities(old, new, "Alert")
    # The same field with a default is a compatible change.
    new["fields"][-1]["default"] = "nobody"
    assert incompatibilities(old, new, "Alert") == []
