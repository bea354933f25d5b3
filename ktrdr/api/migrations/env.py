"""Alembic's environment for ktrdr: run the revisions on the connection it is handed.

Loaded by Alembic (never imported) when :mod:`ktrdr.api.migrations.runner` upgrades
or stamps a database. The runner owns the connection and its transaction (and the
lock that keeps two upgrades apart); this file only configures the context. There is
no offline (``--sql``) mode and no URL of its own, so nothing here can reach a
database the settings did not name.
"""

from __future__ import annotations

from alembic import context

from ktrdr.errors import StoreError

config = context.config
connection = config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    message = "ktrdr migrations run through `ktrdr db upgrade` or the backend's start"
    raise StoreError(message)

context.configure(
    connection=connection,
    target_metadata=config.attributes.get("target_metadata"),
    version_table_schema=config.attributes.get("schema"),
    render_as_batch=True,  # SQLite alters tables by copying them
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
