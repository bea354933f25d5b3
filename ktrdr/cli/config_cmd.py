"""``ktrdr config``: show, check and document the configuration.

``show`` prints the effective values (secrets masked) and where each came from,
``check`` validates a component (exit 0, or 1 with the report), ``docs`` writes
``docs/configuration.md`` from the declarations (``--check`` only compares), and
``migrate`` rewrites an env or compose file to the current names and values.
Errors are the report (or one line) on stderr and exit code 1, never a traceback.
The environment read is ``os.environ`` (this is an entrypoint), or the mapping a
test passes as the click context ``obj``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ktrdr.config import (
    COMPONENTS,
    DEFAULT_ENV_FILE,
    Component,
    ConfigurationError,
    DeprecationReporter,
    WorkerType,
    effective_values,
    validate_all,
)
from ktrdr.config.bundles import AnyConfig
from ktrdr.config.docs import DOCS_PATH, render_markdown
from ktrdr.config.migrate_files import MigrationError, migrate_file, read_text, write_atomically
from ktrdr.startup import EXIT_CONFIG_ERROR, write_notes, write_warnings

#: Columns used when stdout is not a terminal (a pipe must not truncate values).
_PIPE_WIDTH = 200

_component_option = click.option(
    "--component",
    type=click.Choice(COMPONENTS),
    default="all",
    show_default=True,
    help="which process's configuration to load",
)
_worker_type_option = click.option(
    "--worker-type",
    type=click.Choice([t.value for t in WorkerType]),
    default=None,
    help="the worker type an entrypoint would fix (affects the default worker id)",
)
_env_file_option = click.option(
    "--env-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_ENV_FILE,
    show_default=True,
    help="dotenv file read after the environment (ignored when missing)",
)


def register(group: click.Group) -> None:
    """Add the ``config`` command group to ``group``."""
    group.add_command(config)


@click.group("config")
def config() -> None:
    """Show, check and document the KTRDR_* configuration."""


@config.command("show")
@_component_option
@click.option("--json", "as_json", is_flag=True, help="print machine-readable JSON")
@click.option("--sources", is_flag=True, help="also show where each value came from")
@_worker_type_option
@_env_file_option
def show(
    component: Component,
    as_json: bool,
    sources: bool,
    worker_type: str | None,
    env_file: Path,
) -> None:
    """Print the effective configuration of a component (secrets masked)."""
    loaded = _load(component, worker_type, env_file)
    rows = effective_values(loaded)
    if as_json:
        payload: dict[str, Any] = {
            row.variable: (
                {
                    "value": row.value,
                    "source": row.source.describe(),
                    "kind": row.source.kind.value,
                    "variable": row.source.variable,
                }
                if sources
                else row.value
            )
            for row in rows
        }
        click.echo(json.dumps(payload, indent=2))  # ASCII: safe on any terminal encoding
        return
    table = Table(title=f"ktrdr configuration: {component}", title_justify="left")
    table.add_column("Variable", no_wrap=True)
    table.add_column("Value")
    if sources:
        table.add_column("Source")
    for row in rows:
        value = _printable(row.value) if row.value else "(unset)"
        cells = [Text(row.variable), Text(value)]  # Text: values are never markup
        if sources:
            cells.append(Text(_printable(row.source.describe())))
        table.add_row(*cells)
    _console().print(table)


@config.command("check")
@_component_option
@_worker_type_option
@_env_file_option
def check(component: Component, worker_type: str | None, env_file: Path) -> None:
    """Validate a component's configuration: exit 0, or 1 with every problem listed."""
    _load(component, worker_type, env_file)
    click.echo(f"ktrdr: the {component} configuration is valid")


@config.command("docs")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DOCS_PATH,
    show_default=True,
    help="file to write",
)
@click.option("--check", "check_only", is_flag=True, help="exit 1 if the file is stale")
def docs(output: Path, check_only: bool) -> None:
    """Write docs/configuration.md from the settings declarations."""
    rendered = render_markdown()
    try:
        if check_only:
            current = output.read_text(encoding="utf-8") if output.exists() else None
            if current != rendered:
                _fail(f"{output} is stale; regenerate it with `ktrdr config docs`")
            click.echo(f"ktrdr: {output} is up to date")
            return
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(rendered, encoding="utf-8", newline="\n")
    except OSError as exc:
        _fail(f"cannot {'read' if check_only else 'write'} {output}: {exc.strerror or exc}")
    click.echo(f"ktrdr: wrote {output}")


@config.command("migrate")
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--check", "check_only", is_flag=True, help="exit 1 when anything would change (for CI)"
)
@click.option("--write", is_flag=True, help="rewrite the file in place (atomically)")
@click.option(
    "--component",
    type=click.Choice(COMPONENTS),
    default=None,
    help="who reads the variables (default: all for an env file; for each compose "
    "service, what its command runs)",
)
def migrate(path: Path, check_only: bool, write: bool, component: Component | None) -> None:
    """Rewrite an env or compose file to the current KTRDR_* names and values.

    Prints the migrated file (or, with --write, replaces it) and reports every change
    on stderr; comments, order and other components' variables are kept.
    """
    if check_only and write:
        _fail("--check and --write cannot be combined")
    try:
        result = migrate_file(path, read_text(path), component)
    except MigrationError as exc:
        _fail(str(exc))
    for change in result.changes:
        click.echo(f"ktrdr: {path}: {change.where}: {change.text}", err=True)
    for note in result.notes:
        click.echo(f"ktrdr: note: {path}: {note.where}: {note.text}", err=True)
    count = f"{len(result.changes)} change{'' if len(result.changes) == 1 else 's'}"
    if check_only:
        if result.changed:
            _fail(f"{path} needs migrating ({count}); run `ktrdr config migrate --write {path}`")
        click.echo(f"ktrdr: {path} is up to date", err=True)
        return
    if write:
        if result.changed:
            try:
                write_atomically(path, result.text)
            except OSError as exc:
                _fail(f"cannot write {path}: {exc.strerror or exc}")
        click.echo(
            f"ktrdr: {path}: {count} written" if result.changed else f"ktrdr: {path} is up to date",
            err=True,
        )
        return
    click.echo(result.text, nl=False)


def _environ() -> Mapping[str, str]:
    """The environment to read: ``os.environ``, unless the context carries a mapping."""
    obj = click.get_current_context().obj
    return obj if isinstance(obj, Mapping) else os.environ


def _load(component: Component, worker_type: str | None, env_file: Path) -> AnyConfig:
    """Validate, writing warnings to stderr; on failure the report, and exit 1."""
    stderr = sys.stderr  # click.testing swaps it; get_text_stream is deprecated
    kind = WorkerType(worker_type) if worker_type is not None else None
    try:
        loaded = validate_all(component, _environ(), env_file=env_file, worker_type=kind)
    except ConfigurationError as exc:
        write_warnings(stderr, exc.warnings)
        _fail(str(exc))
    DeprecationReporter(stderr).report(loaded.report.deprecations)
    write_warnings(stderr, loaded.report.warnings)
    write_notes(stderr, loaded.report.notes)
    return loaded


def _fail(message: str) -> NoReturn:
    """Print ``message`` to stderr and exit 1 (no traceback)."""
    click.echo(f"ktrdr: {message}", err=True)
    raise SystemExit(EXIT_CONFIG_ERROR)


def _printable(text: str) -> str:
    """``text`` with control characters and lone surrogates escaped (no terminal tricks)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _console() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=_PIPE_WIDTH)
    return console
