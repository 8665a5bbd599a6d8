"""Avro single-object encoding of the records a client sends, with the schemas it ships.

Framing (Avro specification, "Single object encoding")::

    C3 01 | 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema's
            parsing canonical form | Avro binary body

Caliber's ingest finds the writer schema by that fingerprint, so the schemas shipped in
``caliber_client/schemas/`` must be exactly Caliber's (a test compares them).
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

from fastavro import parse_schema, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

from caliber_client.errors import CaliberError

MAGIC = b"\xc3\x01"
SCHEMAS = ("InferenceEvent", "PredictionBatch", "Label", "LabelBatch")
"""Shipped record types; a file that defines a named type another uses comes first."""


def schema_text(name: str) -> str:
    """The shipped ``.avsc`` text of one record type."""
    return (resources.files("caliber_client") / "schemas" / f"{name}.avsc").read_text()


class Encoder:
    """Encodes client records; parses every shipped schema once."""

    def __init__(self) -> None:
        named: dict[str, Any] = {}
        self._schemas: dict[str, tuple[Any, bytes]] = {}
        for name in SCHEMAS:
            raw = json.loads(schema_text(name))
            parsed = parse_schema(raw, named_schemas=named)
            expanded = parse_schema(raw, named_schemas=dict(named), expand=True)
            canonical = to_parsing_canonical_form(expanded)
            self._schemas[name] = (parsed, bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO")))

    def fingerprint(self, name: str) -> bytes:
        return self._schemas[name][1]

    def encode(self, name: str, record: Mapping[str, Any]) -> bytes:
        """One message; :class:`CaliberError` when the record does not match its schema."""
        parsed, fp = self._schemas[name]
        buf = io.BytesIO()
        buf.write(MAGIC)
        buf.write(fp)
        try:
            schemaless_writer(buf, parsed, dict(record))
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            raise CaliberError(f"record does not match schema {name}: {exc}") from exc
        return buf.getvalue()
