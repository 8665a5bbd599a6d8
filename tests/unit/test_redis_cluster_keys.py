"""Key layouts on Redis Cluster: every key of one fenced part or Lua call is in one slot.

The slot of each key is computed with ``redis.cluster.key_slot``, as the cluster client and
Redis Cluster compute it."""

from __future__ import annotations

import asyncio
import zlib
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.cluster import key_slot

from services.aggregator.store import AggregatorStore
from services.ingest.dedupe import Deduper
from services.router.store import Counted, EffectBuilder
from shared.routing.state import DecisionRecord, RouteKeys
from shared.runtime.identity import KEY_LAYOUT, Identity, StoreIdentities, compare
from shared.runtime.offset_fence import Effect, OffsetFence, effect_keys, split_effect
from shared.runtime.redis_client import (
    JOIN_SHARDS,
    _split,
    hash_tag,
    shard,
    shard_tag,
    tagged,
)
from shared.windows.calibration import WindowReader, alert_key, unlabeled_key
from shared.windows.drift import DriftKeys
from shared.windows.rollout import rollout_key
from shared.windows.segments import SegmentLayout
from tests.fence_message import FenceMessage

P = "caliber:t:"
M = "acme/churn/v3"


def slot(key: str) -> int:
    return int(key_slot(key.encode()))


def test_hash_tag_reads_braces_as_redis_cluster_does() -> None:
    assert hash_tag("a:{acme/m/v1}:7") == "acme/m/v1"
    assert hash_tag("no tag") is None
    assert hash_tag("empty {} tag") is None
    assert hash_tag("{a}{b}") == "a"
    # the slot of a tagged key is the slot of its tag alone
    assert slot(f"x:{tagged(M)}:1") == slot(M) == slot(f"y:{tagged(M)}")


def test_shards_are_stable_and_spread() -> None:
    # CRC-32 of the name: the same in every process (not Python's salted hash)
    assert shard("acme/e-1") == zlib.crc32(b"acme/e-1") % JOIN_SHARDS
    assert shard_tag("j", "acme/e-1") == "{~j" + str(zlib.crc32(b"acme/e-1") % 16) + "}"
    used = {shard(f"acme/e-{i}") for i in range(1000)}
    assert used == set(range(JOIN_SHARDS))


def test_cluster_urls() -> None:
    assert _split("redis+cluster://127.0.0.1:7000") == ("redis://127.0.0.1:7000", True)
    assert _split("rediss+cluster://h:1") == ("rediss://h:1", True)
    assert _split("redis://127.0.0.1:16379/0") == ("redis://127.0.0.1:16379/0", None)


def test_model_version_keys_share_the_model_slot() -> None:
    reader = WindowReader(aioredis.Redis(), P)
    drift = DriftKeys(P)
    seg = SegmentLayout(P)
    keys = [
        reader.key("m", M, 60),
        reader.key("h", M, 3600, True),
        reader.key("d", M, 86400, "q"),
        *reader.summed_keys(M, "7d", now_s=10 * 86400 + 5000),
        unlabeled_key(f"{P}agg:", M),
        alert_key(f"{P}agg:", M, "ece"),
        alert_key(f"{P}agg:", M, "", "history"),
        rollout_key(P, M, "7"),
        seg.members(M, "sport"),
        seg.counts(M),
        seg.ring(M, "sport=golf"),
        seg.fits(M),
        drift.reference(M),
        drift.collect(M),
        drift.collected(M),
        drift.bucket(M, "3", 600),
        drift.index(M, "3"),
        drift.scores(M),
        drift.alert(M, "age"),
    ]
    assert {slot(k) for k in keys} == {slot(M)}
    # another model version (usually) lives elsewhere: the state spreads over the cluster
    others = {slot(reader.key("m", f"acme/churn/v{i}", 60)) for i in range(50)}
    assert len(others) > 40


def _messages() -> list[FenceMessage]:
    return [FenceMessage("d", 0, 10), FenceMessage("d", 0, 11), FenceMessage("l", 1, 4)]


