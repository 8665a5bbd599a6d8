"""Which model version an event names: the registry view first, the database for misses."""

from __future__ import annotations

from typing import Any

from services.gateway.model_cache import ModelCache, RegistryIndex
from shared.contracts.codec import AvroCodec
from shared.registry.events import model_update_message
from shared.settings import Settings


def row(model_id: int, tenant: str, version: str, threshold: float = 0.7) -> dict[str, Any]:
    return {
        "id": model_id,
        "tenant_id": tenant,
        "name": "triage",
        "version": version,
        "stage": "staging",
        "parent_id": None,
        "abstain_threshold": threshold,
        "calibrator_version": "identity",
        "calibrator": None,
        "created_at": 0,
        "updated_at": 0,
    }


class CountingPool:
    """Stands in for the pool in a pure test: answers nothing, counts the questions."""

    def __init__(self) -> None:
        self.queries = 0

    async def fetchrow(self, sql: str, *args: Any) -> None:
        self.queries += 1


def index(codec: AvroCodec, *rows: dict[str, Any]) -> RegistryIndex:
    view = RegistryIndex(Settings(), "t.model-updates", codec)
    for r in rows:
        view.apply(*model_update_message(codec, r))
    return view


async def test_the_view_answers_by_id_within_the_tenant_only(codec: AvroCodec) -> None:
    pool = CountingPool()
    cache = ModelCache(pool, index(codec, row(1, "acme", "v1", 0.6), row(2, "globex", "v1")))  # type: ignore[arg-type]
    ref = await cache.by_id("acme", 1)
    assert ref is not None and (ref.name, ref.version, ref.abstain_threshold) == (
        "triage",
        "v1",
        0.6,
    )
    assert ref["name"] == "triage" and ref.key == "acme/triage/v1"
    assert await cache.by_name("acme", "triage", "v1") == ref
    assert cache.id_of("acme/triage/v1") == 1
    assert pool.queries == 0, "known versions never reach the database"
    # globex's id exists in the view, yet acme must not see it; that answer needs no query
    assert await cache.by_id("acme", 2) is None
    assert pool.queries == 0


async def test_updates_and_tombstones_move_the_id_index(codec: AvroCodec) -> None:
    view = index(codec, row(1, "acme", "v1", 0.6))
    view.apply(*model_update_message(codec, row(1, "acme", "v1", 0.9)))
    assert view.by_id[1].abstain_threshold == 0.9
    view.apply(b"acme/triage/v1", None)
    assert 1 not in view.by_id and view.get("acme/triage/v1") is None
    view.apply(*model_update_message(codec, row(5, "acme", "v1")))  # re-registered
    assert set(view.by_id) == {5}


async def test_unknown_ids_are_asked_once_per_ttl(codec: AvroCodec) -> None:
    pool = CountingPool()
    cache = ModelCache(pool, index(codec))  # type: ignore[arg-type]
    for _ in range(5):
        assert await cache.by_id("acme", 42) is None
    assert pool.queries == 1
    cache.forget()
    assert await cache.by_id("acme", 42) is None
    assert pool.queries == 2
