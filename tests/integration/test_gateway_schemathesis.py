"""Property-based: every operation of the live OpenAPI document, against the real gateway,
with a valid key and without one. No answer is a 5xx; every answer's status, content type,
headers and body are the documented ones.

Bounded: :data:`EXAMPLES` generated cases per operation (each sent twice, with and without
the key), 25 operations, so about 500 requests: 2-3 minutes on an idle 2-core machine.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from shared.settings import Settings
from tests.integration.gateway_client import make_keys, start_gateway

EXAMPLES = 10
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def live(
    isolated_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    keys = make_keys(isolated_settings, {"admin": ("acme", ["admin"])})
    base, proc = start_gateway(
        isolated_settings,
        tmp_path_factory.mktemp("schemathesis"),
        CALIBER_GATEWAY_MAX_BODY_BYTES=str(256 * 1024),
    )
    headers = {"X-API-Key": keys["admin"]}
    model = httpx.post(
        f"{base}/api/models", json={"name": "fuzzed", "version": "1"}, headers=headers
    ).json()["id"]
    me = httpx.get(f"{base}/api/me", headers=headers).json()
    yield {"base": base, "headers": headers, "model": model, "key_id": me["key_id"]}
    proc.terminate()  # type: ignore[attr-defined]
    proc.wait(30)  # type: ignore[attr-defined]


def test_every_operation_answers_as_documented(live: dict[str, Any]) -> None:
    schema = schemathesis.openapi.from_url(live["base"] + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25
    failures: dict[str, str] = {}
    statuses: Counter[int] = Counter()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def run(case: Any) -> None:
        if (case.path_parameters or {}).get("key_id") == live["key_id"]:
            case.path_parameters["key_id"] = live["key_id"] + 10**6  # keep the test's key
        for headers in (live["headers"], {}):
            r = case.call_and_validate(base_url=live["base"], headers=headers, checks=CHECKS)
            statuses[r.status_code] += 1

    for operation in operations:
        try:
            given(operation.as_strategy())(run)()
        except Exception as exc:  # every operation runs; the failures are listed together
            failures[operation.label] = str(exc)[:2000]
    print(f"schemathesis: {sum(statuses.values())} answers by status {sorted(statuses.items())}")
    assert statuses[401] >= len(operations) - 1  # every keyed operation, without the key
    assert sum(n for code, n in statuses.items() if code < 300) > len(operations)
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())
