"""Property-based fuzz of the Kafka edge (ingest's decode + validation, no broker).

Random bytes, truncated and mutated Avro, wrong fingerprints, and every limit at and one
beyond its bound. Properties: parsing never raises (a worker never crashes on input), each
message is either accepted or dead-lettered with a stable code (never both, never
neither), every valid event is accepted exactly once, every limit violation gets its code.
Bounded for CI: ``FUZZ_EXAMPLES`` examples per property (200), without deadline.
"""

from __future__ import annotations

import time
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.ingest.parsing import Parsed, Source, parse
from shared.contracts.codec import AvroCodec
from shared.contracts.errors import ErrorCode
from shared.contracts.limits import DEFAULT_LIMITS as L
from tests.integration.edge_io import inference_event

CODEC = AvroCodec()
RAW = "ns.inference.raw"
FUZZ_EXAMPLES = 200
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
CODES = {str(c) for c in ErrorCode}


event = inference_event
"""A valid InferenceEvent record with ``changes`` applied (the edge-input tests' own)."""


def run(values: list[bytes]) -> Parsed:
    sources = [Source(RAW, 0, i, v) for i, v in enumerate(values)]
    return parse(sources, RAW, CODEC, L)


def verdicts(parsed: Parsed, n: int) -> dict[int, str]:
    """message index → "ok" or its dead-letter code; asserts exactly one verdict each."""
    out: dict[int, str] = {}
    for _, refs in parsed.predictions:
        for r in refs:
            assert r not in out, f"message {r} accepted twice"
            out[r] = "ok"
    for _, refs in parsed.labels:
        for r in refs:
            assert r not in out
            out[r] = "ok"
    for r, fault in parsed.dead:
        assert r not in out, f"message {r} both accepted and dead-lettered ({fault})"
        assert str(fault.code) in CODES
        out[r] = str(fault.code)
    assert sorted(out) == list(range(n)), "every message has a verdict"
    return out


GOOD = CODEC.encode("InferenceEvent", event())


@FUZZ
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=8))
def test_random_bytes_are_dead_letters_with_a_code(blobs: list[bytes]) -> None:
    values = [*blobs, CODEC.encode("InferenceEvent", event())]
    got = verdicts(run(values), len(values))
    assert got[len(blobs)] == "ok", "a good message among garbage is accepted"
    for i in range(len(blobs)):
        assert got[i] != "ok" or blobs[i][:2] == b"\xc3\x01"


@FUZZ
@given(st.integers(min_value=0, max_value=len(GOOD) - 1))
def test_truncated_avro_is_a_dead_letter(cut: int) -> None:
    got = verdicts(run([GOOD[:cut]]), 1)
    assert got[0] in {"not_avro", "unknown_schema", "malformed_avro"} or got[0] != "ok"


@FUZZ
@given(st.integers(min_value=0, max_value=len(GOOD) - 1), st.integers(min_value=1, max_value=255))
def test_mutated_avro_never_crashes_and_gets_one_verdict(pos: int, xor: int) -> None:
    data = bytearray(GOOD)
    data[pos] ^= xor
    verdicts(run([bytes(data), GOOD]), 2)


@FUZZ
@given(st.binary(min_size=8, max_size=8))
def test_a_wrong_fingerprint_is_unknown_schema(fp: bytes) -> None:
    known = {w.fingerprint for w in CODEC.writers()}
    value = GOOD[:2] + fp + GOOD[10:]
    got = verdicts(run([value]), 1)
    assert got[0] == ("unknown_schema" if fp not in known else got[0])


def _limit_cases(beyond: bool) -> dict[str, dict[str, Any]]:
    n = 1 if beyond else 0
    s = L.max_string + n
    now = int(time.time() * 1000)
    return {
        "predicted_label": {"predicted_label": "y" * s, "probabilities": None},
        "ground_truth": {"ground_truth": "g" * s},
        "category": {"features": {"country": "c" * s}},
        "feature_name": {"features": {"f" * s: 1.0}},
        "features": {"features": {f"f{i}": 1.0 for i in range(L.max_features + n)}},
        "metadata_entries": {"metadata": {f"k{i}": "v" for i in range(L.max_metadata + n)}},
        "metadata_key": {"metadata": {"k" * s: "v"}},
        "metadata_value": {"metadata": {"k": "v" * (L.max_metadata_value + n)}},
        "classes": {
            "probabilities": {
                "yes": 0.8,
                **{f"c{i}": 0.2 / (L.max_classes - 1 + n) for i in range(L.max_classes - 1 + n)},
            }
        },
        "too_old": {"event_time_ms": now - L.max_event_age_ms + 60_000 - n * 120_000},
        "too_new": {"event_time_ms": now + L.max_clock_skew_ms - 60_000 + n * 120_000},
        "tenant": {"tenant": "t" * s},
    }


LIMIT_NAMES = sorted(_limit_cases(False))
EXPECTED_BEYOND = {name: {"too_large"} for name in LIMIT_NAMES} | {
    "too_old": {"invalid_time"},
    "too_new": {"invalid_time"},
}


@settings(max_examples=len(LIMIT_NAMES) * 2, deadline=None)
@given(st.sampled_from(LIMIT_NAMES), st.booleans())
def test_every_limit_at_its_bound_is_accepted_and_beyond_it_refused(
    name: str, beyond: bool
) -> None:
    value = CODEC.encode("InferenceEvent", event(**_limit_cases(beyond)[name]))
    got = verdicts(run([value]), 1)[0]
    if beyond:
        assert got in EXPECTED_BEYOND[name], (name, got)
    else:
        assert got == "ok", (name, got)


@FUZZ
@given(
    st.sampled_from(["\x00", "\ud800", "\U0001f600", "\u200f", "a"]),
    st.integers(min_value=0, max_value=L.max_string - 1),
)
def test_edge_strings_in_a_batch_cost_only_their_event(ch: str, pad: int) -> None:
    value = "x" * pad + ch
    bad = ch in ("\x00", "\ud800")
    events = [event(), event(features={"country": value}), event()]
    values = []
    for e in events:
        try:
            values.append(CODEC.encode("InferenceEvent", e))
        except Exception:  # a lone surrogate has no UTF-8 form: write its WTF-8 bytes
            safe = {**e, "features": {"country": "S" * (pad + 3)}}
            raw = CODEC.encode("InferenceEvent", safe)
            values.append(raw.replace(b"S" * (pad + 3), value.encode("utf-8", "surrogatepass")))
    got = verdicts(run(values), 3)
    assert got[0] == got[2] == "ok"
    if bad:
        assert got[1] in {"string_nul", "malformed_avro"}
    else:
        assert got[1] == "ok"
