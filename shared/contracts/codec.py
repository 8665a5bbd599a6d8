"""Avro single-object encoding for every Caliber topic.

Framing (Avro specification, "Single object encoding")::

    C3 01 | 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema's
            parsing canonical form | Avro binary body

so any Avro library, Java's generated classes included, decodes a message without a
schema registry. The codec knows every current schema in ``schemas/`` and every released
version in ``schemas/released/<Name>/<n>.avsc``; a message written with an older version is
resolved to the current reader schema of the same record type. Decoding never raises: bad
bytes come back as a :class:`~shared.contracts.errors.Fault` value so a worker can dead-letter them
and go on.

The batch records (:data:`COLUMNAR_TYPES`) are written by the compiled writer of
:mod:`shared.contracts.columnar` (same bytes as fastavro, numpy arrays taken as they are), and
``decode(..., columnar=True)`` reads them with numeric arrays as numpy arrays; every other
record, and the default ``decode``, goes through fastavro.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

from shared.contracts import columnar as fastpath
from shared.contracts.errors import ErrorCode, Fault

MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8
NAMESPACE = "io.caliber"
SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
# Files that define named types others refer to come first.
SCHEMA_ORDER = (
    "InferenceEvent",
    "PredictionBatch",
    "DecisionBatch",
    "Label",
    "LabelBatch",
    "Alert",
    "MetricSnapshot",
    "DeadLetter",
    "ModelVersion",
    "RouteEvent",
    "StackIdentity",
    "SegmentMap",
)

COLUMNAR_TYPES = ("PredictionBatch", "DecisionBatch", "LabelBatch")
"""Records whose numeric arrays the columnar reader and writer move as numpy arrays."""

Record = dict[str, Any]


class CodecError(Exception):
    """A record could not be encoded: it does not match its schema."""


@dataclass(frozen=True, slots=True)
class WriterSchema:
    """One version of one record type, as a writer used it."""

    name: str
    """Short record name, e.g. ``InferenceEvent``."""
    version: str
    """``current`` or the released version number."""
    parsed: Any
    fingerprint: bytes


@dataclass(frozen=True, slots=True)
class Decoded:
    name: str
    record: Record
    writer_version: str


def _fingerprint(expanded: Any) -> bytes:
    canonical = to_parsing_canonical_form(expanded)
    return bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))


def _parse_in_order(
    schemas: Iterable[tuple[str, Any]], named: dict[str, Any]
) -> list[tuple[str, Any, bytes]]:
    out = []
    for name, raw in schemas:
        parsed = parse_schema(raw, named_schemas=named)
        expanded = parse_schema(raw, named_schemas=dict(named), expand=True)
        out.append((name, parsed, _fingerprint(expanded)))
    return out


@dataclass(frozen=True, slots=True)
class _Columnar:
    """The compiled reader and writer of one current schema."""

    reader: fastpath.Reader
    writer: fastpath.Writer
    columns: fastpath.Convert
    """Takes a record fastavro decoded (an older writer version) to the columnar shape."""


class AvroCodec:
    """Encodes records with the current schemas and decodes any known writer version."""

    def __init__(
        self,
        schema_dir: Path = SCHEMA_DIR,
        extra_writers: Mapping[str, Iterable[Mapping[str, Any]]] | None = None,
    ) -> None:
        self._current: dict[str, WriterSchema] = {}
        self._by_fingerprint: dict[bytes, WriterSchema] = {}
        named: dict[str, Any] = {}
        raw_current = [(n, _load(schema_dir / f"{n}.avsc")) for n in SCHEMA_ORDER]
        for name, parsed, fp in _parse_in_order(raw_current, named):
            ws = WriterSchema(name, "current", parsed, fp)
            self._current[name] = ws
            self._by_fingerprint[fp] = ws
        released = _released(schema_dir)
        for name, extra in (extra_writers or {}).items():
            released.extend((name, f"extra{i}", dict(s)) for i, s in enumerate(extra))
        for name, version, raw in released:
            # Released versions resolve named types against a private copy so an older
            # definition never shadows the current one.
            (_, parsed, fp) = _parse_in_order([(name, raw)], dict(named))[0]
            self._by_fingerprint.setdefault(fp, WriterSchema(name, version, parsed, fp))
        self._columnar: dict[str, _Columnar] = {}
        for name in COLUMNAR_TYPES:
            compiled = _compile(self._current[name].parsed, named)
            if compiled is not None:
                self._columnar[name] = compiled

    @property
    def names(self) -> list[str]:
        return list(self._current)

    def schema(self, name: str) -> WriterSchema:
        try:
            return self._current[name]
        except KeyError:
            raise CodecError(f"unknown record type {name!r}; known: {self.names}") from None

    def writers(self) -> list[WriterSchema]:
        return list(self._by_fingerprint.values())

    def encode(self, name: str, record: Mapping[str, Any]) -> bytes:
        """The message of ``record``; numeric arrays of the batch records may be numpy arrays."""
        ws = self.schema(name)
        fast = self._columnar.get(name)
        if fast is not None:
            try:
                body = fastpath.write_body(fast.writer, record)
            except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
                raise CodecError(f"record does not match schema {name}: {exc}") from exc
            return MAGIC + ws.fingerprint + body
        buf = io.BytesIO()
        buf.write(MAGIC)
        buf.write(ws.fingerprint)
        try:
            schemaless_writer(buf, ws.parsed, record)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            raise CodecError(f"record does not match schema {name}: {exc}") from exc
        return buf.getvalue()

    def decode(
        self,
        data: bytes | None,
        expected: Iterable[str] | None = None,
        *,
        columnar: bool = False,
    ) -> Decoded | Fault:
        """Decode one message; a :class:`Fault` (never an exception) when it cannot be.

        With ``columnar``, the numeric arrays of a batch record (:data:`COLUMNAR_TYPES`) come
        back as numpy arrays; otherwise every value has fastavro's shape (lists)."""
        if data is None or len(data) < HEADER_SIZE or data[:2] != MAGIC:
            return Fault(
                ErrorCode.NOT_AVRO,
                "message is not Avro single-object encoded: expected the bytes C3 01 and an "
                f"8-byte schema fingerprint, got {_preview(data)}",
            )
        writer = self._by_fingerprint.get(bytes(data[2:HEADER_SIZE]))
        if writer is None:
            return Fault(
                ErrorCode.UNKNOWN_SCHEMA,
                f"writer schema fingerprint {data[2:HEADER_SIZE].hex()} is not a Caliber "
                f"schema; known record types: {', '.join(self.names)}",
            )
        if expected is not None and writer.name not in expected:
            return Fault(
                ErrorCode.UNEXPECTED_TYPE,
                f"this topic carries {', '.join(sorted(expected))}, not {writer.name}",
            )
        reader = self._current[writer.name]
        fast = self._columnar.get(writer.name) if columnar else None
        if fast is not None and reader is writer:
            return _decode_fast(fast, writer, bytes(data))
        decoded = _decode_fastavro(data, writer, reader)
        if fast is not None and isinstance(decoded, Decoded):
            return Decoded(decoded.name, fast.columns(decoded.record), decoded.writer_version)
        return decoded


