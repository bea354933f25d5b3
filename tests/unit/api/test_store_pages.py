"""Operations pages on SQLite and PostgreSQL: cursors, capped totals, the indexes they use."""

from __future__ import annotations

import datetime
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from support.operation_rows import START, analyze, insert_rows, operations_table, row
from support.store_factory import BACKENDS, open_factory

from ktrdr.api.store import ListPosition, OperationStore
from ktrdr.protocol import OperationStatus, OperationType

COMPLETED = OperationStatus.COMPLETED
TRAINING = OperationType.TRAINING


def ids_of(items: Any) -> list[str]:
    return [record.id for record in items]


def walk(store: OperationStore, *, limit: int, **filters: Any) -> list[str]:
    """Every id over all pages, following each page's last position."""
    seen: list[str] = []
    after = None
    while True:
        page = store.list(limit=limit, after=after, **filters)
        seen += ids_of(page.items)
        if not page.more:
            return seen
        last = page.items[-1]
        after = ListPosition(created_at=last.created_at, id=last.id)


def expected_order(rows: list[dict[str, Any]], **filters: Any) -> list[str]:
    status, kind = filters.get("status"), filters.get("operation_type")
    chosen = [
        r
        for r in rows
        if (status is None or r["status"] == status.value)
        and (kind is None or r["type"] == kind.value)
    ]
    chosen.sort(key=lambda r: (r["created_at"], r["id"]), reverse=True)
    return [r["id"] for r in chosen]


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"status": COMPLETED},
        {"operation_type": TRAINING},
        {"status": COMPLETED, "operation_type": TRAINING},
    ],
    ids=["all", "status", "type", "both"],
)
def test_cursor_pages_give_every_row_once_newest_first(
    store: OperationStore, filters: dict[str, Any]
) -> None:
    """Following positions page by page lists every match once, in (created_at, id)
    order newest first, ties on the time included."""
    rows = [row(i) for i in range(157)]
    insert_rows(store, rows)

    assert walk(store, limit=10, **filters) == expected_order(rows, **filters)


def test_cursor_pages_stay_exact_while_rows_are_inserted_and_deleted(
    store: OperationStore,
) -> None:
    """With inserts (newer, and tied with the page boundary) and deletes between pages,
    no row is listed twice, and every row present from start to end is listed."""
    rng = random.Random(13)
    rows = [row(i, tie_every=4) for i in range(300)]
    insert_rows(store, rows)
    table = operations_table(store)
    alive = {r["id"] for r in rows}
    deleted: set[str] = set()
    seen: list[str] = []
    after = None
    next_id = 10_000
    while True:
        page = store.list(limit=9, after=after)
        seen += ids_of(page.items)
        if not page.more:
            break
        last = page.items[-1]
        after = ListPosition(created_at=last.created_at, id=last.id)
        newer = row(next_id) | {"created_at": START + datetime.timedelta(days=9)}
        tied = row(next_id + 1) | {"created_at": last.created_at}
        insert_rows(store, [newer, tied])
        next_id += 2
        victims = rng.sample(sorted(alive), 3)
        with store.engine.begin() as conn:
            conn.execute(sa.delete(table).where(table.c.id.in_(victims)))
        alive -= set(victims)
        deleted |= set(victims)

    assert len(seen) == len(set(seen))
    assert alive <= set(seen)
    assert not (set(seen) & deleted) - {r["id"] for r in rows}


def test_offset_pages_still_work_and_match_the_cursor_pages(store: OperationStore) -> None:
    """offset skips rows (the old way), giving the same first pages as cursors."""
    rows = [row(i) for i in range(40)]
    insert_rows(store, rows)
    order = expected_order(rows)

    assert ids_of(store.list(limit=7, offset=14).items) == order[14:21]
    with pytest.raises(ValueError, match="not both offset and after"):
        store.list(offset=1, after=ListPosition(created_at=START, id="x"))


def test_the_total_is_counted_up_to_a_cap(store: OperationStore) -> None:
    """total is exact up to the cap and None above it; more says whether a page follows."""
    insert_rows(store, [row(i) for i in range(12)])

    exact = store.list(limit=5, count_cap=12)
    capped = store.list(limit=5, count_cap=11)
    last = store.list(limit=12)

    assert (exact.total, exact.more) == (12, True)
    assert capped.total is None
    assert (last.total, last.more) == (12, False)


# --- query plans ----------------------------------------------------------------------


@contextmanager
def captured(engine: sa.Engine) -> Iterator[list[tuple[str, Any]]]:
    """Each statement the engine sends, with its parameters as the driver gets them."""
    sent: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


def explain(store: OperationStore, sql: str, parameters: Any) -> str:
    """The engine's plan for a statement as sent (SQLite EXPLAIN QUERY PLAN, PostgreSQL EXPLAIN)."""
    engine = store.engine
    sqlite = engine.dialect.name == "sqlite"
    prefix = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN "
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(prefix + sql, parameters).all()
    return "\n".join(str(r[-1] if sqlite else r[0]) for r in rows)


def plans(store: OperationStore, call: Any) -> list[str]:
    """The plan of every statement ``call()`` sends to the store's database."""
    with captured(store.engine) as sent:
        call()
    return [explain(store, sql, parameters) for sql, parameters in sent]


@pytest.fixture(scope="module", params=BACKENDS)
def big_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperationStore]:
    """A store with 20,000 operations and fresh planner statistics (one per module:
    the plan tests only read, but for the retention plan, which changes nothing)."""
    factory = open_factory(request.param, tmp_path_factory.mktemp("big"))
    try:
        store = factory.open()
        insert_rows(store, [row(i) for i in range(20_000)])
        analyze(store)
        yield store
    finally:
        factory.finish()


