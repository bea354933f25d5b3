"""load_or_exit: warnings on stderr under any runner, exit 1 with the report, no traceback."""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
from pathlib import Path

import pytest

from ktrdr.config import WorkerConfig, WorkerType
from ktrdr.startup import (
    EXIT_CONFIG_ERROR,
    UNUSED_BY_SERVERS,
    load_or_exit,
    without_unused_imports,
)

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


def test_without_unused_imports_keeps_httpxs_cli_and_trio_out() -> None:
    """Called first: httpx without its CLI (no rich, no pygments), httpcore without trio,
    and an async request still goes through.
    """
    code = (
        "import asyncio, sys\n"
        "from ktrdr.startup import without_unused_imports\n"
        "kept_out = without_unused_imports()\n"
        "import httpx\n"
        "async def get():\n"
        "    transport = httpx.AsyncHTTPTransport()\n"
        "    async with httpx.AsyncClient(transport=transport) as client:\n"
        "        try:\n"
        "            await client.get('http://127.0.0.1:9/')\n"
        "        except httpx.ConnectError:\n"
        "            return 'refused'\n"
        "print(kept_out, [m for m in ('httpx._main', 'trio', 'rich', 'pygments')"
        " if sys.modules.get(m) is not None], httpx.main.__module__, asyncio.run(get()))"
    )
    expected = "('httpx._main', 'trio') [] httpx refused"
    assert _fresh_interpreter(code) == expected


@pytest.mark.parametrize(("module", "importer"), sorted(UNUSED_BY_SERVERS.items()))
def test_each_unused_module_is_still_imported_by_its_library(module: str, importer: str) -> None:
    """Plain ``import <importer>`` loads the module: each entry aims at a live import.

    If an upgrade stops importing it (or moves it), this fails: the entry can then go,
    or must follow the new name. A module that is not installed is not imported anyway.
    """
    if importlib.util.find_spec(module.split(".")[0]) is None:
        pytest.skip(f"{module} is not installed")
    code = f"import sys, {importer}; print(type(sys.modules.get({module!r})).__name__)"
    assert _fresh_interpreter(code) == "module"


def test_without_unused_imports_leaves_a_loaded_library_alone() -> None:
    """In a process that already holds httpx and httpcore (this one), it changes nothing."""
    import httpcore  # noqa: F401 - make sure both are loaded, as in any test process
    import httpx  # noqa: F401

    before = {module: sys.modules.get(module) for module in UNUSED_BY_SERVERS}

    assert without_unused_imports() == ()
    assert {module: sys.modules.get(module) for module in UNUSED_BY_SERVERS} == before
