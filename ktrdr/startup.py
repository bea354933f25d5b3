"""What every entrypoint does first: validate the configuration or exit 1.

Deprecated names and warnings are written to stderr (visible under any runner);
a ``ConfigurationError`` becomes its report on stderr and exit code 1, never a
traceback. Validation runs here, at process start, never at import time, so a
server started with auto-reload cannot keep running after a configuration error.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
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

EXIT_CONFIG_ERROR = 1


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
    """Validate ``component``'s configuration; on failure print the report and exit 1."""
    stream = stderr if stderr is not None else sys.stderr
    try:
        config = validate_all(component, environ, env_file=env_file, worker_type=worker_type)
    except ConfigurationError as exc:
        for line in exc.warnings:
            stream.write(f"ktrdr: warning: {line}\n")
        stream.write(f"ktrdr: {exc}\n")
        stream.flush()
        raise SystemExit(EXIT_CONFIG_ERROR) from None
    DeprecationReporter(stream).report(config.report.deprecations)
    for warning in config.report.warnings:
        stream.write(f"ktrdr: warning: {warning}\n")
    stream.flush()
    return config


__all__ = ["EXIT_CONFIG_ERROR", "load_or_exit"]
