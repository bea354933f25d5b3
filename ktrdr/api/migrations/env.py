"""Alembic's environment for ktrdr: run the revisions on the connection it is handed.

Loaded by Alembic (by path; importing it runs nothing) when
:mod:`ktrdr.api.migrations.runner` upgrades or stamps a database. The runner owns the
connection and its transaction (and the lock that keeps two upgrades apart); this
file only configures the context. There is no offline (``--sql``) mode and no URL of
its own, so nothing here can reach a database the settings did not name.
"""

from __future__ import annotations

from alembic import context

from ktrdr.errors import StoreError


def run_migrations() -> None:
    """Configure Alembic's context on the handed connection and run the revisions."""
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


# Alembic loads this file by path (under another module name) and expects it to run;
# imported as part of the package (documentation, import checks) it only defines.
if __name__ != "ktrdr.api.migrations.env":
    run_migrations()
