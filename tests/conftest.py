"""Fixtures and collection rules every test tier shares."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.contracts.codec import AvroCodec

INTEGRATION_DIR = Path(__file__).resolve().parent / "integration"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/integration needs the real stack: mark it so."""
    for item in items:
        if item.path.is_relative_to(INTEGRATION_DIR):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def codec() -> AvroCodec:
    return AvroCodec()
