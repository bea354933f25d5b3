"""A database as ktrdr 0.4.0 left it: ``create_all`` of its table, no ``alembic_version``.

Frozen copy of 0.4.0's table and time type (never imported from ``ktrdr.api.store``),
so the upgrade tests keep building the same old database however the live tables
change. Holds one pending and one finished operation, written as 0.4.0 wrote them.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

UTC = datetime.timezone.utc
PENDING_ID = "0a0a0a0a0a0a4a0a8a0a0a0a0a0a0a01"
FINISHED_ID = "0a0a0a0a0a0a4a0a8a0a0a0a0a0a0a02"
CREATED = datetime.datetime(2026, 4, 1, 9, 0, 0, 250000, tzinfo=UTC)
FINISHED_AT = datetime.datetime(2026, 4, 1, 9, 5, 0, tzinfo=UTC)
FINISHED_RESULT = {"final_equity": 10123.5, "trades": 17}
PENDING_PARAMETERS = {"bars": 500, "seed": 4}


class _UtcDateTime0_4_0(sa.types.TypeDecorator[datetime.datetime]):
    """0.4.0's time type: naive UTC on SQLite, aware elsewhere."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(
        self, value: datetime.datetime | None, dialect: Dialect
    ) -> datetime.datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value


def metadata_0_4_0(schema: str | None = None) -> sa.MetaData:
    """0.4.0's one table and three indexes."""
    metadata = sa.MetaData(schema=schema)
    sa.Table(
        "operations",
        metadata,
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("parameters", sa.JSON(none_as_null=True), nullable=False),
        sa.Column("progress", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("result", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("worker_id", sa.String(128), nullable=True),
        sa.Column("resume", sa.Boolean, nullable=False, default=False),
        sa.Column("created_at", _UtcDateTime0_4_0, nullable=False),
        sa.Column("started_at", _UtcDateTime0_4_0, nullable=True),
        sa.Column("finished_at", _UtcDateTime0_4_0, nullable=True),
        sa.Column("last_reported_at", _UtcDateTime0_4_0, nullable=True),
        sa.Index("ix_operations_status_created", "status", "created_at"),
        sa.Index("ix_operations_type_status", "type", "status"),
        sa.Index("ix_operations_finished", "finished_at"),
    )
    return metadata


def create_0_4_0_database(url: sa.URL | str, *, schema: str | None = None) -> None:
    """Create the 0.4.0 schema at ``url`` and store a pending and a finished backtest."""
    metadata = metadata_0_4_0(schema)
    table = metadata.tables[f"{schema}.operations" if schema else "operations"]
    url = sa.make_url(url)
    if url.get_backend_name() == "sqlite" and url.database:
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url)
    try:
        metadata.create_all(engine, checkfirst=True)
        with engine.begin() as conn:
            # One statement per row: an executemany would take the first row's columns.
            for row in (
                {
                    "id": PENDING_ID,
                    "type": "backtest",
                    "status": "pending",
                    "parameters": PENDING_PARAMETERS,
                    "resume": False,
                    "created_at": CREATED,
                },
                {
                    "id": FINISHED_ID,
                    "type": "backtest",
                    "status": "completed",
                    "parameters": {"bars": 500, "seed": 2},
                    "progress": {"percent": 100.0},
                    "result": FINISHED_RESULT,
                    "worker_id": "backtest-1",
                    "resume": False,
                    "created_at": CREATED - datetime.timedelta(minutes=10),
                    "started_at": CREATED - datetime.timedelta(minutes=9),
                    "finished_at": FINISHED_AT,
                    "last_reported_at": FINISHED_AT,
                },
            ):
                conn.execute(sa.insert(table).values(row))
    finally:
        engine.dispose()
