"""What every entrypoint does first: validate the configuration or exit 1.

Also :func:`without_unused_imports`, which a server entrypoint calls before its
runtime's imports to keep modules it never uses (httpx's command-line client, trio)
out of the process.

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

#: Modules a server never uses that its libraries import whenever they are installed
#: → the library that imports them: httpx's command-line client (``httpx._main``:
#: click, rich and pygments, installed for ktrdr's own CLI), and trio, which httpcore
#: imports to support it besides asyncio (installed here with the browser tests).
UNUSED_BY_SERVERS: Mapping[str, str] = {"httpx._main": "httpx", "trio": "httpcore"}


def without_unused_imports() -> tuple[str, ...]:
    """Keep :data:`UNUSED_BY_SERVERS` out of this process; the modules it kept out.

    ``None`` in ``sys.modules`` makes importing a module raise ``ImportError`` (the
    import system's documented rule), which each importing library answers with its
    own fallback: httpx's ``main`` says the CLI is not installed, httpcore runs on
    asyncio alone. Together they were about a fifth of a worker's cold start. Call
    it before anything imports those libraries; a module already loaded, or whose
    importer is, is left alone.
    """
    kept_out = []
    for module, importer in UNUSED_BY_SERVERS.items():
        if module in sys.modules or importer in sys.modules:
            continue
        sys.modules[module] = None  # type: ignore[assignment]
        kept_out.append(module)
    return tuple(kept_out)


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
    "UNUSED_BY_SERVERS",
    "load_or_exit",
    "without_unused_imports",
    "write_notes",
    "write_warnings",
]
