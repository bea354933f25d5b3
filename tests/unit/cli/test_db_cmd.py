"""`ktrdr db current|upgrade` on SQLite and PostgreSQL: output, 0.4.0 databases, errors.

The commands read os.environ in production; tests hand them a mapping as the click
context object instead, so no test touches os.environ.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from support.postgres import backend_database_env, fresh_database
from support.processes import base_env, free_port, run_ktrdr
from support.schema_0_4_0 import FINISHED_ID, PENDING_ID, create_0_4_0_database

from ktrdr.api.migrations import head_revision
from ktrdr.api.store import OperationStore
from ktrdr.cli.db_cmd import register
from ktrdr.protocol import OperationStatus

ACK = {"KTRDR_ACKNOWLEDGE_INSECURE_DEFAULTS": "true"}
BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


class Database:
    """One test's database: the backend's variables for it and its URL."""

    def __init__(self, environ: dict[str, str], url: sa.URL, shown: str) -> None:
        self.environ = environ
        self.url = url
        self.shown = shown


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A database that does not exist yet (SQLite) or is empty (a new PostgreSQL database)."""
    if request.param == "sqlite":
        path = tmp_path / "data" / "ktrdr.db"
        url = sa.URL.create("sqlite+pysqlite", database=str(path))
        yield Database({**ACK, "KTRDR_DB_PATH": str(path)}, url, f"sqlite+pysqlite:///{path}")
        return
    with fresh_database("ktrdr_db_cmd") as url:
        environ = {**ACK, **backend_database_env(url)}
        shown = (
            f"postgresql+psycopg://{environ['KTRDR_DB_USER']}:***@{environ['KTRDR_DB_HOST']}:"
            f"{environ['KTRDR_DB_PORT']}/{url.database}"
        )
        yield Database(environ, url, shown)


def invoke(args: list[str], environ: dict[str, str], tmp_path: Path) -> Result:
    """Run `ktrdr db ...` with ``environ`` and no dotenv file."""
    group = click.Group("ktrdr")
    register(group)
    extra = ["--env-file", str(tmp_path / "absent.env")]
    return CliRunner().invoke(group, ["db", *args, *extra], obj=environ)


def test_upgrade_creates_a_fresh_database_and_current_shows_it(
    database: Database, tmp_path: Path
) -> None:
    """upgrade on an empty database creates the schema at head; current then says head."""
    upgraded = invoke(["upgrade"], database.environ, tmp_path)
    shown = invoke(["current"], database.environ, tmp_path)

    head = head_revision()
    assert (upgraded.exit_code, upgraded.stderr) == (0, "")
    assert upgraded.stdout == (
        f"database  {database.shown}\ncreated the schema at revision {head}\n"
    )
    assert (shown.exit_code, shown.stderr) == (0, "")
    assert shown.stdout == f"database  {database.shown}\nrevision  {head} (head)\n"


def test_current_on_an_empty_database_changes_nothing(database: Database, tmp_path: Path) -> None:
    """current never creates anything: a missing SQLite file stays missing, no table appears."""
    result = invoke(["current"], database.environ, tmp_path)

    assert result.exit_code == 0, result.output
    revision_line = result.stdout.splitlines()[1]
    if database.url.get_backend_name() == "sqlite":
        assert revision_line == "revision  none (no database file yet; an upgrade creates it)"
        assert not (tmp_path / "data").exists()
        return
    assert revision_line == (
        f"revision  none (empty; an upgrade creates the schema at {head_revision()})"
    )
    engine = sa.create_engine(database.url)
    assert sa.inspect(engine).get_table_names() == []
    engine.dispose()


