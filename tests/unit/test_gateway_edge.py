"""Bounded error bodies, per-key token buckets and key redaction in log lines."""

from __future__ import annotations

import json
import logging

from services.gateway.errors import MAX_ERROR_BYTES, MAX_EXCERPT, ErrorResponse
from services.gateway.logs import RedactKeys
from services.gateway.ratelimit import TokenBuckets, retry_after


def test_a_huge_list_of_faults_stays_bounded_and_says_how_many_were_left_out() -> None:
    huge = "y" * 4_000_000  # one string, shared by every entry
    detail = [
        {
            "loc": ["body", "events", i, "metadata"],
            "msg": "bad " * 100,
            "type": "x",
            "input": huge,
        }
        for i in range(9000)
    ]
    body = ErrorResponse(detail, 422).body
    assert len(body) <= MAX_ERROR_BYTES
    parsed = json.loads(body)
    assert len(parsed["detail"]) + parsed["omitted"] == 9000
    assert all(len(d["input"]) <= MAX_EXCERPT for d in parsed["detail"])
    assert parsed["detail"][0]["loc"] == ["body", "events", 0, "metadata"]


def test_lone_surrogates_never_reach_the_answer() -> None:
    body = ErrorResponse([{"loc": ["body", "\ud800"], "msg": "x\udfff", "type": "t"}], 422).body
    assert json.loads(body.decode("utf-8"))["detail"][0]["loc"] == ["body", "\ufffd"]
    assert json.loads(ErrorResponse("m" * 10_000, 400).body)["detail"].endswith("…")


def test_token_bucket_refills_at_its_rate_and_names_the_wait() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate=2.0, capacity=4.0, clock=lambda: now[0])
    assert [buckets.take("k") for _ in range(4)] == [0.0] * 4
    assert buckets.take("k") == 0.5  # one token at 2 a second
    assert buckets.take("other") == 0.0  # per key
    now[0] = 0.5
    assert buckets.take("k") == 0.0
    assert buckets.take("k", 10) == 2.0  # more than the capacity waits for a full bucket
    now[0] = 2.5
    assert buckets.take("k", 10) == 0.0 and buckets.take("k") == 3.5  # 6 tokens of debt, +1
    assert retry_after(0.2) == "1" and retry_after(2.01) == "3"
    assert TokenBuckets(0.0, 0.0).take("k", 1e9) == 0.0  # rate 0: off


def test_keys_in_query_strings_are_redacted_from_log_records() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        "",
        0,
        '%s - "%s %s"',
        ("1.2.3.4", "GET", "/ws/live?api_key=clb_secret&x=1"),
        None,
    )
    assert RedactKeys().filter(record)
    assert "clb_secret" not in record.getMessage()
    assert "api_key=***&x=1" in record.getMessage()