def _captured_aggregator_effect() -> tuple[AggregatorStore, Effect]:
    store = AggregatorStore(aioredis.Redis(), P, horizon_s=7 * 86400)
    seen: list[Effect] = []

    async def capture(messages: Any, effect: Effect) -> bool:
        seen.append(effect)
        return True

    store.fence.apply = capture  # type: ignore[method-assign]
    other = "acme/fraud/v1"
    inc = {
        ("m", M, 60): {"n": 2, "h3": 1, "Q5": 1},
        ("h", M, 0): {"n": 2},
        ("m", other, 120): {"n": 1},
    }
    pred = store.pred_key("acme", "e-1")
    pending = store.pending_key("acme", "e-2")
    asyncio.run(
        store.apply(
            _messages(),  # type: ignore[arg-type]
            inc,
            [(pred, "x", 60), (pending, "y", 60)],
            [store.pred_key("acme", "e-3")],
            {(M, 3600): 2, (other, 3600): -1},
            now_s=10_000,
            segment_windows={(M, "sport=golf"): [1, 2]},
            rollout={(M, "9"): {"n": 1}},
        )
    )
    return store, seen[0]


def test_every_key_of_an_aggregator_part_has_the_part_tag() -> None:
    store, effect = _captured_aggregator_effect()
    parts = split_effect(effect)
    # the global sets (models, segment models) are written before the fence, by SADD only
    glob = parts.pop(None)
    assert {k for k, _ in glob.sadd} == {f"{P}agg:models", f"{P}agg:seg:models"}
    assert not glob.incr and not glob.ring and not glob.zadd
    assert M in parts and "acme/fraud/v1" in parts
    assert any(t.startswith("~j") for t in parts)
    for tag, part in parts.items():
        assert tag is not None
        fence_slot = slot(store.fence.part_key(tag))
        keys = effect_keys(part)
        assert keys
        assert {slot(k) for k in keys} == {fence_slot}, tag
    # the ring of a segment writes three keys, all of the model version
    ring = parts[M].ring[0]
    assert {slot(ring[0]), slot(ring[3]), slot(ring[6])} == {slot(M)}


def test_router_effect_parts_are_single_slot() -> None:
    keys = RouteKeys(P)
    b = EffectBuilder(keys, 3_600_000.0, 600)
    rec = DecisionRecord("acme", "goal one", "path/a", False, 1_000)
    b.decision("d-1", rec, 0.5, 20.0)
    b.outcome("d-1", Counted(rec, 1.0))
    b.outcome("d-2", Counted(DecisionRecord("acme", "goal one", "path/b", True, 2_000), 0.0))
    b.pending("d-3", 1.0, "label", 60)
    b.effect.set.append((keys.event("acme", "e-1"), "d-1", 60))
    parts = split_effect(b.build())
    parts.pop(None)  # the tenant's set of goals
    route = hash_tag(keys.post("acme", "goal one", "path/a"))
    assert route in parts
    fence = OffsetFence(aioredis.Redis(), keys.offsets)
    for tag, part in parts.items():
        assert tag is not None
        assert {slot(k) for k in effect_keys(part)} == {slot(fence.part_key(tag))}
    # both paths of one goal share the route's slot (one MGET reads their costs)
    assert slot(keys.cost("acme", "goal one", "path/a")) == slot(keys.cost("acme", "goal one", "x"))


def test_dedupe_claims_are_grouped_by_shard() -> None:
    d = Deduper(aioredis.Redis(), P, 60)
    keys = [d._key("seen", "acme", f"e-{i}") for i in range(100)]
    by_tag: dict[str, set[int]] = {}
    for k in keys:
        by_tag.setdefault(hash_tag(k) or "", set()).add(slot(k))
    assert all(len(s) == 1 for s in by_tag.values())
    assert len(by_tag) == JOIN_SHARDS


def test_writes_that_cannot_be_split_are_refused() -> None:
    with pytest.raises(ValueError, match="without a hash tag"):
        split_effect(Effect(incr=[(f"{P}agg:counts", 0, {"n": 1})]))
    with pytest.raises(ValueError, match="different hash tags"):
        split_effect(Effect(ring=[("{a}:s", 10, "m", "{b}:l", 5, [1], "{a}:n", "overflow", 0)]))


def test_a_redis_of_the_old_key_layout_is_rebuilt_not_mixed() -> None:
    log = Identity("a" * 32, 3)
    old = StoreIdentities(log, log, log, [], redis_layout=None)
    (line,) = compare(old)
    assert line.startswith("Redis holds keys of layout 1")
    assert "caliber rebuild redis" in line
    assert compare(StoreIdentities(log, log, log, [], redis_layout=KEY_LAYOUT)) == []
