"""`config migrate`: the plan for a block of variables, and env and compose files edited as text."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml
from config_helpers import load
from dotenv import dotenv_values
from hypothesis import given, settings
from hypothesis import strategies as st

from ktrdr.config import WorkerType
from ktrdr.config.migrate import Entry, plan
from ktrdr.config.migrate_files import (
    MigrationError,
    migrate_compose,
    migrate_env,
    migrate_file,
    write_atomically,
)


def _texts(block: dict[str, str], component: str = "all") -> list[str]:
    return [a.text for a in plan([Entry(k, v) for k, v in block.items()], component).actions]


def test_the_winner_is_renamed_with_its_value_mapped_and_losers_removed() -> None:
    """By generation: the KTRDR_ old name wins over the unprefixed one, which is removed."""
    texts = _texts(
        {"WORKER_PUBLIC_BASE_URL": "http://a:5003", "KTRDR_WORKER_ENDPOINT_URL": "http://b:5003"}
    )
    assert texts == [
        "removed WORKER_PUBLIC_BASE_URL: KTRDR_WORKER_ENDPOINT_URL is also set and wins",
        "KTRDR_WORKER_ENDPOINT_URL → KTRDR_WORKER_PUBLIC_URL",
    ]


def test_secret_values_never_appear_in_the_changes() -> None:
    """DB_PASSWORD → KTRDR_DB_PASSWORD, the value neither shown nor touched."""
    decided = plan([Entry("DB_PASSWORD", "hunter2-pw")], "backend")
    assert [a.text for a in decided.actions] == ["DB_PASSWORD → KTRDR_DB_PASSWORD"]
    assert decided.actions[0].value is None


def test_labels_and_other_components_are_left_alone_and_noted() -> None:
    """ENVIRONMENT=canary (a tracing label) and KTRDR_IB_* stay; the notes say why."""
    decided = plan(
        [Entry("ENVIRONMENT", "canary"), Entry("KTRDR_IB_HOST", "ib-gateway")],
        "backend",
    )
    assert decided.actions == ()
    assert decided.notes[0] == (
        "KTRDR_IB_HOST is read by IB gateway and IB host service; left alone"
    )
    assert decided.notes[1].startswith("ENVIRONMENT='canary' is ignored: not one of")


def test_interpolated_values_are_renamed_and_flagged_not_mapped() -> None:
    """WORKER_TYPE=${T:-backtesting}: renamed; the note asks to check what it reads as."""
    decided = plan([Entry("WORKER_TYPE", "${T:-backtesting}")], "worker")
    assert [a.text for a in decided.actions] == ["WORKER_TYPE → KTRDR_WORKER_TYPE"]
    assert decided.notes[0].startswith("WORKER_TYPE is interpolated (${T:-backtesting})")


def test_a_value_no_mapping_carries_is_noted_not_guessed() -> None:
    """KTRDR_LOG_JSON_OUTPUT=maybe: renamed as is? No: left for config check, with a note."""
    decided = plan([Entry("KTRDR_LOG_JSON_OUTPUT", "maybe")], "worker")
    assert decided.notes == (
        "KTRDR_LOG_JSON_OUTPUT='maybe' cannot be migrated: expected a boolean, one of: true, "
        "1, yes, on, false, 0, no, off (it selects json or text); left alone",
    )


def test_backend_only_settings_in_a_worker_are_left_alone() -> None:
    """DB_HOST in a worker's environment: the backend's; no rename, no inferred engine."""
    decided = plan([Entry("DB_HOST", "db")], "worker")
    assert decided.actions == ()
    assert decided.notes == ("DB_HOST: read by the backend, not by this worker; left alone",)


ENV_FILE = """\
# LXC worker
export KTRDR_API_URL="http://10.0.0.1:8000/api/v1"  # the backend
WORKER_ENDPOINT_URL=http://10.0.0.2:5004
WORKER_TYPE='backtesting'
KTRDR_WORKER_HEALTH_CHECK_TIMEOUT=5
KTRDR_OTEL_OTLP_ENDPOINT=http://jaeger:4317

