"""Schema migrations of the operations database (Alembic, configured in code).

The backend upgrades its database to the newest revision at every start
(:meth:`ktrdr.api.store.OperationStore.open`); ``ktrdr db upgrade`` and ``ktrdr db
current`` do it, and show it, by hand. No ``alembic.ini`` is read: the connection
comes from the validated ``DatabaseSettings`` and is handed to ``env.py``.

Revision ``0001`` is the schema ktrdr 0.4.0 created with ``create_all``; a database
made by 0.4.0 (its tables, no ``alembic_version``) is recognised, stamped as ``0001``
and upgraded with its operations kept.

Adding a revision: change the tables in ``ktrdr/api/store.py``, then add
``versions/NNNN_what_changed.py`` with ``revision = "NNNN"`` and ``down_revision``
set to the previous one, its ``upgrade()`` using :func:`target_schema` for every
``schema=`` argument and ``op.batch_alter_table`` for changes SQLite cannot make in
place. ``tests/unit/api/migrations`` fails until the tables and the revisions agree.
"""

from ktrdr.api.migrations.runner import (
    BASELINE_REVISION,
    SchemaState,
    SchemaUpgrade,
    head_revision,
    schema_state,
    target_schema,
    upgrade_schema,
)

__all__ = [
    "BASELINE_REVISION",
    "SchemaState",
    "SchemaUpgrade",
    "head_revision",
    "schema_state",
    "target_schema",
    "upgrade_schema",
]
