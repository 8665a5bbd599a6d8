"""Avro binary reader and writer that move numeric arrays as numpy arrays, not Python lists.

The batch records (``PredictionBatch``, ``DecisionBatch``, ``LabelBatch``) carry their events
as parallel arrays. A general Avro library makes one Python object per array element; this
module compiles, once per schema, a reader and a writer that turn an array of ``double`` or
``float`` into one :func:`numpy.frombuffer` call, and an array of ``long``/``int`` (zig-zag
varints) or of an ``enum`` into a handful of vectorised numpy operations (Avro specification,
"Binary Encoding"; docs/architecture.md, "Why a batch consumer inside a Faust app"). Strings,
maps and unions stay short Python loops.

The writer produces exactly the bytes fastavro's ``schemaless_writer`` produces for the same
record (one block per non-empty array or map, then the end marker); it takes numpy arrays or
lists for numeric arrays. The reader accepts every legal encoding: arrays and maps in any
number of blocks, negative block counts followed by their byte size. It raises
:class:`MalformedBody` (never anything else) on bytes that do not decode.

A reader is columnar: an array of numbers decodes to a 1-d numpy array (``float64`` for
``double``/``float``, ``int64`` for ``long``/``int``, ``bool`` for ``boolean``); every other
value has the shape fastavro gives it. :func:`compile_columns` turns a fastavro-shaped record
(decoded from an older writer schema) into the same columnar shape.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from shared.contracts import columnar_read, columnar_write
from shared.contracts.avro_wire import (
    NUMERIC_ITEMS,
    MalformedBody,
    Reader,
    SchemaWalk,
    UnsupportedSchema,
    Writer,
    kind_of,
)

Convert = Callable[[Any], Any]

_DTYPES = {"double": np.float64, "float": np.float64, "long": np.int64, "int": np.int64}


def compile_reader(schema: Any, named: Mapping[str, Any] | None = None) -> Reader:
    """A columnar reader of a parsed schema; raises :class:`UnsupportedSchema`."""
    return columnar_read.compile_reader(SchemaWalk(named or {}), schema)


def compile_writer(schema: Any, named: Mapping[str, Any] | None = None) -> Writer:
    """A writer of a parsed schema; raises :class:`UnsupportedSchema`."""
    return columnar_write.compile_writer(SchemaWalk(named or {}), schema)


def read_body(reader: Reader, data: bytes, pos: int) -> tuple[Any, int]:
    """Run ``reader`` on ``data`` from ``pos``; every decoding failure is a MalformedBody."""
    try:
        return reader(data, pos)
    except MalformedBody:
        raise
    except IndexError:
        raise MalformedBody("the body ends before the record does (truncated)") from None
    except Exception as exc:  # UnicodeDecodeError, struct.error, ...: still bad bytes
        raise MalformedBody(f"{type(exc).__name__}: {exc}") from exc


def write_body(writer: Writer, value: Any) -> bytes:
    """The Avro binary body of ``value``; raises ValueError, TypeError, KeyError,
    AttributeError or OverflowError when it does not match the schema."""
    out: list[bytes] = []
    try:
        writer(out, value)
    except IndexError as exc:
        raise ValueError(str(exc)) from exc
    return b"".join(out)


def compile_columns(schema: Any, named: Mapping[str, Any] | None = None) -> Convert:
    """A function taking a fastavro-shaped value of ``schema`` to the columnar shape."""
    return _converter(SchemaWalk(named or {}), schema) or _identity


def _identity(value: Any) -> Any:
    return value


def _converter(walk: SchemaWalk, schema: Any) -> Convert | None:
    """None when values of ``schema`` already have the columnar shape."""
    schema = walk.resolve(schema)
    kind = kind_of(schema)
    if kind == "record":
        return _record_converter(walk, schema)
    if kind == "array":
        return _array_converter(walk, schema)
    if kind == "map":
        values = _converter(walk, schema["values"])
        return None if values is None else _map_of(values)
    if kind == "union" and len(schema) == 2 and "null" in schema:
        branch = _converter(walk, next(b for b in schema if b != "null"))
        return None if branch is None else _optional(branch)
    return None


def _map_of(inner: Convert) -> Convert:
    return lambda v: {k: inner(x) for k, x in v.items()}


def _optional(inner: Convert) -> Convert:
    return lambda v: None if v is None else inner(v)


def _record_converter(walk: SchemaWalk, schema: Any) -> Convert | None:
    name = walk.enter(schema)
    fields = [(f["name"], _converter(walk, f["type"])) for f in schema["fields"]]
    walk.leave(name)
    active = [(fname, conv) for fname, conv in fields if conv is not None]
    if not active:
        return None

    def convert(rec: dict[str, Any]) -> dict[str, Any]:
        out = dict(rec)
        for fname, conv in active:
            out[fname] = conv(rec[fname])
        return out

    return convert


def _array_converter(walk: SchemaWalk, schema: Any) -> Convert | None:
    items = walk.resolve(schema["items"])
    kind = kind_of(items)
    if kind in NUMERIC_ITEMS:
        dtype = _DTYPES.get(kind, np.bool_)
        return lambda v: np.asarray(v, dtype=dtype)
    inner = _converter(walk, items)
    return None if inner is None else (lambda v: [inner(x) for x in v])


__all__ = [
    "MalformedBody",
    "Reader",
    "UnsupportedSchema",
    "Writer",
    "compile_columns",
    "compile_reader",
    "compile_writer",
    "read_body",
    "write_body",
]
