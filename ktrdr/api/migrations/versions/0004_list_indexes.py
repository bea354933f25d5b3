"""Indexes for listing operations at any table size: one per filter, in listing order.

``GET /api/v1/operations`` lists newest first by ``(created_at, id)``, optionally
filtered by status, by type or by both. Each combination gets an index ending in
``(created_at, id)``, so a page (the first or one after a cursor) is an ordered index
range scan instead of a scan and sort of the table. The two 0.4.0 indexes they
supersede, ``(status, created_at)`` and ``(type, status)``, are dropped (each is a
prefix of a new one). Written out literally, like 0001.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

from ktrdr.api.migrations.runner import target_schema

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

_NEW = {
    "ix_operations_created_id": ["created_at", "id"],
    "ix_operations_status_created_id": ["status", "created_at", "id"],
    "ix_operations_type_created_id": ["type", "created_at", "id"],
    "ix_operations_type_status_created_id": ["type", "status", "created_at", "id"],
}
_OLD = {
    "ix_operations_status_created": ["status", "created_at"],
    "ix_operations_type_status": ["type", "status"],
}


def upgrade() -> None:
    """Create the listing indexes, then drop the two they supersede."""
    schema = target_schema()
    for name, columns in _NEW.items():
        op.create_index(name, "operations", columns, schema=schema)
    for name in _OLD:
        op.drop_index(name, table_name="operations", schema=schema)


def downgrade() -> None:
    """Back to the 0.4.0 indexes."""
    schema = target_schema()
    for name, columns in _OLD.items():
        op.create_index(name, "operations", columns, schema=schema)
    for name in _NEW:
        op.drop_index(name, table_name="operations", schema=schema)
