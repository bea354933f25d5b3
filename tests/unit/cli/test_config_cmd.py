"""`ktrdr config show|check|docs`: output, exit codes, masking, never a traceback.

The commands read os.environ in production; tests hand them a mapping as the click
context object instead, so no test touches os.environ.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from support.processes import base_env, run_ktrdr

from ktrdr.cli.config_cmd import register
from ktrdr.config.docs import render_markdown

REPO = Path(__file__).resolve().parents[3]
ACK = {"KTRDR_ACKNOWLEDGE_INSECURE_DEFAULTS": "true"}


def invoke(args: list[str], environ: dict[str, str], tmp_path: Path) -> Result:
    """Run `ktrdr config ...` with ``environ`` and no dotenv file."""
    group = click.Group("ktrdr")
    register(group)
    with_env_file = args[:1] != ["docs"]
    extra = ["--env-file", str(tmp_path / "absent.env")] if with_env_file else []
    return CliRunner().invoke(group, ["config", *args, *extra], obj=environ)


def test_show_json_prints_every_value_of_the_component(tmp_path: Path) -> None:
    """--json is a flat object: variable -> value as written in the environment."""
    result = invoke(
        ["show", "--component", "worker", "--json"], {**ACK, "WORKER_PORT": "5010"}, tmp_path
    )
    assert result.exit_code == 0, result.output
    values = json.loads(result.stdout)
    assert values["KTRDR_WORKER_PORT"] == "5010"
    assert values["KTRDR_WORKER_HEARTBEAT_INTERVAL"] == "10s"
    assert values["KTRDR_AUTH_WORKER_TOKEN"] == "********"
    assert "KTRDR_DB_PASSWORD" not in values
    assert result.stderr.startswith("ktrdr: warning: WORKER_PORT is deprecated")


def test_show_json_with_sources(tmp_path: Path) -> None:
    """--json --sources gives value, source text, kind and the variable that supplied it."""
    result = invoke(
        ["show", "--component", "worker", "--json", "--sources", "--worker-type", "training"],
        {**ACK, "WORKER_PORT": "5010"},
        tmp_path,
    )
    values = json.loads(result.stdout)
    assert values["KTRDR_WORKER_PORT"] == {
        "value": "5010",
        "source": "env WORKER_PORT (deprecated)",
        "kind": "deprecated",
        "variable": "WORKER_PORT",
    }
    assert values["KTRDR_WORKER_ID"]["source"] == "default (<type>-<hostname>-<port>)"
    assert values["KTRDR_WORKER_ID"]["value"].startswith("training-")
    assert values["KTRDR_WORKER_TYPE"]["source"] == "set by the entrypoint"


def test_show_table_with_sources_masks_secrets(tmp_path: Path) -> None:
    """The table lists variables, values and sources; a secret's value never appears."""
    environ = {
        **ACK,
        "KTRDR_AUTH_WORKER_TOKEN": "tok-visible-not",
        "KTRDR_DB_PASSWORD": "pw-hidden-9",
    }
    result = invoke(["show", "--component", "all", "--sources"], environ, tmp_path)
    assert result.exit_code == 0, result.output
    assert "tok-visible-not" not in result.output
    assert "pw-hidden-9" not in result.output
    rows = [line for line in result.stdout.splitlines() if "KTRDR_AUTH_WORKER_TOKEN" in line]
    assert len(rows) == 1
    assert "********" in rows[0]
    assert "env KTRDR_AUTH_WORKER_TOKEN" in rows[0]
    assert any(
        "KTRDR_DB_ENGINE" in line and "sqlite" in line for line in result.stdout.splitlines()
    )


def test_show_escapes_control_characters(tmp_path: Path) -> None:
    """A value with terminal escape codes is printed escaped, not interpreted."""
    result = invoke(
        ["show", "--component", "worker"], {**ACK, "KTRDR_WORKER_HOST": "w\x1b[31mred"}, tmp_path
    )
    assert result.exit_code == 0, result.output
    assert "\x1b[31m" not in result.stdout
    assert "w\\x1b[31mred" in result.stdout


def test_check_valid_exits_0(tmp_path: Path) -> None:
    """A valid configuration: exit 0 and one line saying so."""
    result = invoke(["check", "--component", "backend"], ACK, tmp_path)
    assert result.exit_code == 0
    assert result.stdout == "ktrdr: the backend configuration is valid\n"


