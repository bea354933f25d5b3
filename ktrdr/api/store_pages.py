"""The statements behind a page of operations: keyset order, filters, a capped count.

Listings are ordered newest first by ``(created_at, id)``. A page after another is
found by its position (the last item's creation time and id) with a range the
indexes serve, never by skipping rows: ``created_at <= t AND (created_at < t OR
id < i)`` reads only the page, however deep it is. Each filter combination (none,
status, type, both) has an index that ends in ``(created_at, id)`` (revision 0004),
so every page is an index range scan in order, on SQLite and PostgreSQL alike.

Counting every match would be a scan of up to the whole table on every page, so
the total is counted up to a cap and reported as unknown above it. This module only
builds statements; :class:`~ktrdr.api.store.OperationStore` runs them.
"""

from __future__ import annotations

import datetime
from typing import Any

import attrs
import sqlalchemy as sa

from ktrdr.protocol import MAX_COUNTED, OperationStatus, OperationType

__all__ = [
    "MAX_COUNTED",
    "ListPosition",
    "count_statement",
    "filter_conditions",
    "page_statement",
]


@attrs.frozen(kw_only=True)
class ListPosition:
    """Where a page ended: its last item's creation time and id (the next page is older)."""

    created_at: datetime.datetime
    id: str


def filter_conditions(
    table: sa.Table,
    *,
    status: OperationStatus | None,
    operation_type: OperationType | None,
) -> list[Any]:
    """The WHERE terms of the filters that are set."""
    conditions: list[Any] = []
    if status is not None:
        conditions.append(table.c.status == OperationStatus(status).value)
    if operation_type is not None:
        conditions.append(table.c.type == OperationType(operation_type).value)
    return conditions


def page_statement(
    table: sa.Table,
    *,
    conditions: list[Any],
    limit: int,
    offset: int = 0,
    after: ListPosition | None = None,
    include_result: bool = True,
) -> sa.Select[Any]:
    """Up to ``limit`` rows newest first, after ``after`` (or skipping ``offset``)."""
    columns: list[Any] = list(table.c)
    if not include_result:
        columns = [c for c in columns if c.name != "result"] + [sa.null().label("result")]
    where = list(conditions)
    if after is not None:
        created = table.c.created_at
        where.append(created <= after.created_at)
        where.append(sa.or_(created < after.created_at, table.c.id < after.id))
    query = (
        sa.select(*columns)
        .where(*where)
        .order_by(table.c.created_at.desc(), table.c.id.desc())
        .limit(limit)
    )
    return query.offset(offset) if offset else query


def count_statement(table: sa.Table, *, conditions: list[Any], cap: int) -> sa.Select[Any]:
    """How many rows match, counting at most ``cap`` (a bounded index scan)."""
    matching = sa.select(sa.literal(1).label("one")).select_from(table).where(*conditions)
    bounded = matching.limit(cap).subquery("matching")
    return sa.select(sa.func.count()).select_from(bounded)