def test_a_0_4_0_database_is_shown_then_upgraded_with_its_operations(
    database: Database, tmp_path: Path
) -> None:
    """current names a 0.4.0 database; upgrade stamps it and keeps its operations."""
    create_0_4_0_database(database.url)

    before = invoke(["current"], database.environ, tmp_path)
    upgraded = invoke(["upgrade"], database.environ, tmp_path)
    after = invoke(["current"], database.environ, tmp_path)

    assert before.exit_code == 0, before.output
    assert before.stdout.splitlines()[1] == (
        f"revision  none (made by ktrdr 0.4.0; an upgrade stamps it 0001 and upgrades it "
        f"to {head_revision()})"
    )
    assert upgraded.exit_code == 0, upgraded.output
    assert upgraded.stdout.splitlines()[1] == (
        f"recognised a ktrdr 0.4.0 database, stamped it 0001 and upgraded it to "
        f"{head_revision()}; its operations are kept"
    )
    assert after.stdout.splitlines()[1] == f"revision  {head_revision()} (head)"
    store = OperationStore.open_url(database.url)
    try:
        assert [r.id for r in store.pending()] == [PENDING_ID]
        assert store.get(FINISHED_ID).status is OperationStatus.COMPLETED
    finally:
        store.close()


def test_an_unreachable_database_is_one_line_naming_the_variables(tmp_path: Path) -> None:
    """No server on the port: exit 1, one line naming KTRDR_DB_HOST, no password, no traceback."""
    environ = {
        **ACK,
        "KTRDR_DB_ENGINE": "postgresql",
        "KTRDR_DB_HOST": "127.0.0.1",
        "KTRDR_DB_PORT": str(free_port("127.0.0.1")),
        "KTRDR_DB_PASSWORD": "pw-never-printed-77",
    }
    for command in ("current", "upgrade"):
        result = invoke([command], environ, tmp_path)

        assert result.exit_code == 1, result.output
        assert result.stderr.startswith("ktrdr db: cannot open the operations database ")
        assert result.stderr.count("\n") == 1
        assert "check KTRDR_DB_HOST, KTRDR_DB_PORT" in result.stderr
        assert "Connection refused" in result.stderr
        assert "pw-never-printed-77" not in result.output
        assert "Traceback" not in result.output


def test_a_database_from_a_newer_ktrdr_is_one_line(tmp_path: Path) -> None:
    """A revision this ktrdr does not know: exit 1 with one line, the database untouched."""
    path = tmp_path / "ktrdr.db"
    environ = {**ACK, "KTRDR_DB_PATH": str(path)}
    assert invoke(["upgrade"], environ, tmp_path).exit_code == 0
    engine = sa.create_engine(f"sqlite+pysqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()

    result = invoke(["upgrade"], environ, tmp_path)

    assert result.exit_code == 1
    assert result.stderr.startswith("ktrdr db: the operations database is at schema revision")
    assert "'9999', which this ktrdr does not know" in result.stderr
    assert result.stderr.count("\n") == 1


def test_a_bad_setting_names_the_variable(tmp_path: Path) -> None:
    """An invalid KTRDR_DB_PORT stops the command before connecting: exit 1, variable named."""
    environ = {**ACK, "KTRDR_DB_ENGINE": "postgresql", "KTRDR_DB_PORT": "fifty"}

    result = invoke(["current"], environ, tmp_path)

    assert result.exit_code == 1
    assert "KTRDR_DB_PORT='fifty'" in result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.output


def test_an_unusable_sqlite_directory_names_the_variable(tmp_path: Path) -> None:
    """KTRDR_DB_PATH under a file: upgrade exits 1 naming KTRDR_DB_PATH."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    environ = {**ACK, "KTRDR_DB_PATH": str(blocker / "db" / "ktrdr.db")}

    result = invoke(["upgrade"], environ, tmp_path)

    assert result.exit_code == 1
    assert result.stderr.startswith("ktrdr db: ")
    assert "KTRDR_DB_PATH=" in result.stderr
    assert "Traceback" not in result.output


def test_the_ktrdr_command_has_db(tmp_path: Path) -> None:
    """`ktrdr db upgrade` and `ktrdr db current` work through the installed command."""
    env = base_env(KTRDR_DB_PATH=str(tmp_path / "ktrdr.db"))

    upgraded = run_ktrdr("db", "upgrade", env=env, cwd=tmp_path)
    shown = run_ktrdr("db", "current", env=env, cwd=tmp_path)

    assert upgraded.returncode == 0, upgraded.stderr
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[1] == f"revision  {head_revision()} (head)"
