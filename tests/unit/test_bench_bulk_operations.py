"""The benchmarks' bulk loader writes rows the store reads as its own, in the spread's order.

``benchmarks/bench_operations_scale.py`` times the real backend over a million rows
loaded by ``benchmarks/bulk_operations.py`` straight through the driver; its figures
mean something only if those rows are what the store would have written (same JSON,
same time format, so the listing order and the retention cutoff see them right).
"""

from __future__ import annotations

import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from support.store_factory import BACKENDS, open_factory

from ktrdr.api.operations import to_view
from ktrdr.protocol import OperationStatus, OperationType

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
UTC = datetime.timezone.utc
NEWEST = datetime.datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def bulk(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``benchmarks/bulk_operations.py``, imported as the benchmark scripts import it."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import bulk_operations

    return bulk_operations


def test_spread_counts_the_rows_finished_before_a_cutoff(bulk: ModuleType) -> None:
    """``finished_before`` counts exactly the rows whose finish time is before the cutoff."""
    spread = bulk.Spread(total=1000, newest=NEWEST, span=datetime.timedelta(days=10))
    finished = [spread.created_at(i) + bulk.RAN_FOR for i in range(1000)]

    for cutoff in (
        finished[0],
        finished[0] + datetime.timedelta(microseconds=1),
        finished[499],
        finished[499] + datetime.timedelta(seconds=1),
        finished[-1] + datetime.timedelta(days=1),
        NEWEST - datetime.timedelta(days=30),
    ):
        assert spread.finished_before(cutoff) == sum(1 for f in finished if f < cutoff)


@pytest.mark.parametrize("backend", BACKENDS)
def test_loaded_rows_read_back_through_the_store_newest_first(
    bulk: ModuleType, backend: str, tmp_path: Path
) -> None:
    """Rows loaded by the driver are listed by the store in the spread's order, with the
    mix of types and statuses, valid views, and the retention count the spread expects."""
    factory = open_factory(backend, tmp_path)
    try:
        store = factory.open()
        loader = bulk.BulkLoader(factory.url, schema=factory.schema)
        spread = bulk.Spread(total=300, newest=NEWEST, span=datetime.timedelta(days=3))
        loader.load(spread, 0, 100)
        loader.load(spread, 100, 300, chunk=64)

        listed: list[Any] = []
        after = None
        while True:
            page = store.list(limit=50, after=after)
            listed += page.items
            if not page.more:
                break
            after = bulk_position(page.items[-1])

        assert len(listed) == 300
        assert len({record.id for record in listed}) == 300
        assert [r.created_at for r in listed] == [spread.created_at(i) for i in range(299, -1, -1)]
        assert [(r.type, r.status) for r in listed] == [
            bulk.row_kinds(i) for i in range(299, -1, -1)
        ]
        assert {r.status for r in listed} == {
            OperationStatus.COMPLETED,
            OperationStatus.FAILED,
            OperationStatus.CANCELLED,
        }
        assert {r.type for r in listed} == set(OperationType)
        for record in listed:
            to_view(record)  # what the API answers: valid progress, parameters, times
            assert record.finished_at == record.created_at + bulk.RAN_FOR
        cutoff = spread.created_at(120)
        assert loader.count_finished_before(cutoff) == spread.finished_before(cutoff)
    finally:
        factory.finish()


def bulk_position(record: Any) -> Any:
    from ktrdr.api.store import ListPosition

    return ListPosition(created_at=record.created_at, id=record.id)
