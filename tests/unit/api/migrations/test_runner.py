"""Schema migrations on SQLite and PostgreSQL: fresh databases, 0.4.0 databases, agreement."""

from __future__ import annotations

import datetime
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Engine
from support.schema_0_4_0 import (
    CREATED,
    FINISHED_AT,
    FINISHED_ID,
    FINISHED_RESULT,
    PENDING_ID,
    PENDING_PARAMETERS,
    create_0_4_0_database,
    metadata_0_4_0,
)

from ktrdr.api.migrations import (
    BASELINE_REVISION,
    SchemaUpgrade,
    head_revision,
    schema_state,
    upgrade_schema,
)
from ktrdr.api.migrations.runner import _config
from ktrdr.api.store import OperationStore, make_engine
from ktrdr.errors import StoreError
from ktrdr.protocol import OperationStatus

if TYPE_CHECKING:
    from tests.unit.api.conftest import StoreFactory


@pytest.fixture
def engine(store_factory: StoreFactory) -> Iterator[Engine]:
    """An engine on this test's empty database (SQLite file or PostgreSQL schema)."""
    engine = make_engine(store_factory.url)
    yield engine
    engine.dispose()


def _differences(engine: Engine, metadata: sa.MetaData) -> list[Any]:
    """What Alembic's autogenerate would change to make the database match ``metadata``."""
    schema = metadata.schema

    def ours(name: str | None, type_: str, _parent: Any) -> bool:
        return type_ != "schema" or name == schema

    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "include_schemas": schema is not None,
                "include_name": ours,
                "version_table_schema": schema,
            },
        )
        return list(compare_metadata(context, metadata))


def _upgrade_to(engine: Engine, schema: str | None, revision: str) -> None:
    """Run the revisions up to ``revision`` only (the runner always goes to head)."""
    with engine.begin() as conn:
        command.upgrade(_config(conn, schema=schema), revision)


def _version_rows(engine: Engine, schema: str | None) -> list[str]:
    table = sa.table("alembic_version", sa.column("version_num"), schema=schema)
    with engine.connect() as conn:
        return list(conn.execute(sa.select(table.c.version_num)).scalars())


def test_the_models_and_the_migrations_agree(store_factory: StoreFactory, engine: Engine) -> None:
    """After every revision, autogenerate finds nothing between the store's tables and the database.

    Fails when a column, index or type is changed in store.py without a revision.
    """
    upgrade_schema(engine, schema=store_factory.schema)
    tables = OperationStore(engine=engine, schema=store_factory.schema).metadata
    assert _differences(engine, tables) == []


def test_the_agreement_check_sees_a_missing_revision(
    store_factory: StoreFactory, engine: Engine
) -> None:
    """A column in the tables that no revision adds is reported (the check above has teeth)."""
    upgrade_schema(engine, schema=store_factory.schema)
    tables = OperationStore(engine=engine, schema=store_factory.schema).metadata
    table = next(iter(tables.tables.values()))
    table.append_column(sa.Column("in_no_revision", sa.Integer, nullable=True))
    differences = _differences(engine, tables)
    assert [d[0] for d in differences] == ["add_column"]
    assert differences[0][3].name == "in_no_revision"


def test_the_baseline_is_the_0_4_0_schema(store_factory: StoreFactory, engine: Engine) -> None:
    """Revision 0001 creates exactly what 0.4.0's create_all created (later revisions aside)."""
    with engine.begin() as conn:
        command.upgrade(_config(conn, schema=store_factory.schema), BASELINE_REVISION)
    assert _differences(engine, metadata_0_4_0(store_factory.schema)) == []


def test_a_fresh_database_is_created_at_head(store_factory: StoreFactory, engine: Engine) -> None:
    """An empty database reports no revision, then is created at head, the version stored once."""
    schema = store_factory.schema
    before = schema_state(engine, schema=schema)

    done = upgrade_schema(engine, schema=schema)

    assert (before.revision, before.unversioned, before.current) == (None, False, False)
    assert before.describe() == f"none (empty; an upgrade creates the schema at {head_revision()})"
    assert done == SchemaUpgrade(before=None, after=head_revision(), stamped=False)
    assert done.describe() == f"created the schema at revision {head_revision()}"
    assert schema_state(engine, schema=schema).describe() == f"{head_revision()} (head)"
    assert _version_rows(engine, schema) == [head_revision()]


def test_upgrading_twice_changes_nothing(store_factory: StoreFactory) -> None:
    """A second upgrade (every backend start) keeps the operations and the version."""
    store = store_factory.open()
    record = store.create(
        operation_type="training",
        parameters={"seed": 1},
        now=datetime.datetime(2026, 5, 1, tzinfo=datetime.timezone.utc),
    )

    again = store.create_schema()

    assert again == SchemaUpgrade(before=head_revision(), after=head_revision(), stamped=False)
    assert again.describe() == f"schema is current at revision {head_revision()}"
    assert store.get(record.id) == record


