"""The columnar Avro writer: compiled once per schema into closures (see
:mod:`shared.contracts.columnar`). Its bytes equal fastavro's ``schemaless_writer``'s for the
same record: a non-empty array or map is one block (count, items) then a zero count."""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from shared.contracts.avro_wire import (
    NUMERIC_ITEMS,
    PACK_D,
    PACK_F,
    SMALL_LONGS,
    ZERO,
    SchemaCompiler,
    SchemaWalk,
    UnsupportedSchema,
    Writer,
    kind_of,
    long_bytes,
    varints_bytes,
)

_INT64_MAX = np.iinfo(np.int64).max
_ALLOWED_KINDS = {
    "double": "fiub",
    "float": "fiub",
    "long": "fiub",
    "int": "fiub",
    "boolean": "fiub",
}
_TWO_63 = 2.0**63


def _write_null(out: list[bytes], value: Any) -> None:
    return None


def _write_boolean(out: list[bytes], value: Any) -> None:
    out.append(b"\x01" if value else b"\x00")


def _write_long(out: list[bytes], value: Any) -> None:
    if isinstance(value, float):  # as fastavro does: towards zero (NaN and inf refused)
        value = int(value)
    out.append(long_bytes(value))


def _write_float(out: list[bytes], value: Any) -> None:
    out.append(PACK_F.pack(value))


def _write_double(out: list[bytes], value: Any) -> None:
    out.append(PACK_D.pack(value))


def write_string(out: list[bytes], value: str) -> None:
    raw = value.encode("utf-8")
    out.append(long_bytes(len(raw)))
    out.append(raw)


def _write_bytes(out: list[bytes], value: bytes) -> None:
    out.append(long_bytes(len(value)))
    out.append(bytes(value))


_SCALARS: dict[str, Writer] = {
    "null": _write_null,
    "boolean": _write_boolean,
    "int": _write_long,
    "long": _write_long,
    "float": _write_float,
    "double": _write_double,
    "string": write_string,
    "bytes": _write_bytes,
}


def _as_array(values: Any, kind: str) -> npt.NDArray[Any]:
    arr = values if isinstance(values, np.ndarray) else np.asarray(values)
    if arr.ndim != 1 or (len(arr) and arr.dtype.kind not in _ALLOWED_KINDS[kind]):
        raise TypeError(f"an array of {kind} needs numbers in one dimension, got {arr.dtype}")
    return arr


def _numeric_payload(kind: str, values: Any) -> tuple[int, bytes]:
    arr = _as_array(values, kind)
    if not len(arr):
        return 0, b""
    if kind == "double":
        return len(arr), arr.astype("<f8", copy=False).tobytes()
    if kind == "float":
        narrow = arr.astype("<f4")
        if np.any(np.isinf(narrow) & np.isfinite(arr)):
            raise OverflowError("a value is too large for an Avro float")
        return len(arr), narrow.tobytes()
    if kind == "boolean":
        return len(arr), (arr != 0).astype(np.uint8).tobytes()
    if arr.dtype.kind == "u" and int(arr.max()) > _INT64_MAX:
        raise OverflowError(f"{int(arr.max())} does not fit in a 64-bit long")
    if arr.dtype.kind == "f" and not np.all((arr >= -_TWO_63) & (arr < _TWO_63)):
        raise OverflowError("a NaN, infinite or too large number in an array of longs")
    # Floats go towards zero, as fastavro writes them.
    return len(arr), varints_bytes(arr.astype(np.int64, copy=False))


def _numeric_array(kind: str) -> Writer:
    def write(out: list[bytes], values: Any) -> None:
        n, payload = _numeric_payload(kind, values)
        if n:
            out.append(long_bytes(n))
            out.append(payload)
        out.append(ZERO)

    return write


def _write_strings(out: list[bytes], values: list[str]) -> None:
    if len(values):
        out.append(long_bytes(len(values)))
        append = out.append
        for value in values:
            raw = value.encode("utf-8")
            size = len(raw)
            append(SMALL_LONGS[size] if size < 64 else long_bytes(size))
            append(raw)
    out.append(ZERO)


