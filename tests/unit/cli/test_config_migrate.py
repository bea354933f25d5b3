"""`ktrdr config migrate PATH [--check|--write]`: output, report, exit codes, bad input."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from ktrdr.cli.config_cmd import register

REPO = Path(__file__).resolve().parents[3]
OLD = "# worker\nWORKER_TYPE=backtesting\nKTRDR_IB_HOST=ib-gateway\n"
NEW = "# worker\nKTRDR_WORKER_TYPE=backtest\nKTRDR_IB_HOST=ib-gateway\n"


def invoke(*args: str) -> Result:
    """Run `ktrdr config migrate ...` in-process."""
    group = click.Group("ktrdr")
    register(group)
    return CliRunner().invoke(group, ["config", "migrate", *args], obj={})


def _file(tmp_path: Path, text: str, name: str = "worker.env") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_prints_the_migrated_file_and_reports_each_change(tmp_path: Path) -> None:
    """stdout is the new file; stderr names each change and what was left alone; exit 0."""
    path = _file(tmp_path, OLD)
    result = invoke(str(path))
    assert result.exit_code == 0
    assert result.stdout == NEW
    assert result.stderr.splitlines() == [
        f"ktrdr: {path}: line 2: WORKER_TYPE=backtesting → KTRDR_WORKER_TYPE=backtest",
        f"ktrdr: note: {path}: {path}: KTRDR_IB_HOST is read by IB gateway and IB host "
        "service; left alone",
    ]
    assert path.read_text() == OLD


def test_check_exits_1_when_anything_would_change(tmp_path: Path) -> None:
    """--check prints no file, reports the changes and fails (for CI)."""
    path = _file(tmp_path, OLD)
    result = invoke("--check", str(path))
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr.splitlines()[-1] == (
        f"ktrdr: {path} needs migrating (1 change); run `ktrdr config migrate --write {path}`"
    )


def test_the_projects_compose_file_passes_check() -> None:
    """docker/compose.yml uses the current names: --check exits 0."""
    result = invoke("--check", str(REPO / "docker" / "compose.yml"))
    assert result.exit_code == 0, result.stderr
    assert result.stderr.endswith("compose.yml is up to date\n")


def test_write_rewrites_in_place_then_check_passes(tmp_path: Path) -> None:
    """--write replaces the file; afterwards nothing is left to change."""
    path = _file(tmp_path, OLD)
    result = invoke("--write", str(path))
    assert (result.exit_code, result.stdout) == (0, "")
    assert path.read_text() == NEW
    assert invoke("--check", str(path)).exit_code == 0


@pytest.mark.parametrize(
    ("name", "text", "line"),
    [
        ("notes.txt", "hello world\n", "is not an env file: line 1 is not NAME=VALUE"),
        ("compose.yml", "services: [\n", "is not valid YAML: "),
        ("compose.yml", "version: '3'\n", "is not a compose file: no `services:` mapping"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(tmp_path: Path, name: str, text: str, line: str) -> None:
    """Not an env or compose file, unreadable YAML: one line on stderr, exit 1, file intact."""
    path = _file(tmp_path, text, name)
    for args in ([str(path)], ["--write", str(path)]):
        result = invoke(*args)
        assert result.exit_code == 1
        assert result.stderr.startswith(f"ktrdr: {path} {line}")
        assert result.stderr.count("\n") == 1
        assert path.read_text() == text


def test_a_missing_or_binary_file_is_one_line(tmp_path: Path) -> None:
    """Unreadable or not UTF-8: one line naming the file, exit 1."""
    missing = invoke(str(tmp_path / "absent.env"))
    assert (missing.exit_code, missing.stderr) == (
        1,
        f"ktrdr: cannot read {tmp_path / 'absent.env'}: No such file or directory\n",
    )
    binary = tmp_path / "x.env"
    binary.write_bytes(b"\xff\xfe\x00")
    assert invoke(str(binary)).stderr == f"ktrdr: cannot read {binary}: not UTF-8 text\n"


def test_check_and_write_together_are_refused(tmp_path: Path) -> None:
    """--check with --write is a one-line error; nothing is written."""
    path = _file(tmp_path, OLD)
    result = invoke("--check", "--write", str(path))
    assert (result.exit_code, result.stderr) == (
        1,
        "ktrdr: --check and --write cannot be combined\n",
    )
    assert path.read_text() == OLD
