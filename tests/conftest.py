"""Fixtures every test tier shares."""

from __future__ import annotations

import pytest

from shared.codec import AvroCodec


@pytest.fixture(scope="session")
def codec() -> AvroCodec:
    return AvroCodec()
