"""API key handling, the outbox's delivered prefix, and ModelVersion records."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.gateway.auth import KEY_PREFIX, check_roles, hash_key, new_key, presented_key
from services.gateway.outbox import delivered_prefix
from shared.contracts.codec import AvroCodec, Decoded
from shared.registry.events import model_update_message, model_version_record


def test_keys_are_random_and_stored_as_sha256() -> None:
    a, b = new_key(), new_key()
    assert a != b and a.startswith(KEY_PREFIX) and len(a) >= len(KEY_PREFIX) + 43
    assert hash_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-api-key": "k1"}, "k1"),
        ({"authorization": "Bearer k2"}, "k2"),
        ({"authorization": "bearer  k3 "}, "k3"),
        ({"authorization": "Basic xyz"}, None),
        ({"authorization": "Bearer "}, None),
        ({}, None),
    ],
)
def test_presented_key(headers: dict[str, str], expected: str) -> None:
    assert presented_key(headers) == expected


def test_roles_are_checked_and_ordered() -> None:
    assert check_roles(["admin", "viewer", "admin"]) == ["viewer", "admin"]
    with pytest.raises(ValueError, match="superuser"):
        check_roles(["superuser"])
    with pytest.raises(ValueError):
        check_roles([])


@pytest.mark.parametrize(
    ("errors", "expected"),
    [
        ([], 0),
        ([None, None, None], 3),
        (["refused", None, None], 0),
        ([None, "timed out", None], 1),
        ([None, None, "refused"], 2),
    ],
)
def test_only_rows_before_the_first_failure_count_as_published(
    errors: list[str | None], expected: int
) -> None:
    assert delivered_prefix(errors) == expected


def test_model_version_record_round_trips_with_its_key(codec: AvroCodec) -> None:
    row = {
        "id": 3,
        "tenant_id": "acme",
        "name": "triage",
        "version": "v2",
        "stage": "production",
        "parent_id": 1,
        "abstain_threshold": 0.65,
        "calibrator_version": "identity",
        "calibrator": None,
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
        "updated_at": 1_767_225_601_000,
    }
    assert model_version_record(row)["created_at_ms"] == 1_767_225_600_000
    key, value = model_update_message(codec, row)
    assert key == b"acme/triage/v2"
    decoded = codec.decode(value, {"ModelVersion"})
    assert isinstance(decoded, Decoded)
    assert decoded.record["stage"] == "production" and decoded.record["parent_id"] == 1
    assert decoded.record["updated_at_ms"] == 1_767_225_601_000
