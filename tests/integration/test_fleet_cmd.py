"""``ktrdr workers`` and ``ktrdr ops`` against a real backend process, with its operator token."""

from __future__ import annotations

import datetime
import json
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.fleet import OPERATOR_TOKEN, Fleet, Server
from support.operation_rows import insert_rows, row
from support.processes import ProcessGroup, base_env, free_port, run_ktrdr, wait_until

from ktrdr.api.store import OperationStore

pytestmark = pytest.mark.slow


def ktrdr(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``ktrdr`` with a clean, wide-terminal environment holding the operator token."""
    environ = base_env(COLUMNS="200", KTRDR_AUTH_OPERATOR_TOKEN=OPERATOR_TOKEN)
    environ.update(env)
    return run_ktrdr(*args, env={k: v for k, v in environ.items() if v}, cwd=cwd)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Fleet, Server]]:
    """One backend with one training worker for the whole module."""
    directory = tmp_path_factory.mktemp("fleet")
    with ProcessGroup(directory) as group:
        fleet = Fleet(group, directory)
        backend = fleet.start_backend()
        fleet.start_worker("training", backend_port=backend.port)
        yield fleet, backend


def test_workers_json_lists_the_registered_worker(
    running: tuple[Fleet, Server], tmp_path: Path
) -> None:
    """``ktrdr workers --json`` prints the backend's list, with the training worker in it."""
    fleet, backend = running
    wait_until(lambda: fleet.workers(backend), message="no worker registered")
    result = ktrdr("workers", "--json", "--backend-url", backend.url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    items = json.loads(result.stdout)
    assert [item["worker_type"] for item in items] == ["training"]


def test_workers_table_shows_id_type_and_status(
    running: tuple[Fleet, Server], tmp_path: Path
) -> None:
    """The table view names the worker, its type and its status."""
    _, backend = running
    result = ktrdr("workers", "--backend-url", backend.url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "training" in result.stdout
    assert "idle" in result.stdout


def test_backend_down_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """A backend that does not answer: one line on stderr, exit code 2, no traceback."""
    url = f"http://127.0.0.1:{free_port()}"
    for args in (("workers",), ("ops", "list"), ("ops", "show", "abc")):
        result = ktrdr(*args, "--backend-url", url, cwd=tmp_path)
        assert result.returncode == 2, args
        assert result.stderr.strip().splitlines() == [
            f"ktrdr: cannot reach the backend at {url} (ConnectError)"
        ]


def test_bad_param_syntax_is_a_usage_error(tmp_path: Path) -> None:
    """``--param`` without ``=`` is refused before anything is sent."""
    result = ktrdr("ops", "submit", "training", "--param", "epochs", cwd=tmp_path)
    assert result.returncode == 2
    assert "expected KEY=VALUE, got 'epochs'" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_timeout_that_is_not_positive_is_a_usage_error(tmp_path: Path) -> None:
    """``--timeout 0`` is refused naming the option, before anything is sent."""
    result = ktrdr("ops", "submit", "training", "--timeout", "0", cwd=tmp_path)
    assert result.returncode == 2
    assert "'--timeout'" in result.stderr
    assert "Traceback" not in result.stderr


def test_submit_watch_show_and_list_a_backtest(
    running: tuple[Fleet, Server], tmp_path: Path
) -> None:
    """A backtest submitted with --watch (and --timeout) ends completed at attempt 1; show and
    list report it.
    """
    fleet, backend = running
    backtest = fleet.start_worker("backtest", backend_port=backend.port)
    wait_until(lambda: len(fleet.workers(backend) or []) == 2, message="backtest worker")
    submitted = ktrdr(
        "ops",
        "submit",
        "backtest",
        "--param",
        "bars=5000",
        "--param",
        "seed=3",
        "--timeout",
        "600",
        "--watch",
        "--backend-url",
        backend.url,
        cwd=tmp_path,
    )
    assert submitted.returncode == 0, submitted.stderr
    operation_id = submitted.stdout.strip().splitlines()[0]
    assert "total_return" in submitted.stderr  # the watch ends with the result table

    shown = ktrdr("ops", "show", operation_id, "--json", "--backend-url", backend.url, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    operation = json.loads(shown.stdout)
    assert operation["status"] == "completed"
    assert (operation["attempt"], operation["timeout_s"]) == (1, 600)
    assert operation["parameters"]["bars"] == 5000
    assert set(operation["result"]) >= {"total_return", "sharpe", "max_drawdown", "win_rate"}

    listed = ktrdr(
        "ops", "list", "--type", "backtest", "--json", "--backend-url", backend.url, cwd=tmp_path
    )
    assert operation_id in [item["id"] for item in json.loads(listed.stdout)["items"]]
    backtest.process.signal(signal.SIGTERM)
    assert backtest.process.wait_exit() == 0


def test_wrong_param_type_is_one_clear_line(running: tuple[Fleet, Server], tmp_path: Path) -> None:
    """A parameter of the wrong type: the backend's field error on one line, exit 1."""
    _, backend = running
    result = ktrdr(
        "ops",
        "submit",
        "training",
        "--param",
        "epochs=many",
        "--backend-url",
        backend.url,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "epochs" in lines[0]
    assert "Traceback" not in result.stderr


def test_unknown_operation_id_is_one_line(running: tuple[Fleet, Server], tmp_path: Path) -> None:
    """show, cancel and resume of an unknown id: one line naming it, exit 1."""
    _, backend = running
    for command in ("show", "cancel", "resume", "watch"):
        result = ktrdr("ops", command, "no-such-op", "--backend-url", backend.url, cwd=tmp_path)
        assert result.returncode == 1, command
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, (command, lines)
        assert "no-such-op" in lines[0], command


def test_cancel_of_a_finished_operation_is_refused(
    running: tuple[Fleet, Server], tmp_path: Path
) -> None:
    """Cancelling an operation that already ended is a clear refusal, not a change."""
    _, backend = running
    submitted = ktrdr(
        "ops",
        "submit",
        "training",
        "--param",
        "epochs=3",
        "--param",
        "bars=500",
        "--watch",
        "--backend-url",
        backend.url,
        cwd=tmp_path,
    )
    assert submitted.returncode == 0, submitted.stderr
    operation_id = submitted.stdout.strip().splitlines()[0]
    result = ktrdr("ops", "cancel", operation_id, "--backend-url", backend.url, cwd=tmp_path)
    assert result.returncode == 1
    assert "completed" in result.stderr


@pytest.mark.parametrize(
    ("env", "source"),
    [
        ({"KTRDR_AUTH_OPERATOR_TOKEN": "a-wrong-token-4521"}, "env KTRDR_AUTH_OPERATOR_TOKEN"),
        ({"KTRDR_AUTH_OPERATOR_TOKEN": ""}, "the development default"),
    ],
    ids=["wrong", "none"],
)
def test_a_refused_token_is_one_line_naming_the_variable(
    running: tuple[Fleet, Server], tmp_path: Path, env: dict[str, str], source: str
) -> None:
    """A 401: one line saying where the token came from and which variable to set; exit 1."""
    _, backend = running
    for args in (("workers",), ("ops", "list"), ("ops", "show", "abc")):
        result = ktrdr(*args, "--backend-url", backend.url, cwd=tmp_path, **env)
        assert result.returncode == 1, args
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith(f"ktrdr: the backend at {backend.url} refused the operator")
        assert source in lines[0]
        assert "set KTRDR_AUTH_OPERATOR_TOKEN (or KTRDR_AUTH_OPERATOR_TOKEN_FILE" in lines[0]
        assert "a-wrong-token-4521" not in result.stderr


def test_the_token_comes_from_the_option_the_file_variable_or_the_up_file(
    running: tuple[Fleet, Server], tmp_path: Path
) -> None:
    """--token, KTRDR_AUTH_OPERATOR_TOKEN_FILE and ./data/operator_token each authenticate."""
    _, backend = running
    secret = tmp_path / "token.txt"
    secret.write_text(OPERATOR_TOKEN + "\n")
    (tmp_path / "up").mkdir()
    (tmp_path / "up" / "data").mkdir()
    (tmp_path / "up" / "data" / "operator_token").write_text(OPERATOR_TOKEN + "\n")
    unset = {"KTRDR_AUTH_OPERATOR_TOKEN": ""}
    runs = [
        ktrdr(
            "workers",
            "--token",
            OPERATOR_TOKEN,
            "--backend-url",
            backend.url,
            cwd=tmp_path,
            **unset,
        ),
        ktrdr(
            "workers",
            "--backend-url",
            backend.url,
            cwd=tmp_path,
            KTRDR_AUTH_OPERATOR_TOKEN_FILE=str(secret),
            **unset,
        ),
        ktrdr("workers", "--backend-url", backend.url, cwd=tmp_path / "up", **unset),
    ]
    assert [r.returncode for r in runs] == [0, 0, 0], [r.stderr for r in runs]


def test_ops_list_follows_cursors_beyond_one_page(
    running: tuple[Fleet, Server], tmp_path: Path
) -> None:
    """``ops list --limit 450`` and ``--all`` page by cursor past 200: each operation once,
    newest first, the count in the title."""
    fleet, backend = running
    database = fleet.directory / "backend" / "data" / "ktrdr.db"
    store = OperationStore.open_url(f"sqlite+pysqlite:///{database}")
    old = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
    rows = [
        row(i, finished_at=old)
        | {"id": f"paged-{i:04d}", "type": "training", "status": "cancelled", "created_at": old}
        for i in range(460)
    ]
    try:
        insert_rows(store, rows)
    finally:
        store.close()
    expected = sorted((r["id"] for r in rows), reverse=True)  # same time: id order
    query = ("ops", "list", "--status", "cancelled", "--type", "training")

    limited = ktrdr(*query, "--limit", "450", "--json", "--backend-url", backend.url, cwd=tmp_path)
    everything = ktrdr(*query, "--all", "--json", "--backend-url", backend.url, cwd=tmp_path)
    table = ktrdr(*query, "--limit", "3", "--backend-url", backend.url, cwd=tmp_path)

    assert limited.returncode == 0, limited.stderr
    page = json.loads(limited.stdout)
    assert [item["id"] for item in page["items"]] == expected[:450]
    assert page["next_cursor"] is not None
    listed = [item["id"] for item in json.loads(everything.stdout)["items"]]
    assert len(listed) == len(set(listed))
    assert [i for i in listed if i.startswith("paged-")] == expected
    assert table.returncode == 0, table.stderr
    counted = re.search(r"operations \((\d+) in all\)", table.stdout)
    assert counted is not None, table.stdout
    assert int(counted.group(1)) >= 460
