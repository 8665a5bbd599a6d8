"""Avro binary encoding pieces shared by the columnar reader and writer (Avro specification,
"Binary Encoding"): zig-zag varints one at a time and vectorised, and the schema walk.
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import numpy as np
import numpy.typing as npt

Reader = Callable[[bytes, int], tuple[Any, int]]
"""Reads one value at an offset of the body; returns it and the offset after it."""
Writer = Callable[[list[bytes], Any], None]
"""Appends the encoding of one value to a list of chunks."""

NUMERIC_ITEMS = frozenset({"double", "float", "long", "int", "boolean"})
PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_MASK64 = (1 << 64) - 1
_MAX_VARINT = 10
ZERO = b"\x00"
_SHIFTS = np.arange(0, 7 * _MAX_VARINT, 7, dtype=np.uint64)
_THRESHOLDS = [np.uint64(1 << (7 * k)) for k in range(1, _MAX_VARINT)]
PACK_D = struct.Struct("<d")
PACK_F = struct.Struct("<f")


class UnsupportedSchema(Exception):
    """The schema uses a feature the compiler does not handle; use a general library."""


class MalformedBody(Exception):
    """The bytes do not decode with the schema."""


# --- scalar varints -----------------------------------------------------------------------


def read_long(data: bytes, pos: int) -> tuple[int, int]:
    """One zig-zag varint at ``pos``; at most 10 bytes, as the Avro ``long`` allows."""
    try:
        b = data[pos]
        if b < 0x80:
            return (b >> 1) ^ -(b & 1), pos + 1
        n = b & 0x7F
        shift = 7
        while True:
            pos += 1
            b = data[pos]
            n |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
            if shift >= 7 * _MAX_VARINT:
                raise MalformedBody(f"a varint longer than 10 bytes ends at offset {pos}")
    except IndexError:
        raise MalformedBody(f"the body ends inside a number at offset {pos}") from None
    n &= _MASK64
    return (n >> 1) ^ -(n & 1), pos + 1


SMALL_LONGS = [bytes([i << 1]) for i in range(64)]
"""The one-byte varints of 0..63."""


def long_bytes(value: int) -> bytes:
    """The zig-zag varint of one integer (it must fit in int64)."""
    value = operator.index(value)
    if 0 <= value < 64:
        return SMALL_LONGS[value]
    if not -(1 << 63) <= value < (1 << 63):
        raise OverflowError(f"{value} does not fit in a 64-bit long")
    n = ((value << 1) ^ (value >> 63)) & _MASK64
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# --- vectorised varints --------------------------------------------------------------------


SMALL_ARRAY = 48
"""Below this many numbers a Python loop beats the dozen numpy calls of the vectorised path
(each costs about a microsecond whatever its size): messages of a few events are common at
moderate rates."""


def read_varints(data: bytes, pos: int, count: int) -> tuple[npt.NDArray[np.int64], int]:
    """``count`` consecutive zig-zag varints at ``pos`` as int64, and the offset after them."""
    if count < SMALL_ARRAY:
        values = []
        for _ in range(count):
            value, pos = read_long(data, pos)
            values.append(value)
        return np.array(values, dtype=np.int64), pos
    window = np.frombuffer(data, np.uint8, min(count * _MAX_VARINT, len(data) - pos), pos)
    ends = np.flatnonzero(window < 0x80)
    if len(ends) < count:
        raise MalformedBody(
            f"an array of {count} numbers at offset {pos} has only {len(ends)} complete ones"
        )
    ends = ends[:count]
    starts = np.empty(count, np.int64)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts + 1
    widest = int(lengths.max())
    if widest > _MAX_VARINT:
        raise MalformedBody(f"a varint longer than 10 bytes in the array at offset {pos}")
    if widest == 1:
        u = window[:count].astype(np.uint64)
    else:
        k = np.arange(widest)
        idx = np.minimum(starts[:, None] + k, int(ends[-1]))
        parts = window[idx].astype(np.uint64) & np.uint64(0x7F)
        parts[k >= lengths[:, None]] = 0
        parts <<= _SHIFTS[:widest]
        u = np.bitwise_or.reduce(parts, axis=1)
    signed = (u >> np.uint64(1)).astype(np.int64) ^ -(u & np.uint64(1)).astype(np.int64)
    return signed, pos + int(ends[-1]) + 1


def varints_bytes(values: npt.NDArray[np.int64]) -> bytes:
    """The zig-zag varints of an int64 array, concatenated."""
    if len(values) < SMALL_ARRAY:
        return b"".join(map(long_bytes, values.tolist()))
    v = values.astype(np.int64, copy=False)
    u = ((v << 1) ^ (v >> 63)).view(np.uint64)
    nbytes = np.ones(len(u), np.int64)
    for threshold in _THRESHOLDS:
        more = u >= threshold
        if not more.any():
            break
        nbytes += more
    widest = int(nbytes.max())
    if widest == 1:
        return u.astype(np.uint8).tobytes()
    k = np.arange(widest)
    groups = ((u[:, None] >> _SHIFTS[:widest]) & np.uint64(0x7F)).astype(np.uint8)
    groups[k < (nbytes - 1)[:, None]] |= 0x80
    return groups[k < nbytes[:, None]].tobytes()


# --- schema walking ------------------------------------------------------------------------


def kind_of(schema: Any) -> str:
    if isinstance(schema, str):
        return schema
    if isinstance(schema, list):
        return "union"
    if "logicalType" in schema:
        raise UnsupportedSchema(f"logical type {schema['logicalType']!r}")
    kind = schema["type"]
    if not isinstance(kind, str):
        raise UnsupportedSchema(f"nested type definition {kind!r}")
    return kind


class SchemaWalk:
    """Named types seen so far while compiling one parsed schema (fastavro's
    ``parse_schema`` form, where a named type is defined once and referred to by name)."""

    def __init__(self, named: Mapping[str, Any]) -> None:
        self._named = dict(named)
        self._open: set[str] = set()

    def resolve(self, schema: Any) -> Any:
        """``schema`` with a reference to a named type replaced by its definition."""
        if isinstance(schema, str) and schema not in PRIMITIVES:
            try:
                return self._named[schema]
            except KeyError:
                raise UnsupportedSchema(f"unknown named type {schema!r}") from None
        if isinstance(schema, dict) and kind_of(schema) in PRIMITIVES:
            return schema["type"]
        if isinstance(schema, dict) and "name" in schema:
            self._named.setdefault(schema["name"], schema)
        return schema

    def enter(self, schema: Mapping[str, Any]) -> str:
        name = str(schema["name"])
        if name in self._open:
            raise UnsupportedSchema(f"recursive type {name}")
        self._open.add(name)
        return name

    def leave(self, name: str) -> None:
        self._open.discard(name)


C = TypeVar("C")


class SchemaCompiler(Generic[C]):
    """Compiles a parsed schema into nested closures of type ``C`` (readers or writers):
    a scalar from ``scalars``, any other type from the method ``_<type>(schema)``; a type
    without one is an :class:`UnsupportedSchema`."""

    scalars: Mapping[str, C] = {}

    def __init__(self, walk: SchemaWalk) -> None:
        self.walk = walk

    def compile(self, schema: Any) -> C:
        schema = self.walk.resolve(schema)
        kind = kind_of(schema)
        if kind in self.scalars:
            return self.scalars[kind]
        build: Callable[[Any], C] | None = getattr(self, f"_{kind}", None)
        if build is None:
            raise UnsupportedSchema(f"type {kind!r}")
        return build(schema)
