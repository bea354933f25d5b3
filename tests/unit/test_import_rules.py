"""Imports point one way: jobs use config, protocol and the shared vocabulary; the worker
runtime and the backend never import the jobs or numpy (checked on the source and on a
real interpreter).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import ktrdr

PACKAGE = Path(ktrdr.__file__).parent
#: What ktrdr.jobs may import from ktrdr (besides itself). ktrdr.tracing is a shared
#: layer like config (it imports only config): a job's spans join its operation's trace.
JOBS_MAY_USE = ("ktrdr.config", "ktrdr.protocol", "ktrdr.vocabulary", "ktrdr.errors",
                "ktrdr.job_messages", "ktrdr.tracing", "ktrdr.log_context")  # fmt: skip
#: Where ktrdr.jobs may be imported from: the jobs themselves and the CLI.
JOBS_IMPORTED_BY = ("jobs", "cli")


def imports_of(path: Path) -> set[str]:
    """Every module a source file imports (absolute names), at any depth."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def sources(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (PACKAGE / package).rglob("*.py"))


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_the_scan_sees_imports_at_any_depth(tmp_path: Path) -> None:
    """The scanner finds imports in functions too (a lazy import is still an import)."""
    sample = tmp_path / "sample.py"
    sample.write_text("import os\n\ndef f():\n    from numpy import linalg\n")
    assert imports_of(sample) == {"os", "numpy"}


@pytest.mark.parametrize("path", sources("jobs"), ids=lambda p: p.name)
def test_jobs_use_only_config_protocol_vocabulary_and_messages(path: Path) -> None:
    """A job module imports from ktrdr only the shared layers below it."""
    ours = {m for m in imports_of(path) if _within(m, ("ktrdr",))}
    allowed = (*JOBS_MAY_USE, "ktrdr.jobs")
    assert {m for m in ours if not _within(m, allowed)} == set()


def test_the_log_context_imports_nothing_of_ktrdr() -> None:
    """ktrdr.log_context is a leaf every layer (jobs included) may use: stdlib and attrs only."""
    ours = {m for m in imports_of(PACKAGE / "log_context.py") if _within(m, ("ktrdr",))}
    assert ours == set()


@pytest.mark.parametrize("path", sources("workers", "api"), ids=lambda p: p.name)
def test_the_runtime_and_the_backend_never_import_jobs_or_numpy(path: Path) -> None:
    """ktrdr.workers and ktrdr.api import neither ktrdr.jobs nor numpy."""
    assert {m for m in imports_of(path) if _within(m, ("numpy", "ktrdr.jobs"))} == set()


def test_only_the_cli_imports_jobs() -> None:
    """Outside ktrdr.jobs, only the CLI may import it (workers name it, never import it)."""
    importers = [
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if _within(path.relative_to(PACKAGE).parts[0], JOBS_IMPORTED_BY) is False
        and any(_within(m, ("ktrdr.jobs",)) for m in imports_of(path))
    ]
    assert importers == []


def test_a_worker_entrypoint_and_the_backend_load_no_numpy() -> None:
    """Importing every worker and backend module in a fresh interpreter loads no numpy."""
    modules = [
        "ktrdr.workers",
        "ktrdr.workers.training_worker",
        "ktrdr.workers.backtest_worker",
        "ktrdr.workers.entrypoint",
        "ktrdr.api",
        "ktrdr.api.main",
        "ktrdr.job_messages",
    ]
    code = (
        f"import sys\nfor name in {modules!r}:\n    __import__(name)\n"
        "print(sorted(m for m in sys.modules if m == 'numpy' or m.startswith('ktrdr.jobs')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"


def test_a_worker_process_loads_neither_fastapi_nor_httpxs_cli(tmp_path: Path) -> None:
    """A worker run as ``python -m`` (stopped by a bad port right after its imports) never
    loads FastAPI, httpx's command-line client (rich, pygments), trio or numpy.
    """
    code = (
        "import runpy, sys\n"
        "try:\n"
        "    runpy.run_module('ktrdr.workers.training_worker', run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 1, exc.code\n"
        "unwanted = ('fastapi', 'httpx._main', 'rich', 'pygments', 'trio', 'numpy')\n"
        "print([m for m in unwanted if sys.modules.get(m) is not None],"
        " 'ktrdr.workers.server' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=tmp_path,
        env={"KTRDR_WORKER_PORT": "not-a-port"},
    )
    assert done.stdout.strip() == "[] True"


def test_importing_the_workers_package_loads_none_of_its_modules() -> None:
    """``import ktrdr.workers`` defines names only (loaded on first use), so an entrypoint
    can prepare the process before the runtime's imports.
    """
    code = (
        "import sys, ktrdr.workers\n"
        "print(sorted(m for m in sys.modules if m.startswith('ktrdr.workers.')),"
        " 'httpx' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[] False"
