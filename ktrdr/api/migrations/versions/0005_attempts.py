"""Attempts, retries and timeouts: five columns on ``operations``.

- ``attempt``: the number of the operation's latest dispatch (0: never dispatched);
  heartbeats, reports and checkpoints carry it and only the current one is accepted.
- ``lost_attempts``: attempts lost with their worker since the operation was created
  or last resumed by hand (``KTRDR_OPS_MAX_ATTEMPTS`` bounds it).
- ``timeout_s``: how long one attempt may run (None: no limit).
- ``deadline_at``: when the running attempt times out (None: no limit).
- ``progressed_at``: when the running attempt's progress last changed (stall check).

A database upgraded from 0.4.0 keeps its operations: the ones that ran (or were queued
to resume) are at attempt 1, the ones that never left the queue at attempt 0; running
ones count their progress from their last report. Written out literally, like 0001.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ktrdr.api.migrations.runner import target_schema

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

_COLUMNS = ("attempt", "lost_attempts", "timeout_s", "deadline_at", "progressed_at")


def upgrade() -> None:
    """Add the columns and give existing operations their attempt numbers."""
    schema = target_schema()
    op.add_column(
        "operations",
        sa.Column("attempt", sa.Integer, nullable=False, server_default=sa.text("0")),
        schema=schema,
    )
    op.add_column(
        "operations",
        sa.Column("lost_attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        schema=schema,
    )
    op.add_column("operations", sa.Column("timeout_s", sa.Float, nullable=True), schema=schema)
    op.add_column(
        "operations",
        sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=True),
        schema=schema,
    )
    op.add_column(
        "operations",
        sa.Column("progressed_at", sa.DateTime(timezone=True), nullable=True),
        schema=schema,
    )
    table = sa.table(
        "operations",
        sa.column("status", sa.String),
        sa.column("resume", sa.Boolean),
        sa.column("started_at", sa.DateTime(timezone=True)),
        sa.column("last_reported_at", sa.DateTime(timezone=True)),
        sa.column("attempt", sa.Integer),
        sa.column("progressed_at", sa.DateTime(timezone=True)),
        schema=schema,
    )
    op.execute(
        sa.update(table)
        .where(sa.or_(table.c.started_at.is_not(None), table.c.resume == sa.true()))
        .values(attempt=1)
    )
    op.execute(
        sa.update(table)
        .where(table.c.status == "running")
        .values(progressed_at=sa.func.coalesce(table.c.last_reported_at, table.c.started_at))
    )


def downgrade() -> None:
    """Drop the columns (attempt numbers and timeouts are lost)."""
    with op.batch_alter_table("operations", schema=target_schema()) as batch:
        for name in _COLUMNS:
            batch.drop_column(name)