def _compile(parsed: Any, named: Mapping[str, Any]) -> _Columnar | None:
    """The columnar reader and writer of a schema; None (use fastavro) when it cannot be."""
    try:
        return _Columnar(
            fastpath.compile_reader(parsed, named),
            fastpath.compile_writer(parsed, named),
            fastpath.compile_columns(parsed, named),
        )
    except fastpath.UnsupportedSchema:
        return None


def _decode_fast(fast: _Columnar, writer: WriterSchema, data: bytes) -> Decoded | Fault:
    try:
        record, end = fastpath.read_body(fast.reader, data, HEADER_SIZE)
    except fastpath.MalformedBody as exc:
        return Fault(
            ErrorCode.MALFORMED_AVRO,
            f"body does not decode as {writer.name} ({writer.version}): {exc}",
        )
    return _trailing_fault(writer, len(data) - end) or Decoded(writer.name, record, writer.version)


def _trailing_fault(writer: WriterSchema, trailing: int) -> Fault | None:
    if not trailing:
        return None
    return Fault(
        ErrorCode.MALFORMED_AVRO,
        f"{trailing} bytes left over after a complete {writer.name}: the message was "
        "framed or truncated wrongly",
    )


def _decode_fastavro(data: bytes, writer: WriterSchema, reader: WriterSchema) -> Decoded | Fault:
    body = io.BytesIO(data[HEADER_SIZE:])
    try:
        record = schemaless_reader(body, writer.parsed, None if reader is writer else reader.parsed)
    except Exception as exc:  # fastavro raises many types on corrupt bodies
        return Fault(
            ErrorCode.MALFORMED_AVRO,
            f"body does not decode as {writer.name} ({writer.version}): "
            f"{type(exc).__name__}: {exc}",
        )
    trailing = len(data) - HEADER_SIZE - body.tell()
    return _trailing_fault(writer, trailing) or Decoded(writer.name, record, writer.version)  # type: ignore[arg-type]


def _load(path: Path) -> Any:
    with path.open(encoding="utf-8") as fh:
        return json.load(fh)


def _released(schema_dir: Path) -> list[tuple[str, str, Any]]:
    base = schema_dir / "released"
    out: list[tuple[str, str, Any]] = []
    if not base.is_dir():
        return out
    order = {n: i for i, n in enumerate(SCHEMA_ORDER)}
    for folder in sorted(base.iterdir(), key=lambda p: order.get(p.name, len(order))):
        for path in sorted(folder.glob("*.avsc"), key=lambda p: int(p.stem)):
            out.append((folder.name, path.stem, _load(path)))
    return out


def _preview(data: bytes | None) -> str:
    if data is None:
        return "an empty (null) value"
    head = bytes(data[:12]).hex(" ")
    return f"{len(data)} bytes starting {head}" if data else "0 bytes"