def test_check_invalid_exits_1_with_the_report_and_no_traceback(tmp_path: Path) -> None:
    """Every problem on stderr, exit code 1, no traceback, no secret value."""
    environ = {
        "KTRDR_ENV": "production",
        "KTRDR_WORKER_PORT": "99999",
        "KTRDR_AUTH_WORKER_TOKEN": "\x00secret-in-nul",
        "KTRDR_WORKER_PROT": "1",
    }
    result = invoke(["check", "--component", "worker"], environ, tmp_path)
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "ktrdr: Invalid configuration (3 problems):",
        "  - KTRDR_WORKER_PORT='99999': expected a whole number between 1 and 65535",
        "  - KTRDR_AUTH_WORKER_TOKEN='********': expected a non-empty secret",
        "  - KTRDR_WORKER_PROT: not a ktrdr setting; did you mean KTRDR_WORKER_PORT?",
    ]
    assert "secret-in-nul" not in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "environ",
    [
        {"KTRDR_WORKER_HEARTBEAT_INTERVAL": "\udcff"},
        {"KTRDR_WORKER_ID_FILE": "/nonexistent/ktrdr-test"},
        {"KTRDR_LOG_LEVEL": "9" * 5000},
        {"KTRDR_WORKER_PUBLIC_URL": "http://[::1"},
    ],
)
def test_bad_input_is_a_report_never_a_traceback(environ: dict[str, str], tmp_path: Path) -> None:
    """Surrogates, missing files, huge values, broken URLs: exit 1 and a report."""
    result = invoke(["show", "--component", "worker"], {**ACK, **environ}, tmp_path)
    assert "Traceback" not in result.output
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert result.stderr.startswith("ktrdr: Invalid configuration (1 problem):")


def test_docs_writes_the_rendered_page(tmp_path: Path) -> None:
    """`config docs --output FILE` writes exactly the rendered page."""
    target = tmp_path / "docs" / "configuration.md"
    result = invoke(["docs", "--output", str(target)], {}, tmp_path)
    assert result.exit_code == 0
    assert target.read_text(encoding="utf-8") == render_markdown()
    assert result.stdout == f"ktrdr: wrote {target}\n"


def test_docs_check_detects_stale_and_fresh_pages(tmp_path: Path) -> None:
    """--check exits 1 for a stale (or missing) page and 0 for a fresh one."""
    target = tmp_path / "configuration.md"
    missing = invoke(["docs", "--check", "--output", str(target)], {}, tmp_path)
    assert missing.exit_code == 1
    target.write_text("old", encoding="utf-8")
    stale = invoke(["docs", "--check", "--output", str(target)], {}, tmp_path)
    assert stale.exit_code == 1
    assert stale.stderr == f"ktrdr: {target} is stale; regenerate it with `ktrdr config docs`\n"
    target.write_text(render_markdown(), encoding="utf-8")
    fresh = invoke(["docs", "--check", "--output", str(target)], {}, tmp_path)
    assert fresh.exit_code == 0
    assert target.read_text(encoding="utf-8") == render_markdown()


def test_docs_unwritable_target_is_one_line(tmp_path: Path) -> None:
    """A target that cannot be written is one line on stderr and exit 1."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = invoke(["docs", "--output", str(blocker / "sub" / "c.md")], {}, tmp_path)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"ktrdr: cannot write {blocker / 'sub' / 'c.md'}: ")
    assert "Traceback" not in result.output


def test_console_script_reads_the_process_environment(tmp_path: Path) -> None:
    """The real `ktrdr` entry point reads its own process environment (a subprocess here)."""
    code = "from ktrdr.cli import main; main()"
    result = subprocess.run(
        [sys.executable, "-c", code, "config", "check", "--component", "worker"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "KTRDR_WORKER_PORT": "0", **ACK},
    )
    assert result.returncode == 1
    assert result.stderr == (
        "ktrdr: Invalid configuration (1 problem):\n"
        "  - KTRDR_WORKER_PORT='0': expected a whole number between 1 and 65535\n"
    )


def test_check_refuses_a_worker_id_the_backend_would_refuse(tmp_path: Path) -> None:
    """`ktrdr config check` (the real command) fails on KTRDR_WORKER_ID='my worker', naming it."""
    env = base_env(KTRDR_WORKER_ID="my worker")
    result = run_ktrdr("config", "check", "--component", "worker", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert "KTRDR_WORKER_ID='my worker': expected an id of 1 to 128 letters" in result.stderr
    assert "(it contains ' ')" in result.stderr
    assert "Traceback" not in result.stderr


def test_show_sources_says_what_an_old_value_was_read_as(tmp_path: Path) -> None:
    """A mapped value and an inferred engine say so in `config show --sources`."""
    environ = {**ACK, "WORKER_TYPE": "backtesting", "DB_HOST": "db"}
    result = invoke(["show", "--component", "all", "--sources", "--json"], environ, tmp_path)
    assert result.exit_code == 0, result.output
    values = json.loads(result.stdout)
    assert values["KTRDR_WORKER_TYPE"]["source"] == (
        "env WORKER_TYPE (deprecated; backtesting read as backtest)"
    )
    assert values["KTRDR_DB_ENGINE"] == {
        "value": "postgresql",
        "source": "inferred from DB_HOST (a PostgreSQL host is set)",
        "kind": "inferred",
        "variable": "DB_HOST",
    }
    assert "WORKER_TYPE=backtesting is deprecated: use KTRDR_WORKER_TYPE=backtest" in (
        result.stderr
    )


def test_check_mentions_other_components_variables_once(tmp_path: Path) -> None:
    """Another component's variable is one `ktrdr: note:` line, and the check passes."""
    environ = {**ACK, "KTRDR_IB_HOST": "ib-gateway", "KTRDR_ENV": "test"}
    result = invoke(["check", "--component", "worker"], environ, tmp_path)
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        "ktrdr: note: used by another ktrdr component, not by this worker "
        "(IB gateway and IB host service: KTRDR_IB_HOST)"
    ]
