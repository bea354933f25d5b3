"""Series points of operations (loss per epoch, equity per bar): one row per point.

Written out literally, never imported from the live table definition, so later
changes to ``ktrdr/api/series_store.py`` cannot change what this revision creates.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ktrdr.api.migrations.runner import target_schema

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create the operation_series table (its primary key is its only index)."""
    op.create_table(
        "operation_series",
        sa.Column("operation_id", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("x", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("y", sa.Float, nullable=False),
        schema=target_schema(),
    )


def downgrade() -> None:
    """Drop the operation_series table (every operation keeps its other data)."""
    op.drop_table("operation_series", schema=target_schema())