def _enum_array(symbols: list[str]) -> Writer:
    table = {s: long_bytes(i) for i, s in enumerate(symbols)}

    def write(out: list[bytes], values: list[str]) -> None:
        if len(values):
            out.append(long_bytes(len(values)))
            try:
                out.append(b"".join([table[v] for v in values]))
            except KeyError as exc:
                raise ValueError(f"{exc.args[0]!r} is not one of {symbols}") from None
        out.append(ZERO)

    return write


def _items_array(item: Writer) -> Writer:
    def write(out: list[bytes], values: Any) -> None:
        if len(values):
            out.append(long_bytes(len(values)))
            for value in values:
                item(out, value)
        out.append(ZERO)

    return write


class _WriterCompiler(SchemaCompiler[Writer]):
    scalars = _SCALARS

    def _record(self, schema: Any) -> Writer:
        name = self.walk.enter(schema)
        fields = []
        for f in schema["fields"]:
            ftype = f["type"]
            writer = self.compile(ftype)
            if ftype in ("float", "double"):  # fastavro converts these fields with float()
                writer = _through_float(writer)
            # fastavro's rule: a missing field takes its default; without one, null if the
            # type names null, else the record is refused.
            required = "default" not in f and "null" not in ftype
            fields.append((f["name"], writer, f.get("default"), required))
        self.walk.leave(name)

        def write(out: list[bytes], rec: Mapping[str, Any]) -> None:
            for fname, writer, default, needed in fields:
                if fname in rec:
                    writer(out, rec[fname])
                elif needed:
                    raise ValueError(f"no value and no default for {fname}")
                else:
                    writer(out, default)

        return write

    def _array(self, schema: Any) -> Writer:
        items = self.walk.resolve(schema["items"])
        kind = kind_of(items)
        if kind in NUMERIC_ITEMS:
            return _numeric_array(kind)
        if kind == "string":
            return _write_strings
        if kind == "enum":
            return _enum_array(list(items["symbols"]))
        return _items_array(self.compile(items))

    def _map(self, schema: Any) -> Writer:
        value_writer = self.compile(schema["values"])

        def write(out: list[bytes], values: Mapping[str, Any]) -> None:
            if len(values):
                out.append(long_bytes(len(values)))
                for key, value in values.items():
                    write_string(out, key)
                    value_writer(out, value)
            out.append(ZERO)

        return write

    def _union(self, schema: Any) -> Writer:
        others = [i for i, b in enumerate(schema) if b != "null"]
        if len(schema) != 2 or len(others) != 1:
            raise UnsupportedSchema("only unions of null and one other type are compiled")
        null_tag, value_tag = long_bytes(1 - others[0]), long_bytes(others[0])
        branch = self.compile(schema[others[0]])
        fits = _BRANCH_CHECKS.get(kind_of(self.walk.resolve(schema[others[0]])), _anything)

        def write(out: list[bytes], value: Any) -> None:
            if value is None:
                out.append(null_tag)
            elif fits(value):
                out.append(value_tag)
                branch(out, value)
            else:
                raise ValueError(f"{value!r} (type {type(value).__name__}) does not match {schema}")

        return write

    def _enum(self, schema: Any) -> Writer:
        symbols = list(schema["symbols"])
        table = {s: long_bytes(i) for i, s in enumerate(symbols)}

        def write(out: list[bytes], value: str) -> None:
            try:
                out.append(table[value])
            except (KeyError, TypeError):
                raise ValueError(f"{value!r} is not one of {symbols}") from None

        return write


def _anything(value: Any) -> bool:
    return True


def _is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_sequence(value: Any) -> bool:
    return isinstance(value, np.ndarray) or (
        isinstance(value, Sequence) and not isinstance(value, str)
    )


# What fastavro checks before it writes a union's non-null branch (a union of null and a
# long refuses 1.5, where a plain long field would write 1); numpy arrays pass as sequences.
_BRANCH_CHECKS = {
    "long": _is_integer,
    "int": _is_integer,
    "double": _is_real,
    "float": _is_real,
    "boolean": lambda v: isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "bytes": lambda v: isinstance(v, bytes | bytearray),
    "array": _is_sequence,
    "map": lambda v: isinstance(v, Mapping),
    "record": lambda v: isinstance(v, Mapping),
}


def _through_float(writer: Writer) -> Writer:
    def write(out: list[bytes], value: Any) -> None:
        writer(out, float(value))

    return write


def compile_writer(walk: SchemaWalk, schema: Any) -> Writer:
    return _WriterCompiler(walk).compile(schema)