DB_HOST=db
"""


def test_env_file_keeps_comments_quotes_and_order() -> None:
    """Renamed in place, quoting and export kept, inferred settings added, retired commented."""
    result = migrate_env(ENV_FILE, "w.env", "all")
    assert result.text == (
        "# LXC worker\n"
        'export KTRDR_WORKER_BACKEND_URL="http://10.0.0.1:8000"  # the backend\n'
        "KTRDR_WORKER_PORT=5004\n"
        "KTRDR_WORKER_PUBLIC_URL=http://10.0.0.2:5004\n"
        "KTRDR_WORKER_TYPE='backtest'\n"
        "# KTRDR_WORKER_HEALTH_CHECK_TIMEOUT=5  # removed by ktrdr config migrate\n"
        "KTRDR_OTEL_ENABLED=true\n"
        "KTRDR_OTEL_OTLP_ENDPOINT=http://jaeger:4317\n"
        "\n"
        "KTRDR_DB_ENGINE=postgresql\n"
        "KTRDR_DB_HOST=db\n"
    )
    assert [c.where for c in result.changes] == [
        "line 2",
        "line 3",
        "line 3",
        "line 4",
        "line 5",
        "line 6",
        "line 8",
        "line 8",
    ]
    migrated = {k: v or "" for k, v in dotenv_values(stream=io.StringIO(result.text)).items()}
    config = load("worker", migrated, worker_type=WorkerType.BACKTEST)
    assert (config.worker.port, config.worker.backend_url) == (5004, "http://10.0.0.1:8000")
    assert migrate_env(result.text, "w.env", "all").changes == ()


def test_windows_line_endings_are_kept() -> None:
    """A CRLF file stays CRLF, inserted lines included."""
    result = migrate_env("DB_HOST=db\r\nX=1\r\n", "b.env", "backend")
    assert result.text == "KTRDR_DB_ENGINE=postgresql\r\nKTRDR_DB_HOST=db\r\nX=1\r\n"


COMPOSE = """\
# the fleet
x-common: &common
  LOG_LEVEL: INFO   # shared
  KTRDR_OTEL_OTLP_ENDPOINT: http://jaeger:4317

services:
  jaeger:
    image: jaegertracing/all-in-one:1.53
    environment:
      - LOG_LEVEL=info
  backend:
    image: ghcr.io/kpiteira/ktrdr-backend:latest
    command: ["python", "-m", "uvicorn", "ktrdr.api.main:app"]
    environment:
      <<: *common
      # Database
      DB_HOST: db
      DB_NAME: "ktrdr_canary"   # the name
      KTRDR_API_PORT: 8000
  backtest-worker:
    image: ktrdr-backend:dev
    command: /app/.venv/bin/uvicorn ktrdr.backtesting.backtest_worker:app --port 5004
    environment:
      - KTRDR_API_CLIENT_BASE_URL=http://backend:8000/api/v1
      - WORKER_TYPE=backtesting   # old spelling
      - "WORKER_PORT=5004"
      - DB_HOST=db
  mcp:
    image: ktrdr-backend:dev
    command: ["sleep", "infinity"]
    environment:
      - KTRDR_API_URL=http://backend:8000/api/v1
