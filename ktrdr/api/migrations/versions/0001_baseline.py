"""Baseline: the operations table as ktrdr 0.4.0 created it (``create_all``).

Written out literally, never imported from the live table definition, so later
changes to ``ktrdr/api/store.py`` cannot change what this revision creates.

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ktrdr.api.migrations.runner import target_schema

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create the operations table and its three indexes."""
    schema = target_schema()
    op.create_table(
        "operations",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("parameters", sa.JSON(none_as_null=True), nullable=False),
        sa.Column("progress", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("result", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("worker_id", sa.String(128), nullable=True),
        sa.Column("resume", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_reported_at", sa.DateTime(timezone=True), nullable=True),
        schema=schema,
    )
    op.create_index(
        "ix_operations_status_created", "operations", ["status", "created_at"], schema=schema
    )
    op.create_index("ix_operations_type_status", "operations", ["type", "status"], schema=schema)
    op.create_index("ix_operations_finished", "operations", ["finished_at"], schema=schema)


def downgrade() -> None:
    """Drop the operations table (and every operation in it)."""
    op.drop_table("operations", schema=target_schema())
