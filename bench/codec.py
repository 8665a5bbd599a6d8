"""Avro encoding and decoding of the batch records: fastavro against the columnar codec.

    python -m bench.codec [--events 500] [--rounds 300]

In process, no stack. One ``PredictionBatch`` of ``--events`` events made by the simulator
as ``bench.pipeline`` makes them (here 4 classes' probabilities, 3 numeric and 2 categorical
features) and the ``DecisionBatch`` the policy writes for it. Per record type and direction
it times ``--rounds`` calls of

- codec: record → message bytes (encode) and bytes → record (decode), the record in the
  shape each path takes (lists for fastavro, numpy arrays for the columnar codec);
- columns: the worker's whole step, ``PredictionColumns``/``DecisionColumns`` → bytes and
  bytes → columns (``to_record``/``from_record`` included), before and after,

and prints CPU µs per event (p50, p99 of the calls), events/s of one core at the p50, and
the memory a decode allocates (tracemalloc peak) with the process's peak RSS.
"""

from __future__ import annotations

import argparse
import io
import resource
import time
import tracemalloc
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
from fastavro import schemaless_reader, schemaless_writer

from shared.contracts.batches import DecisionColumns, PredictionColumns
from shared.contracts.codec import HEADER_SIZE, MAGIC, AvroCodec, Decoded
from simulator.generator import ModelSpec, generate

CODEC = AvroCodec()


def fastavro_encode(name: str, record: dict[str, Any]) -> bytes:
    ws = CODEC.schema(name)
    buf = io.BytesIO()
    buf.write(MAGIC)
    buf.write(ws.fingerprint)
    schemaless_writer(buf, ws.parsed, record)
    return buf.getvalue()


def fastavro_decode(name: str, data: bytes) -> Any:
    return schemaless_reader(io.BytesIO(data[HEADER_SIZE:]), CODEC.schema(name).parsed, None)


def columnar_decode(data: bytes) -> dict[str, Any]:
    decoded = CODEC.decode(data, columnar=True)
    assert isinstance(decoded, Decoded)
    return decoded.record


def batches(n: int) -> tuple[PredictionColumns, DecisionColumns]:
    spec = ModelSpec(
        name="bench",
        version="v1",
        classes=("a", "b", "c", "d"),
        overconfidence=0.05,
        numeric_features=3,
        categorical_features=2,
    )
    cols = generate(spec, n, seed=7, start_ms=1_765_000_000_000).predictions
    calibrated = np.clip(cols.confidences - 0.05, 0.0, 1.0)
    decisions = DecisionColumns(
        cols, calibrated, calibrated < 0.7, 0.7, "registry", "iso-3", 1_765_000_100_000
    )
    return cols, decisions


def timed(fn: Callable[[], object], rounds: int, events: int) -> tuple[float, float]:
    """(p50, p99) CPU µs per event of ``rounds`` calls (this thread's CPU time, so other
    work on a shared machine inflates it less than wall time)."""
    for _ in range(5):
        fn()
    per_call = []
    for _ in range(rounds):
        start = time.thread_time()
        fn()
        per_call.append(time.thread_time() - start)
    us = np.asarray(per_call) * 1e6 / events
    return float(np.percentile(us, 50)), float(np.percentile(us, 99))


def allocated_kib(fn: Callable[[], object]) -> float:
    tracemalloc.start()
    kept = fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    del kept
    return peak / 1024


Step = Callable[[], object]


def cases(cols: PredictionColumns, decisions: DecisionColumns) -> list[tuple[str, Step, Step]]:
    """(label, fastavro path, columnar path) of every measured step."""
    out: list[tuple[str, Step, Step]] = []
    for name, obj, from_record in (
        ("PredictionBatch", cols, PredictionColumns.from_record),
        ("DecisionBatch", decisions, DecisionColumns.from_record),
    ):
        rec_lists, rec_arrays = obj.to_record(), obj.to_columnar_record()
        data = CODEC.encode(name, rec_arrays)
        assert data == fastavro_encode(name, rec_lists)
        out += [
            (
                f"{name} encode (record → bytes)",
                partial(fastavro_encode, name, rec_lists),
                partial(CODEC.encode, name, rec_arrays),
            ),
            (
                f"{name} decode (bytes → record)",
                partial(fastavro_decode, name, data),
                partial(columnar_decode, data),
            ),
            (
                f"{name} encode (columns → bytes)",
                partial(_encode_columns, fastavro_encode, name, obj, columnar=False),
                partial(_encode_columns, CODEC.encode, name, obj, columnar=True),
            ),
            (
                f"{name} decode (bytes → columns)",
                partial(_decode_columns, partial(fastavro_decode, name), from_record, data),
                partial(_decode_columns, columnar_decode, from_record, data),
            ),
        ]
    return out


def _encode_columns(
    encode: Callable[[str, dict[str, Any]], bytes], name: str, obj: Any, columnar: bool
) -> bytes:
    return encode(name, obj.to_columnar_record() if columnar else obj.to_record())


def _decode_columns(
    decode: Callable[[bytes], Any], from_record: Callable[[Any], object], data: bytes
) -> object:
    return from_record(decode(data))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    cols, decisions = batches(args.events)
    print(f"{args.events}-event batches, {args.rounds} calls each; CPU µs per event p50 / p99")
    print(f"{'step':<40} {'fastavro':>17} {'columnar':>17} {'speed-up':>9} {'events/s':>12}")
    for label, slow, fast in cases(cols, decisions):
        s50, s99 = timed(slow, args.rounds, args.events)
        f50, f99 = timed(fast, args.rounds, args.events)
        print(
            f"{label:<40} {s50:>8.3f} / {s99:<6.3f} {f50:>8.3f} / {f99:<6.3f} "
            f"{s50 / f50:>8.1f}x {1e6 / f50:>12,.0f}"
        )
    data = CODEC.encode("PredictionBatch", cols.to_columnar_record())
    slow_kib = allocated_kib(lambda: fastavro_decode("PredictionBatch", data))
    fast_kib = allocated_kib(lambda: columnar_decode(data))
    print(
        f"PredictionBatch decode allocates (tracemalloc peak): fastavro {slow_kib:,.0f} KiB, "
        f"columnar {fast_kib:,.0f} KiB; message {len(data):,} bytes"
    )
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")


if __name__ == "__main__":
    main()
