"""The columnar Avro reader: compiled once per schema into closures (see
:mod:`shared.contracts.columnar`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from shared.contracts.avro_wire import (
    NUMERIC_ITEMS,
    PACK_D,
    PACK_F,
    MalformedBody,
    Reader,
    SchemaCompiler,
    SchemaWalk,
    kind_of,
    read_long,
    read_varints,
)

BlockReader = Callable[[bytes, int, int], tuple[Any, int]]
"""Reads ``count`` items at an offset; returns them and the offset after them."""

_FIXED_WIDTH = {"double": ("<f8", 8), "float": ("<f4", 4)}
_OUT_DTYPE = {"double": np.float64, "float": np.float64, "long": np.int64, "int": np.int64}


def read_string(data: bytes, pos: int) -> tuple[str, int]:
    raw, pos = read_bytes(data, pos)
    return raw.decode("utf-8"), pos


def read_bytes(data: bytes, pos: int) -> tuple[bytes, int]:
    b = data[pos]
    if b < 0x80:
        size = (b >> 1) ^ -(b & 1)
        pos += 1
    else:
        size, pos = read_long(data, pos)
    end = pos + size
    if size < 0 or end > len(data):
        raise MalformedBody(
            f"a string of {size} bytes at offset {pos} does not fit the {len(data)}-byte body"
        )
    return data[pos:end], end


def _read_null(data: bytes, pos: int) -> tuple[None, int]:
    return None, pos


def _read_boolean(data: bytes, pos: int) -> tuple[bool, int]:
    return data[pos] != 0, pos + 1


def _read_float(data: bytes, pos: int) -> tuple[float, int]:
    return PACK_F.unpack_from(data, pos)[0], pos + 4


def _read_double(data: bytes, pos: int) -> tuple[float, int]:
    return PACK_D.unpack_from(data, pos)[0], pos + 8


_SCALARS: dict[str, Reader] = {
    "null": _read_null,
    "boolean": _read_boolean,
    "int": read_long,
    "long": read_long,
    "float": _read_float,
    "double": _read_double,
    "string": read_string,
    "bytes": read_bytes,
}


def _blocks(read_block: BlockReader, min_item: int) -> Callable[[bytes, int], tuple[list, int]]:
    """The blocks of one array or map: count, [byte size,] items ... until a zero count."""

    def read(data: bytes, pos: int) -> tuple[list, int]:
        parts = []
        count, pos = read_long(data, pos)
        while count:
            size = -1
            if count < 0:
                count = -count
                size, pos = read_long(data, pos)
            if count * min_item > len(data) - pos:
                raise MalformedBody(
                    f"a block of {count} items at offset {pos} cannot fit the "
                    f"{len(data) - pos} bytes left"
                )
            start = pos
            part, pos = read_block(data, pos, count)
            if size >= 0 and pos - start != size:
                raise MalformedBody(
                    f"a block at offset {start} says it holds {size} bytes; its items take "
                    f"{pos - start}"
                )
            parts.append(part)
            count, pos = read_long(data, pos)
        return parts, pos

    return read


def _fixed_width_block(kind: str) -> BlockReader:
    dtype, width = _FIXED_WIDTH[kind]

    def block(data: bytes, pos: int, count: int) -> tuple[Any, int]:
        end = pos + count * width
        if end > len(data):
            raise MalformedBody(f"{count} {kind}s at offset {pos} run past the end of the body")
        return np.frombuffer(data, dtype, count, pos).astype(np.float64), end

    return block


def _varint_block(data: bytes, pos: int, count: int) -> tuple[Any, int]:
    return read_varints(data, pos, count)


def _boolean_block(data: bytes, pos: int, count: int) -> tuple[Any, int]:
    end = pos + count
    if end > len(data):
        raise MalformedBody(f"{count} booleans at offset {pos} run past the end of the body")
    return np.frombuffer(data, np.uint8, count, pos) != 0, end


def _numeric_array(kind: str) -> Reader:
    if kind in _FIXED_WIDTH:
        blocks = _blocks(_fixed_width_block(kind), _FIXED_WIDTH[kind][1])
    elif kind == "boolean":
        blocks = _blocks(_boolean_block, 1)
    else:
        blocks = _blocks(_varint_block, 1)
    empty = np.empty(0, _OUT_DTYPE.get(kind, np.bool_))

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        parts, pos = blocks(data, pos)
        if not parts:
            return empty.copy(), pos
        return (parts[0] if len(parts) == 1 else np.concatenate(parts)), pos

    return read


def _string_block(data: bytes, pos: int, count: int) -> tuple[list[str], int]:
    out: list[str] = []
    append = out.append
    for _ in range(count):
        b = data[pos]
        if b & 0x81:  # a length of 64 or more bytes, or a negative one
            size, start = read_long(data, pos)
            if size < 0:
                raise MalformedBody(f"a string of {size} bytes at offset {pos}")
        else:
            size, start = b >> 1, pos + 1
        pos = start + size
        append(data[start:pos].decode("utf-8"))
    # A slice past the end is only shorter; the offset tells (it never decreases).
    if pos > len(data):
        raise MalformedBody(f"the strings of the array at offset {pos} run past the body")
    return out, pos


def _optional_string_block(null_first: bool) -> BlockReader:
    null_index = 0 if null_first else 1

    def block(data: bytes, pos: int, count: int) -> tuple[list[str | None], int]:
        out: list[str | None] = []
        for _ in range(count):
            index, pos = read_long(data, pos)
            if index == null_index:
                out.append(None)
            elif index == 1 - null_index:
                value, pos = read_string(data, pos)
                out.append(value)
            else:
                raise MalformedBody(f"union branch {index} before offset {pos} does not exist")
        return out, pos

    return block


def _enum_block(symbols: list[str]) -> BlockReader:
    def block(data: bytes, pos: int, count: int) -> tuple[list[str], int]:
        idx, pos = read_varints(data, pos, count)
        if idx.min() < 0 or idx.max() >= len(symbols):
            raise MalformedBody(f"an enum index outside 0..{len(symbols) - 1} before {pos}")
        return [symbols[i] for i in idx.tolist()], pos

    return block


def _items_block(item: Reader) -> BlockReader:
    def block(data: bytes, pos: int, count: int) -> tuple[list[Any], int]:
        out = []
        for _ in range(count):
            value, pos = item(data, pos)
            out.append(value)
        return out, pos

    return block


def _list_array(block: BlockReader, min_item: int) -> Reader:
    blocks = _blocks(block, min_item)

    def read(data: bytes, pos: int) -> tuple[list[Any], int]:
        parts, pos = blocks(data, pos)
        if len(parts) == 1:
            return parts[0], pos
        return [v for part in parts for v in part], pos

    return read


class _ReaderCompiler(SchemaCompiler[Reader]):
    scalars = _SCALARS

    def _record(self, schema: Any) -> Reader:
        name = self.walk.enter(schema)
        fields = [(f["name"], self.compile(f["type"])) for f in schema["fields"]]
        self.walk.leave(name)

        def read(data: bytes, pos: int) -> tuple[dict[str, Any], int]:
            rec = {}
            for fname, reader in fields:
                rec[fname], pos = reader(data, pos)
            return rec, pos

        return read

    def _array(self, schema: Any) -> Reader:
        items = self.walk.resolve(schema["items"])
        kind = kind_of(items)
        if kind in NUMERIC_ITEMS:
            return _numeric_array(kind)
        if kind == "string":
            return _list_array(_string_block, 1)
        if kind == "enum":
            return _list_array(_enum_block(list(items["symbols"])), 1)
        if kind == "union" and sorted(map(str, items)) == ["null", "string"]:
            return _list_array(_optional_string_block(items[0] == "null"), 1)
        min_item = 0 if kind in ("null", "record") else 1
        return _list_array(_items_block(self.compile(items)), min_item)

    def _map(self, schema: Any) -> Reader:
        value_reader = self.compile(schema["values"])

        def block(data: bytes, pos: int, count: int) -> tuple[list[tuple[str, Any]], int]:
            out = []
            for _ in range(count):
                key, pos = read_string(data, pos)
                value, pos = value_reader(data, pos)
                out.append((key, value))
            return out, pos

        blocks = _blocks(block, 1)

        def read(data: bytes, pos: int) -> tuple[dict[str, Any], int]:
            parts, pos = blocks(data, pos)
            return {k: v for part in parts for k, v in part}, pos

        return read

    def _union(self, schema: Any) -> Reader:
        branches = [self.compile(b) for b in schema]

        def read(data: bytes, pos: int) -> tuple[Any, int]:
            index, pos = read_long(data, pos)
            if not 0 <= index < len(branches):
                raise MalformedBody(f"union branch {index} at offset {pos} does not exist")
            return branches[index](data, pos)

        return read

    def _enum(self, schema: Any) -> Reader:
        symbols = list(schema["symbols"])

        def read(data: bytes, pos: int) -> tuple[str, int]:
            index, pos = read_long(data, pos)
            if not 0 <= index < len(symbols):
                raise MalformedBody(f"enum index {index} before offset {pos} does not exist")
            return symbols[index], pos

        return read

    @staticmethod
    def _fixed(schema: Any) -> Reader:
        size = int(schema["size"])

        def read(data: bytes, pos: int) -> tuple[bytes, int]:
            end = pos + size
            if end > len(data):
                raise MalformedBody(f"a fixed of {size} bytes at offset {pos} runs past the body")
            return data[pos:end], end

        return read


def compile_reader(walk: SchemaWalk, schema: Any) -> Reader:
    return _ReaderCompiler(walk).compile(schema)
