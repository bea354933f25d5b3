"""Operations remember the trace of their current attempt (``trace_parent``).

The W3C ``traceparent`` of the span that began the attempt (the create or resume
request, or the dispatch of an attempt begun without one), so that spans made later
and elsewhere (the dispatch, the worker, the job) join the same trace. NULL when
tracing is off, and for operations created before this revision.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ktrdr.api.migrations.runner import target_schema

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add the nullable ``trace_parent`` column (existing operations have no trace)."""
    op.add_column(
        "operations",
        sa.Column("trace_parent", sa.String(55), nullable=True),
        schema=target_schema(),
    )


def downgrade() -> None:
    """Drop ``trace_parent`` (the traces themselves live in the tracing backend)."""
    with op.batch_alter_table("operations", schema=target_schema()) as batch:
        batch.drop_column("trace_parent")