FILTERS = [
    ({}, "ix_operations_created_id"),
    ({"status": COMPLETED}, "ix_operations_status_created_id"),
    ({"status": OperationStatus.PENDING}, "ix_operations_status_created_id"),
    ({"operation_type": TRAINING}, "ix_operations_type_created_id"),
    ({"status": COMPLETED, "operation_type": TRAINING}, "ix_operations_type_status_created_id"),
]
FILTER_IDS = ["all", "status", "pending", "type", "both"]


def is_sqlite(store: OperationStore) -> bool:
    return store.engine.dialect.name == "sqlite"


@pytest.mark.parametrize(("filters", "index"), FILTERS, ids=FILTER_IDS)
@pytest.mark.parametrize("deep", [False, True], ids=["first", "cursor"])
def test_each_list_filter_pages_by_an_index_in_order(
    big_store: OperationStore, filters: dict[str, Any], index: str, deep: bool
) -> None:
    """The page query of every filter, first page or after a cursor, is an index range
    scan in listing order (no table scan, no sort), and its count is bounded by the
    cap: SQLite EXPLAIN QUERY PLAN and PostgreSQL EXPLAIN of what the store sends."""
    after = None
    if deep:
        after = ListPosition(created_at=START + datetime.timedelta(hours=1), id="op-00010000")

    page, count = plans(big_store, lambda: big_store.list(limit=50, after=after, **filters))

    if is_sqlite(big_store):
        assert index in page, page
        assert "TEMP B-TREE" not in page, page  # no sort
        assert "USING INDEX" in page or "USING COVERING INDEX" in page, page
        assert "USING COVERING INDEX" in count or "USING INDEX" in count, count
    else:
        # PostgreSQL weighs its statistics: for a common value, walking the order
        # index and filtering beats the filter's index; either way an ordered index
        # scan that stops at the page, never a sort.
        assert "Index Scan Backward using ix_operations_" in page, page
        if filters.get("status") is OperationStatus.PENDING:  # selective: its own index
            assert index in page, page
        assert "Sort" not in page, page
        assert "Seq Scan" not in page, page
        # The count stops at the cap (a bounded scan, whatever it reads).
        assert count.splitlines()[1].strip().startswith("->  Limit"), count


def test_a_retention_batch_finds_its_rows_by_the_finish_time_index(
    big_store: OperationStore,
) -> None:
    """The batch of expired operations is read through ix_operations_finished, and
    deleted by primary key (no table scan)."""
    cutoff = START + datetime.timedelta(minutes=5)

    select, *deletes = plans(big_store, lambda: big_store.delete_finished_batch(cutoff, limit=100))

    assert "ix_operations_finished" in select, select
    for text in deletes:
        assert "Seq Scan on operations" not in text, text
        assert "SCAN operations\n" not in text + "\n", text


def test_a_retention_batch_uses_the_finish_time_index_without_statistics(
    tmp_path: Path,
) -> None:
    """On SQLite without planner statistics (the backend never runs ANALYZE), the batch
    is still read through ix_operations_finished and deleted by primary key: a plan
    through the status index reads every finished row of the table for each batch
    (over a second per batch at a million rows, the delete holding the write lock)."""
    factory = open_factory("sqlite", tmp_path)
    try:
        store = factory.open()
        insert_rows(store, [row(i) for i in range(2_000)])
        cutoff = START + datetime.timedelta(minutes=5)

        select, *deletes = plans(store, lambda: store.delete_finished_batch(cutoff, limit=100))

        assert "ix_operations_finished" in select, select
        assert "TEMP B-TREE" not in select, select  # read in finish order, no sort
        for text in deletes:
            assert "ix_operations_status" not in text, text
            assert "SCAN operations\n" not in text + "\n", text
    finally:
        factory.finish()


@pytest.mark.parametrize("query", ["busy_workers", "unreported_since"])
def test_the_busy_set_and_the_orphan_candidates_are_found_by_the_status_index(
    big_store: OperationStore, query: str
) -> None:
    """Each dispatch round's busy set and each orphan check's candidates are one query
    that finds the running rows through the status index (no table scan), whatever
    else the table holds."""
    cutoff = START + datetime.timedelta(minutes=5)
    call = {
        "busy_workers": big_store.busy_workers,
        "unreported_since": lambda: big_store.unreported_since(cutoff),
    }[query]

    (plan,) = plans(big_store, call)

    if is_sqlite(big_store):
        assert "ix_operations_status_created_id (status=?)" in plan, plan
        assert "SCAN operations" not in plan, plan
    else:
        assert "ix_operations_status_created_id" in plan, plan
        assert "Seq Scan" not in plan, plan


@pytest.mark.parametrize("query", ["busy_workers", "unreported_since"])
def test_the_busy_set_and_the_orphan_candidates_use_the_status_index_without_statistics(
    tmp_path: Path, query: str
) -> None:
    """On SQLite without planner statistics (the backend never runs ANALYZE) too."""
    factory = open_factory("sqlite", tmp_path)
    try:
        store = factory.open()
        insert_rows(store, [row(i) for i in range(2_000)])
        cutoff = START + datetime.timedelta(minutes=5)
        call = {
            "busy_workers": store.busy_workers,
            "unreported_since": lambda: store.unreported_since(cutoff),
        }[query]

        (plan,) = plans(store, call)

        assert "ix_operations_status_created_id (status=?)" in plan, plan
        assert "SCAN operations" not in plan, plan
    finally:
        factory.finish()