def test_a_0_4_0_database_is_stamped_and_upgraded_with_its_operations(
    store_factory: StoreFactory, engine: Engine
) -> None:
    """Tables without alembic_version: stamped 0001, upgraded; pending queued, finished listed."""
    schema = store_factory.schema
    create_0_4_0_database(store_factory.url, schema=schema)
    before = schema_state(engine, schema=schema)

    store = store_factory.open()

    assert (before.revision, before.unversioned) == (None, True)
    assert before.describe().startswith("none (made by ktrdr 0.4.0; an upgrade stamps it 0001")
    assert _version_rows(engine, schema) == [head_revision()]
    assert [(r.id, r.parameters, r.created_at) for r in store.pending()] == [
        (PENDING_ID, PENDING_PARAMETERS, CREATED)
    ]
    finished = store.get(FINISHED_ID)
    assert (finished.status, finished.result, finished.finished_at) == (
        OperationStatus.COMPLETED,
        FINISHED_RESULT,
        FINISHED_AT,
    )
    assert store.list().total == 2
    assert (store.get(PENDING_ID).attempt, finished.attempt) == (0, 1)  # 0004's numbering


def test_the_stamp_is_reported(store_factory: StoreFactory, engine: Engine) -> None:
    """The upgrade of a 0.4.0 database says it recognised and stamped it."""
    create_0_4_0_database(store_factory.url, schema=store_factory.schema)

    done = upgrade_schema(engine, schema=store_factory.schema)

    assert done == SchemaUpgrade(before=None, after=head_revision(), stamped=True)
    assert done.describe().startswith("recognised a ktrdr 0.4.0 database, stamped it 0001")
    assert BASELINE_REVISION == "0001"


def test_a_revision_from_a_newer_ktrdr_is_refused(
    store_factory: StoreFactory, engine: Engine
) -> None:
    """A database at an unknown revision is not touched: the error says a newer ktrdr did it."""
    schema = store_factory.schema
    upgrade_schema(engine, schema=schema)
    table = sa.table("alembic_version", sa.column("version_num"), schema=schema)
    with engine.begin() as conn:
        conn.execute(sa.update(table).values(version_num="9999"))

    with pytest.raises(StoreError, match="revision '9999', which this ktrdr does not know"):
        upgrade_schema(engine, schema=schema)
    with pytest.raises(StoreError, match="a newer ktrdr upgraded it"):
        schema_state(engine, schema=schema)
    assert _version_rows(engine, schema) == ["9999"]


def test_an_operations_table_ktrdr_did_not_create_is_refused(
    store_factory: StoreFactory, engine: Engine
) -> None:
    """A foreign ``operations`` table is never stamped or altered; the columns are named."""
    schema = store_factory.schema
    foreign = sa.MetaData(schema=schema)
    sa.Table("operations", foreign, sa.Column("id", sa.Integer, primary_key=True))
    foreign.create_all(engine)

    with pytest.raises(StoreError, match="missing columns: created_at, error, finished_at"):
        upgrade_schema(engine, schema=schema)
    assert "alembic_version" not in sa.inspect(engine).get_table_names(schema=schema)


def test_concurrent_upgrades_create_the_schema_once(store_factory: StoreFactory) -> None:
    """Four processes' worth of engines upgrading at once: one creates, the others find it done."""
    engines = [make_engine(store_factory.url) for _ in range(4)]
    results: list[SchemaUpgrade] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(engines))

    def upgrade(engine: Engine) -> None:
        start.wait()
        try:
            results.append(upgrade_schema(engine, schema=store_factory.schema))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=upgrade, args=(e,)) for e in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert errors == []
        assert sorted(r.before is None for r in results) == [False, False, False, True]
        assert _version_rows(engines[0], store_factory.schema) == [head_revision()]
    finally:
        for engine in engines:
            engine.dispose()


def test_revision_0004_numbers_the_attempts_of_existing_operations(
    store_factory: StoreFactory, engine: Engine
) -> None:
    """Upgrading a 0.4.0 database: operations that ran or wait to resume are at attempt 1,
    the others at 0; a running one counts its progress from its last report; no timeouts.
    """
    schema = store_factory.schema
    _upgrade_to(engine, schema, BASELINE_REVISION)
    table = metadata_0_4_0(schema).tables[f"{schema}.operations" if schema else "operations"]
    reported = CREATED + datetime.timedelta(minutes=3)
    rows = {
        "queued": {"status": "pending", "resume": False},
        "to-resume": {"status": "pending", "resume": True},
        "running": {
            "status": "running",
            "resume": False,
            "worker_id": "w-1",
            "started_at": CREATED,
            "last_reported_at": reported,
        },
        "cancelled-early": {"status": "cancelled", "resume": False, "finished_at": CREATED},
    }
    with engine.begin() as conn:
        for operation_id, row in rows.items():
            values = {"id": operation_id, "type": "training", "parameters": {}}
            conn.execute(sa.insert(table).values(created_at=CREATED, **values, **row))

    store = store_factory.open()

    attempts = {r: store.get(r).attempt for r in rows}
    assert attempts == {"queued": 0, "to-resume": 1, "running": 1, "cancelled-early": 0}
    running = store.get("running")
    assert (running.progressed_at, running.deadline_at, running.timeout_s) == (reported, None, None)
    assert {store.get(r).lost_attempts for r in rows} == {0}
    assert store.current_attempt("running").accepts(worker_id="w-1", attempt=1)
