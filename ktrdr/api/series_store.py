"""Where operations' series points live: one row per (operation, series, step).

The operations store (``ktrdr.api.store``) owns the engine and the transactions; this
module holds the table and the statements on it, run on the connection or the
:class:`~ktrdr.api.store_driver.Rows` the store hands in. The upsert is built once per
store (:func:`upsert_statement`), so a write only binds values: on SQLite it runs on the
store's driver path like the transition it comes with. A point is written with an upsert
keyed by operation, series name and step, so the same point arriving twice (a heartbeat
retried, a resumed job re-sending its history, the final report repeating everything)
leaves one row with the latest value. Reads return each series ordered by step. Nothing
here checks who may write: the store does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from ktrdr.api.store_driver import Rows

__all__ = [
    "SERIES_TABLE_NAME",
    "Points",
    "define_series_table",
    "delete_series",
    "merge_points",
    "read_series",
    "upsert_points",
    "upsert_statement",
]

SERIES_TABLE_NAME = "operation_series"

#: Points by series name: ``{"loss": [(1, 0.69), (2, 0.66)], ...}``.
Points = Mapping[str, Sequence[tuple[int, float]]]


def define_series_table(metadata: sa.MetaData) -> sa.Table:
    """The series table in ``metadata`` (the migrations must create exactly this)."""
    return sa.Table(
        SERIES_TABLE_NAME,
        metadata,
        sa.Column("operation_id", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("x", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("y", sa.Float, nullable=False),
    )


def merge_points(
    earlier: Points | None, later: Points | None
) -> dict[str, list[tuple[int, float]]]:
    """``earlier`` and ``later`` together; for a step in both, ``later``'s value."""
    merged: dict[str, dict[int, float]] = {}
    for points in (earlier, later):
        for name, values in (points or {}).items():
            merged.setdefault(name, {}).update((int(x), float(y)) for x, y in values)
    return {name: sorted(values.items()) for name, values in merged.items()}


def upsert_statement(table: sa.Table, dialect_name: str) -> sa.Insert:
    """The upsert of one point into ``table`` for this dialect (``INSERT ... ON CONFLICT
    (operation_id, name, x) DO UPDATE SET y``); executed with one parameter set per point.
    """
    keys = [table.c.operation_id, table.c.name, table.c.x]
    if dialect_name == "postgresql":
        on_postgres = postgresql.insert(table)
        return on_postgres.on_conflict_do_update(
            index_elements=keys, set_={"y": on_postgres.excluded.y}
        )
    on_sqlite = sqlite.insert(table)
    return on_sqlite.on_conflict_do_update(index_elements=keys, set_={"y": on_sqlite.excluded.y})


def upsert_points(rows: Rows, statement: sa.Insert, batch: Iterable[tuple[str, Points]]) -> int:
    """Write ``(operation_id, points)`` pairs with ``statement`` (:func:`upsert_statement`);
    a step already stored takes the new value.

    Duplicates within the batch are folded first (PostgreSQL refuses one statement
    touching a row twice). Returns how many points were written.
    """
    points_by_key: dict[tuple[str, str, int], float] = {}
    for operation_id, points in batch:
        for name, values in points.items():
            for x, y in values:
                points_by_key[(operation_id, name, int(x))] = float(y)
    if not points_by_key:
        return 0
    params = [
        {"operation_id": o, "name": n, "x": x, "y": y} for (o, n, x), y in points_by_key.items()
    ]
    rows.execute_many(statement, params)
    return len(params)


def read_series(
    conn: Connection, table: sa.Table, operation_id: str
) -> dict[str, list[tuple[int, float]]]:
    """Every stored point of ``operation_id`` by series name (names and steps ascending)."""
    query = (
        sa.select(table.c.name, table.c.x, table.c.y)
        .where(table.c.operation_id == operation_id)
        .order_by(table.c.name, table.c.x)
    )
    series: dict[str, list[tuple[int, float]]] = {}
    for name, x, y in conn.execute(query):
        series.setdefault(name, []).append((int(x), float(y)))
    return series


def delete_series(conn: Connection, table: sa.Table, operation_ids: sa.Select[tuple[str]]) -> None:
    """Delete the points of the operations ``operation_ids`` selects."""
    conn.execute(sa.delete(table).where(table.c.operation_id.in_(operation_ids)))
