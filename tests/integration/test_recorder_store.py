"""The recorder's statements on a real PostgreSQL, written in slices of a few rows: the
semantics of a batch do not depend on how many statements it takes, and each statement is
timed by kind."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator

import asyncpg
import numpy as np
import pytest

from bench.scale_data import pending_id, prediction_id, preload
from services.policy.processing import decide
from services.recorder import store
from shared.contracts.batches import DecisionColumns, LabelColumns, PredictionColumns
from shared.recalibration.maps import IDENTITY
from shared.settings import Settings
from tooling.benchmarking import scratch_database

T0 = 1_767_225_600_000


@pytest.fixture(scope="module")
def dsn(stack_settings: Settings) -> Iterator[str]:
    with scratch_database(stack_settings, prefix="caliber_store") as settings:
        yield settings.postgres_url


def decisions(ids: list[str], confidences: list[float]) -> DecisionColumns:
    n = len(ids)
    cols = PredictionColumns(
        tenant="acme",
        model_name="fraud",
        model_version="v1",
        event_ids=ids,
        event_time_ms=np.arange(n, dtype=np.int64) + T0,
        predicted_labels=["yes"] * n,
        confidences=np.asarray(confidences),
    )
    return decide(cols, 0.6, IDENTITY, "registry", T0 + 1_000)


def labels(
    ids: list[str], truths: list[str], t: int = T0 + 5_000, sources: list[str] | None = None
) -> LabelColumns:
    n = len(ids)
    return LabelColumns(
        tenant="acme",
        model_name=None,
        model_version=None,
        event_ids=ids,
        ground_truths=truths,
        sources=sources or ["feed"] * n,
        label_time_ms=np.arange(n, dtype=np.int64) + t,
    )


async def _write(dsn: str, rows: int, timings: list[str], **batch: object) -> store.Written:
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            return await store.write(
                conn, **batch, timer=lambda kind, _s: timings.append(kind), rows=rows
            )  # type: ignore[arg-type]
    finally:
        await conn.close()


def write(dsn: str, rows: int, timings: list[str] | None = None, **batch: object) -> store.Written:
    return asyncio.run(_write(dsn, rows, [] if timings is None else timings, **batch))


async def _fetch(dsn: str, query: str, *args: object) -> list[tuple[object, ...]]:
    conn = await asyncpg.connect(dsn)
    try:
        return [tuple(r) for r in await conn.fetch(query, *args)]
    finally:
        await conn.close()


def fetch(dsn: str, query: str, *args: object) -> list[tuple[object, ...]]:
    return asyncio.run(_fetch(dsn, query, *args))


def new_ids(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


def test_waiting_labels_land_on_decisions_written_two_rows_per_statement(dsn: str) -> None:
    ids = new_ids(5)
    early = write(dsn, 2, labels=[labels([ids[1], ids[4]], ["no", "yes"])])
    assert (early.pending, early.labelled) == (2, 0)
    timings: list[str] = []
    out = write(dsn, 2, timings, decisions=[decisions(ids, [0.9, 0.4, 0.9, 0.9, 0.4])])
    # 5 decisions in slices of 2, 2 and 1: one statement per slice.
    assert timings == ["insert_decisions"] * 3
    assert (out.predictions, out.labelled, out.pending_applied) == (5, 2, 2)
    got = fetch(
        dsn,
        "SELECT event_id::text, ground_truth, status, review_state, decision FROM predictions "
        "WHERE event_id = ANY($1::uuid[]) ORDER BY event_time",
        ids,
    )
    assert got == [
        (ids[0], None, "auto", "none", "auto"),
        (ids[1], "no", "resolved", "resolved", "review"),
        (ids[2], None, "auto", "none", "auto"),
        (ids[3], None, "auto", "none", "auto"),
        (ids[4], "yes", "resolved", "resolved", "review"),
    ]
    assert fetch(dsn, "SELECT 1 FROM pending_labels WHERE event_id = ANY($1::uuid[])", ids) == []
    # A replay changes nothing.
    again = write(dsn, 2, decisions=[decisions(ids, [0.9, 0.4, 0.9, 0.9, 0.4])])
    assert (again.predictions, again.labelled, again.pending_applied) == (0, 0, 0)


def test_new_decisions_are_inserted_alike_and_a_stored_one_is_refused(dsn: str) -> None:
    """``new=True`` (no conflict check before each insert) writes what the checked statement
    writes, waiting labels included; a decision stored already fails the statement with a
    unique violation, and the checked statement then skips it."""
    ids = new_ids(4)
    write(dsn, 3, labels=[labels([ids[2]], ["no"])])
    out = write(dsn, 3, decisions=[decisions(ids, [0.9, 0.4, 0.4, 0.9])], new=True)
    assert (out.predictions, out.labelled, out.pending_applied) == (4, 1, 1)
    assert fetch(
        dsn,
        "SELECT event_id::text, ground_truth, status FROM predictions "
        "WHERE event_id = ANY($1::uuid[]) ORDER BY event_time",
        ids,
    ) == [
        (ids[0], None, "auto"),
        (ids[1], None, "review"),
        (ids[2], "no", "resolved"),
        (ids[3], None, "auto"),
    ]
    more = new_ids(2)
    with pytest.raises(asyncpg.UniqueViolationError):
        write(dsn, 3, decisions=[decisions([more[0], ids[3], more[1]], [0.9] * 3)], new=True)
    assert fetch(dsn, "SELECT 1 FROM predictions WHERE event_id = ANY($1::uuid[])", more) == []
    again = write(dsn, 3, decisions=[decisions([more[0], ids[3], more[1]], [0.9] * 3)])
    assert again.predictions == 2
    plans = {
        query: asyncio.run(
            _explain(dsn, query, *store.decision_columns([decisions(new_ids(2), [0.9, 0.9])]))
        )
        for query in (store.INSERT_DECISIONS, store.INSERT_NEW_DECISIONS)
    }
    resolution = {
        q: [x.get("Conflict Resolution") for x in nodes if x["Node Type"] == "ModifyTable"]
        for q, nodes in plans.items()
    }
    assert "NOTHING" in resolution[store.INSERT_DECISIONS]
    assert "NOTHING" not in resolution[store.INSERT_NEW_DECISIONS]


def test_labels_are_applied_kept_or_dropped_by_their_predictions(dsn: str) -> None:
    """Unlabelled prediction: applied; labelled one: nothing; none stored: kept waiting."""
    ids = new_ids(3)
    write(dsn, 10, decisions=[decisions(ids[:2], [0.9, 0.9])])
    write(dsn, 10, labels=[labels([ids[1]], ["yes"])])
    out = write(dsn, 10, labels=[labels(ids, ["no", "no", "no"])])
    assert (out.labelled, out.pending) == (1, 1)
    assert fetch(
        dsn,
        "SELECT event_id::text, ground_truth FROM predictions WHERE event_id = ANY($1::uuid[]) "
        "ORDER BY event_time",
        ids,
    ) == [(ids[0], "no"), (ids[1], "yes")]
    assert fetch(
        dsn, "SELECT event_id::text FROM pending_labels WHERE event_id = ANY($1::uuid[])", ids
    ) == [(ids[2],)]


LABEL_COLUMNS = (
    "status, review_state, decision, ground_truth, correct, label_source, labeled_at, "
    "resolved_by, reviewer_key_id, resolved_at"
)


async def _review_key(dsn: str, ids: list[str]) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO tenants (id, name) VALUES ('acme', 'Acme') ON CONFLICT DO NOTHING"
        )
        key = await conn.fetchval(
            "INSERT INTO api_keys (tenant_id, key_hash, key_prefix, roles) "
            "VALUES ('acme', $1, 'k', ARRAY['reviewer']) RETURNING id",
            uuid.uuid4().hex,
        )
        await conn.executemany(
            "INSERT INTO review_resolutions (event_id, tenant_id, ground_truth, api_key_id) "
            "VALUES ($1, 'acme', 'no', $2)",
            [(i, key) for i in ids],
        )
        return int(key)
    finally:
        await conn.close()


def test_a_label_that_waited_leaves_the_row_a_label_after_its_decision_leaves(
    dsn: str,
) -> None:
    """Auto, withheld-and-reviewed and withheld-and-observed decisions, labelled before
    (the label waits, and is written with the decision) and after their decisions."""
    before, after = new_ids(3), new_ids(3)
    key = asyncio.run(_review_key(dsn, [before[1], after[1]]))
    confidences, truths, sources = (
        [0.9, 0.4, 0.4],
        ["yes", "no", "yes"],
        ["feed", "review", "event"],
    )
    write(dsn, 1000, labels=[labels(before, truths, sources=sources)])
    first = write(dsn, 1000, decisions=[decisions(before, confidences)])
    assert (first.predictions, first.labelled, first.pending_applied) == (3, 3, 3)
    write(dsn, 1000, decisions=[decisions(after, confidences)])
    write(dsn, 1000, labels=[labels(after, truths, sources=sources)])
    query = f"SELECT {LABEL_COLUMNS} FROM predictions WHERE event_id = $1"
    for b, a in zip(before, after, strict=True):
        assert fetch(dsn, query, b) == fetch(dsn, query, a)
    labelled = fetch(dsn, query, before[1])[0]
    assert labelled[:4] == ("resolved", "resolved", "review", "no")
    assert (labelled[7], labelled[8]) == ("review", key)
    assert fetch(dsn, query, before[0])[0][:4] == ("auto", "none", "auto", "yes")


def test_the_first_label_wins_across_statements(dsn: str) -> None:
    known, unknown = new_ids(2), new_ids(1)[0]
    write(dsn, 2, decisions=[decisions(known, [0.9, 0.9])])
    timings: list[str] = []
    # Slices: [known0 a, unknown a], [known1 x, known0 b], [unknown b].
    out = write(
        dsn,
        2,
        timings,
        labels=[labels([known[0], unknown, known[1], known[0], unknown], list("aaxbb"))],
    )
    assert timings == ["write_labels"] * 3
    assert (out.labelled, out.pending) == (2, 1)
    got = fetch(
        dsn,
        "SELECT event_id::text, ground_truth FROM predictions WHERE event_id = ANY($1::uuid[])",
        known,
    )
    assert sorted(got) == sorted([(known[0], "a"), (known[1], "x")])
    waiting = fetch(dsn, "SELECT ground_truth FROM pending_labels WHERE event_id = $1", unknown)
    assert waiting == [("a",)]


def _plan_nodes(plan: dict[str, object], subplans: bool = True) -> Iterator[dict[str, object]]:
    yield plan
    for child in plan.get("Plans", []):  # type: ignore[attr-defined]
        if subplans or child.get("Parent Relationship") not in ("SubPlan", "InitPlan"):
            yield from _plan_nodes(child, subplans)


async def _explain(dsn: str, query: str, *args: object) -> list[dict[str, object]]:
    conn = await asyncpg.connect(dsn)
    try:
        tr = conn.transaction()
        await tr.start()
        try:
            raw = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {query}", *args)
        finally:
            await tr.rollback()
    finally:
        await conn.close()
    return list(_plan_nodes(json.loads(raw)[0]["Plan"]))


def test_a_full_slice_probes_keys_and_reads_no_table_whole(stack_settings: Settings) -> None:
    """1,000,000 labels waiting and 100,000 predictions: a slice of decisions and one of
    labels reach the tables by key probes only (nested loops over the primary keys), never
    by a sequential scan or a hash or merge join of a table."""
    with scratch_database(stack_settings, prefix="caliber_store_plans") as settings:
        preload(settings.postgres_url, 100_000, 1_000_000)
        n = store.STATEMENT_ROWS
        waiting = [pending_id(j) for j in range(1, n // 2 + 1)]
        d = store.decision_columns([decisions(waiting + new_ids(n - len(waiting)), [0.9] * n)])
        old = [prediction_id(i) for i in range(100_000, 100_000 - n // 2, -1)]
        lbl = store.label_columns([labels(old + new_ids(n - len(old)), ["cat"] * n)])
        for query, args, probed in (
            (store.INSERT_DECISIONS, tuple(d), {"pending_labels_pkey", "predictions_pkey"}),
            (store.WRITE_LABELS, tuple(lbl), {"predictions_pkey"}),
        ):
            nodes = asyncio.run(_explain(settings.postgres_url, query, *args))
            assert not [x for x in nodes if x["Node Type"] == "Seq Scan"]
            assert {x.get("Index Name") for x in nodes} >= probed
            # A hash or merge join only of what the statement itself holds (its CTEs); a
            # subplan under it (a review resolution's key) is a probe of its own.
            for join in (x for x in nodes if x["Node Type"] in ("Hash Join", "Merge Join")):
                assert not [x for x in _plan_nodes(join, False) if "Relation Name" in x]
