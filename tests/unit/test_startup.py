"""load_or_exit: warnings on stderr under any runner, exit 1 with the report, no traceback."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from ktrdr.config import WorkerConfig, WorkerType
from ktrdr.startup import EXIT_CONFIG_ERROR, HTTPX_CLI_MODULE, load_or_exit, without_httpx_cli

REPO = Path(__file__).resolve().parents[2]
ACK = {"KTRDR_ACKNOWLEDGE_INSECURE_DEFAULTS": "true"}


def test_valid_configuration_is_returned_and_deprecations_written() -> None:
    """A valid configuration comes back; each deprecated name used is one stderr line."""
    stderr = io.StringIO()
    config = load_or_exit(
        "worker",
        {**ACK, "WORKER_PORT": "5010"},
        worker_type=WorkerType.TRAINING,
        env_file=None,
        stderr=stderr,
    )
    assert isinstance(config, WorkerConfig)
    assert config.worker.port == 5010
    assert stderr.getvalue() == (
        "ktrdr: warning: WORKER_PORT is deprecated; rename it to KTRDR_WORKER_PORT. "
        "WORKER_PORT stops working in ktrdr 1.0.0 (not before 2027-06-30).\n"
    )


def test_invalid_configuration_exits_1_with_the_report() -> None:
    """Problems become the report on stderr and SystemExit(1); warnings come first."""
    stderr = io.StringIO()
    with pytest.raises(SystemExit) as caught:
        load_or_exit(
            "worker",
            {**ACK, "WORKER_PORT": "abc", "KTRDR_AUTH_WORKER_TOKEN": "  "},
            env_file=None,
            stderr=stderr,
        )
    assert caught.value.code == EXIT_CONFIG_ERROR
    assert stderr.getvalue().splitlines() == [
        "ktrdr: warning: WORKER_PORT is deprecated; rename it to KTRDR_WORKER_PORT. "
        "WORKER_PORT stops working in ktrdr 1.0.0 (not before 2027-06-30).",
        "ktrdr: Invalid configuration (2 problems):",
        "  - WORKER_PORT='abc': expected a whole number",
        "  - KTRDR_AUTH_WORKER_TOKEN='  ': set but empty; expected a non-empty secret, or "
        "unset it to use the default (insecure development value)",
    ]


def test_insecure_default_box_is_written_on_its_own_lines() -> None:
    """The insecure-defaults box follows a bare warning prefix, border first."""
    stderr = io.StringIO()
    load_or_exit("worker", {}, env_file=None, stderr=stderr)
    lines = stderr.getvalue().splitlines()
    assert lines[0] == "ktrdr: warning:"
    assert lines[1].startswith("+---")
    assert "KTRDR_AUTH_WORKER_TOKEN is still the development default" in stderr.getvalue()


def test_default_stream_is_sys_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    """Without a stream argument, warnings go to sys.stderr (nothing to stdout)."""
    load_or_exit("worker", {**ACK, "LOG_LEVEL": "debug"}, env_file=None)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("ktrdr: warning: LOG_LEVEL is deprecated")


def test_deprecation_warning_is_visible_even_when_python_warnings_are_ignored() -> None:
    """Under `python -W ignore` (as servers often run) the warning still reaches stderr."""
    code = (
        "from ktrdr.startup import load_or_exit;"
        "load_or_exit('worker', {'WORKER_ID': 'w1', 'KTRDR_ACKNOWLEDGE_INSECURE_DEFAULTS': '1'},"
        " env_file=None)"
    )
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0
    assert result.stderr.startswith(
        "ktrdr: warning: WORKER_ID is deprecated; rename it to KTRDR_WORKER_ID."
    )


def test_configuration_error_in_a_process_is_exit_1_without_traceback() -> None:
    """A real process with a bad variable exits 1 with the report and no traceback."""
    code = (
        "from ktrdr.startup import load_or_exit;"
        "load_or_exit('worker', {'KTRDR_WORKER_PORT': '0'}, env_file=None)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO)},
    )
    assert result.returncode == EXIT_CONFIG_ERROR
    assert "Traceback" not in result.stderr
    assert "KTRDR_WORKER_PORT='0': expected a whole number between 1 and 65535" in result.stderr


def _fresh_interpreter(code: str) -> str:
    """What ``code`` prints in a new interpreter (nothing imported beforehand)."""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return result.stdout.strip()


def test_without_httpx_cli_keeps_httpxs_command_line_client_out() -> None:
    """Called first, httpx loads without its CLI (no rich, no pygments) and still works."""
    code = (
        "import sys\n"
        "from ktrdr.startup import without_httpx_cli\n"
        "took = without_httpx_cli()\n"
        "import httpx\n"
        "client = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(204)))\n"
        "print(took, sys.modules['httpx._main'], 'rich' in sys.modules,"
        " 'pygments' in sys.modules, httpx.main.__module__, client.get('http://x').status_code)"
    )
    assert _fresh_interpreter(code) == "True None False False httpx 204"


def test_httpx_still_imports_its_cli_from_the_module_the_hook_names() -> None:
    """Plain ``import httpx`` loads httpx._main and rich: the hook aims at a live import.

    If an httpx upgrade stops importing its CLI (or moves it), this fails: the hook
    can then go, or must follow the new name.
    """
    code = (
        f"import sys, httpx; print(type(sys.modules.get({HTTPX_CLI_MODULE!r})).__name__,"
        " 'rich' in sys.modules)"
    )
    assert _fresh_interpreter(code) == "module True"


def test_without_httpx_cli_does_nothing_once_httpx_is_loaded() -> None:
    """In a process that already holds httpx (this one), the hook changes nothing."""
    import httpx  # noqa: F401 - make sure it is loaded, as it is in any test process

    before = sys.modules.get(HTTPX_CLI_MODULE)

    assert without_httpx_cli() is False
    assert sys.modules.get(HTTPX_CLI_MODULE) is before