"""


def test_compose_file_edits_only_ktrdr_services_and_keeps_everything_else() -> None:
    """Anchors, merge keys, comments and other services stay; each service is migrated."""
    result = migrate_compose(COMPOSE, "compose.yml")
    assert result.text == COMPOSE.replace(
        "LOG_LEVEL: INFO   # shared\n",
        'KTRDR_LOG_LEVEL: INFO   # shared\n  KTRDR_OTEL_ENABLED: "true"\n',
    ).replace(
        '      DB_HOST: db\n      DB_NAME: "ktrdr_canary"',
        "      KTRDR_DB_ENGINE: postgresql\n      KTRDR_DB_HOST: db\n"
        '      KTRDR_DB_NAME: "ktrdr_canary"',
    ).replace(
        "      - KTRDR_API_CLIENT_BASE_URL=http://backend:8000/api/v1\n"
        "      - WORKER_TYPE=backtesting   # old spelling\n"
        '      - "WORKER_PORT=5004"',
        "      - KTRDR_WORKER_BACKEND_URL=http://backend:8000\n"
        "      - KTRDR_WORKER_TYPE=backtest   # old spelling\n"
        '      - "KTRDR_WORKER_PORT=5004"',
    )
    services = yaml.safe_load(result.text)["services"]
    backend = load("backend", {k: str(v) for k, v in services["backend"]["environment"].items()})
    assert (backend.database.engine.value, backend.database.name) == ("postgresql", "ktrdr_canary")
    worker_env = dict(item.split("=", 1) for item in services["backtest-worker"]["environment"])
    worker = load("worker", worker_env, worker_type=WorkerType.BACKTEST)
    assert (worker.worker.port, worker.worker.backend_url) == (5004, "http://backend:8000")
    assert ("services.mcp.environment", "not a ktrdr backend or worker; left alone") in [
        (n.where, n.text) for n in result.notes
    ]
    assert migrate_compose(result.text, "compose.yml").changes == ()


def test_the_projects_own_compose_file_needs_no_migration() -> None:
    """docker/compose.yml already uses the current names and values."""
    path = Path(__file__).resolve().parents[3] / "docker" / "compose.yml"
    result = migrate_file(path, path.read_text(encoding="utf-8"))
    assert (result.kind, result.changes) == ("compose file", ())


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("a.env", "just words\n", "a.env is not an env file: line 1 is not NAME=VALUE"),
        ("c.yml", "services: [\n", "c.yml is not valid YAML: "),
        ("c.yml", "- a\n- b\n", "c.yml is not a compose file: no `services:` mapping"),
        ("c.yaml", "services: 3\n", "c.yaml is not a compose file: no `services:` mapping"),
    ],
)
def test_bad_input_is_one_line(name: str, text: str, message: str) -> None:
    """Not an env file, unreadable YAML, not a compose file: one line, never a traceback."""
    with pytest.raises(MigrationError) as caught:
        migrate_file(Path(name), text)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_an_env_named_file_that_is_a_compose_file_is_read_as_one() -> None:
    """A compose file without a .yml name is recognised by its content."""
    assert migrate_file(Path("compose"), COMPOSE).kind == "compose file"


def test_write_is_atomic_and_keeps_the_mode(tmp_path: Path) -> None:
    """The new content replaces the old in one rename; permissions kept; no temp left."""
    path = tmp_path / "app.env"
    path.write_text("DB_HOST=db\n")
    path.chmod(0o640)
    write_atomically(path, "KTRDR_DB_HOST=db\n")
    assert path.read_text() == "KTRDR_DB_HOST=db\n"
    assert path.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["app.env"]


def test_a_failed_write_leaves_the_old_file_whole(tmp_path: Path) -> None:
    """Text that cannot be encoded fails before the rename: the old file is intact."""
    path = tmp_path / "app.env"
    path.write_text("DB_HOST=db\n")
    with pytest.raises(UnicodeEncodeError):
        write_atomically(path, "KTRDR_DB_HOST=\udcff\n")
    assert path.read_text() == "DB_HOST=db\n"
    assert [p.name for p in tmp_path.iterdir()] == ["app.env"]


_NAMES = [
    "WORKER_TYPE",
    "KTRDR_WORKER_TYPE",
    "WORKER_PORT",
    "WORKER_ENDPOINT_URL",
    "KTRDR_WORKER_PUBLIC_BASE_URL",
    "KTRDR_API_URL",
    "KTRDR_API_CLIENT_BASE_URL",
    "ENVIRONMENT",
    "KTRDR_ENV",
    "KTRDR_LOG_FORMAT",
    "KTRDR_LOG_JSON_OUTPUT",
    "DB_HOST",
    "KTRDR_DB_ENGINE",
    "DB_PASSWORD",
    "KTRDR_WORKER_HAS_GPU",
    "KTRDR_OTEL_OTLP_ENDPOINT",
    "KTRDR_WORKR_PORT",
    "PYTHONPATH",
]
_VALUES = [
    "backtesting",
    "training",
    "gpu",
    "5004",
    "http://h:5004",
    "http://b:8000/api/v1",
    "canary",
    "staging",
    "%(message)s",
    "true",
    "maybe",
    "db",
    "${X:-y}",
    "two words",
    "",
]


@settings(max_examples=200, deadline=None)
@given(
    block=st.lists(st.tuples(st.sampled_from(_NAMES), st.sampled_from(_VALUES)), max_size=8),
    component=st.sampled_from(["worker", "backend", "all"]),
)
def test_any_env_block_migrates_to_a_fixed_point(
    block: list[tuple[str, str]], component: str
) -> None:
    """Whatever the block, migrating never fails, keeps every other line, and is idempotent."""
    text = "# header\n" + "".join(f'{name}="{value}"\n' for name, value in block)
    result = migrate_env(text, "any.env", component)  # type: ignore[arg-type]
    assert result.text.startswith("# header\n")
    assert len(result.text.splitlines()) >= len(text.splitlines())
    again = migrate_env(result.text, "any.env", component)  # type: ignore[arg-type]
    assert (again.text, again.changes) == (result.text, ())


def test_a_services_env_file_is_pointed_at_not_ignored() -> None:
    """A ktrdr service reading an env_file gets a note to migrate that file too."""
    text = "services:\n  backend:\n    image: ktrdr:latest\n    env_file: [.env.core]\n"
    result = migrate_compose(text, "c.yml")
    assert [(n.where, n.text) for n in result.notes] == [
        ("services.backend", "reads env_file .env.core: run `ktrdr config migrate` on it too")
    ]


def test_a_line_too_unusual_to_edit_is_reported_not_silently_skipped() -> None:
    """A quoted variable name cannot be renamed in place: the note says to edit it by hand."""
    result = migrate_env("'WORKER_PORT'=5004\n", "q.env", "worker")
    assert result.text == result.original == "'WORKER_PORT'=5004\n"
    assert not result.changed
    assert [(n.where, n.text) for n in result.notes] == [
        ("line 1", "WORKER_PORT → KTRDR_WORKER_PORT (not applied: edit it by hand)")
    ]
