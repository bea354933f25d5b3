"""What every entrypoint does first: validate the configuration or exit 1.

Also :func:`without_httpx_cli`, which a server entrypoint calls before its runtime's
imports to keep httpx's command-line client out of the process.

Deprecated names and warnings are written to stderr (visible under any runner);
a ``ConfigurationError`` becomes its report on stderr and exit code 1, never a
traceback. Validation runs here, at process start, never at import time, so a
server started with auto-reload cannot keep running after a configuration error.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal, TextIO, overload

from ktrdr.config import (
    DEFAULT_ENV_FILE,
    BackendConfig,
    Component,
    ConfigurationError,
    DeprecationReporter,
    FullConfig,
    WorkerConfig,
    WorkerType,
    validate_all,
)
from ktrdr.config.deprecation import WARNING_PREFIX

EXIT_CONFIG_ERROR = 1

#: The module httpx's ``__init__`` imports its command-line client from.
HTTPX_CLI_MODULE = "httpx._main"


def without_httpx_cli() -> bool:
    """Keep httpx's command-line client out of this process; True if it took effect.

    ``import httpx`` also imports ``httpx._main`` (click, rich and pygments: about a
    tenth of a worker's cold start) whenever those are installed, as they are for
    ktrdr's own CLI; a server never runs it. ``None`` in ``sys.modules`` makes that
    import raise ``ImportError`` (the import system's documented rule), which httpx
    answers with its own fallback ``httpx.main``. Call it before anything imports
    httpx; once httpx is loaded it does nothing and returns False.
    """
    if "httpx" in sys.modules:
        return False
    sys.modules.setdefault(HTTPX_CLI_MODULE, None)  # type: ignore[arg-type]
    return sys.modules[HTTPX_CLI_MODULE] is None


@overload
def load_or_exit(
    component: Literal["worker"],
    environ: Mapping[str, str],
    *,
    worker_type: WorkerType | None = ...,
    env_file: str | Path | None = ...,
    stderr: TextIO | None = ...,
) -> WorkerConfig: ...
@overload
def load_or_exit(
    component: Literal["backend"],
    environ: Mapping[str, str],
    *,
    worker_type: WorkerType | None = ...,
    env_file: str | Path | None = ...,
    stderr: TextIO | None = ...,
) -> BackendConfig: ...
@overload
def load_or_exit(
    component: Literal["all"],
    environ: Mapping[str, str],
    *,
    worker_type: WorkerType | None = ...,
    env_file: str | Path | None = ...,
    stderr: TextIO | None = ...,
) -> FullConfig: ...
@overload
def load_or_exit(
    component: Component,
    environ: Mapping[str, str],
    *,
    worker_type: WorkerType | None = ...,
    env_file: str | Path | None = ...,
    stderr: TextIO | None = ...,
) -> WorkerConfig | BackendConfig | FullConfig: ...
def load_or_exit(
    component: Component,
    environ: Mapping[str, str],
    *,
    worker_type: WorkerType | None = None,
    env_file: str | Path | None = DEFAULT_ENV_FILE,
    stderr: TextIO | None = None,
) -> WorkerConfig | BackendConfig | FullConfig:
    """Validate ``component``'s configuration; on failure print the report and exit 1.

    Warnings (deprecated names, insecure defaults, unknown variables) are written to
    ``stderr`` (default ``sys.stderr``) before anything else, so they are seen under
    any runner; the report of a ``ConfigurationError`` follows, and the process exits
    with ``EXIT_CONFIG_ERROR`` and no traceback.
    """
    stream = stderr if stderr is not None else sys.stderr
    try:
        config = validate_all(component, environ, env_file=env_file, worker_type=worker_type)
    except ConfigurationError as exc:
        write_warnings(stream, exc.warnings)
        stream.write(f"ktrdr: {exc}\n")
        stream.flush()
        raise SystemExit(EXIT_CONFIG_ERROR) from None
    DeprecationReporter(stream).report(config.report.deprecations)
    write_warnings(stream, config.report.warnings)
    write_notes(stream, config.report.notes)
    return config


def write_warnings(stream: TextIO, warnings: Iterable[str]) -> None:
    """Write each warning with the ``ktrdr: warning:`` prefix (a box on its own lines)."""
    for warning in warnings:
        if "\n" in warning:  # a box: the prefix on a line of its own
            stream.write(f"{WARNING_PREFIX.rstrip()}\n{warning}\n")
        else:
            stream.write(f"{WARNING_PREFIX}{warning}\n")
    stream.flush()


def write_notes(stream: TextIO, notes: Iterable[str]) -> None:
    """Write each note (a mention, not a finding) with the ``ktrdr: note:`` prefix."""
    for note in notes:
        stream.write(f"ktrdr: note: {note}\n")
    stream.flush()


__all__ = [
    "EXIT_CONFIG_ERROR",
    "HTTPX_CLI_MODULE",
    "load_or_exit",
    "without_httpx_cli",
    "write_notes",
    "write_warnings",
]
