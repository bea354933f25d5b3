"""``ktrdr workers`` and ``ktrdr ops``: look at and drive a running fleet.

Every command talks to the backend over HTTP with the operator token
(:mod:`ktrdr.cli.operator_token` says where it is found). A backend that does not
answer is one line on stderr and exit code 2; an error the backend reports is one
line and exit 1, a refused token included (the line names the variable to set).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import attrs
import click
import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from ktrdr.cli.operator_token import DEFAULT_TOKEN_FILE, resolve_operator_token
from ktrdr.cli.plot import render_charts
from ktrdr.config import AuthSettings, ConfigurationError, WorkerSettings, env_name
from ktrdr.errors import BackendError, BackendUnreachable
from ktrdr.fleet_client import FleetClient
from ktrdr.protocol import MAX_COUNTED, MAX_OFFSET, MAX_PAGE_ITEMS
from ktrdr.vocabulary import FINISHED_STATUSES, OperationStatus, OperationType

EXIT_FAILED = 1
EXIT_UNREACHABLE = 2
DEFAULT_BACKEND_URL = str(attrs.fields(WorkerSettings).backend_url.default)
_FINISHED = frozenset(s.value for s in FINISHED_STATUSES)
_STATUSES = [s.value for s in OperationStatus]
_TYPES = [t.value for t in OperationType]

F = TypeVar("F", bound=Callable[..., Any])


def backend_url_option(func: F) -> F:
    """``--backend-url``, falling back to KTRDR_WORKER_BACKEND_URL, then the default."""
    variable = env_name(attrs.fields(WorkerSettings).backend_url)
    option = click.option(
        "--backend-url",
        envvar=variable,
        default=DEFAULT_BACKEND_URL,
        show_default=True,
        help=f"backend to talk to (env: {variable})",
    )
    return option(func)


def token_option(func: F) -> F:
    """``--token``; else KTRDR_AUTH_OPERATOR_TOKEN(_FILE), else the file ``ktrdr up`` wrote."""
    variable = env_name(attrs.fields(AuthSettings).operator_token)
    option = click.option(
        "--token",
        default=None,
        metavar="TOKEN",
        help=f"operator token (default: {variable} or {variable}_FILE, else "
        f"{DEFAULT_TOKEN_FILE} as written by `ktrdr up`)",
    )
    return option(func)


@contextmanager
def fleet(backend_url: str, token: str | None, timeout_s: float = 10.0) -> Iterator[FleetClient]:
    """A client for one command; backend failures become one line and an exit code."""
    try:
        operator = resolve_operator_token(token, os.environ)
    except ConfigurationError as exc:
        click.echo(f"ktrdr: {exc}", err=True)
        raise SystemExit(EXIT_FAILED) from None
    with httpx.Client(timeout=timeout_s) as http:
        try:
            yield FleetClient(
                base_url=backend_url,
                client=http,
                token=operator.secret,
                token_source=operator.source,
            )
        except BackendUnreachable as exc:
            click.echo(f"ktrdr: {exc}", err=True)
            raise SystemExit(EXIT_UNREACHABLE) from None
        except BackendError as exc:
            click.echo(f"ktrdr: {exc}", err=True)
            raise SystemExit(EXIT_FAILED) from None


def _age(timestamp: str | None, now: datetime.datetime) -> str:
    if not timestamp:
        return "-"
    try:
        then = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return timestamp
    seconds = max(0.0, (now - then).total_seconds())
    return f"{seconds:.1f}s ago" if seconds < 120 else f"{seconds / 60:.0f}m ago"


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


@click.command("workers")
@backend_url_option
@token_option
@click.option("--json", "as_json", is_flag=True, help="print the backend's JSON")
def workers(backend_url: str, token: str | None, as_json: bool) -> None:
    """List registered workers."""
    with fleet(backend_url, token) as client:
        items = client.workers()
    if as_json:
        _print_json(items)
        return
    now = datetime.datetime.now(datetime.timezone.utc)
    table = Table(title=f"workers at {backend_url}")
    for column in ("id", "type", "status", "operation", "last heartbeat", "fingerprint"):
        table.add_column(column)
    for item in items:
        fingerprint = str(item.get("config_fingerprint", ""))
        if item.get("fingerprint_drift"):
            fingerprint += " (drift)"
        table.add_row(
            str(item.get("worker_id")),
            str(item.get("worker_type")),
            str(item.get("status")),
            str(item.get("current_operation_id") or "-"),
            _age(item.get("last_heartbeat_at"), now),
            fingerprint,
        )
    Console().print(table)


def _parse_param(text: str) -> tuple[str, Any]:
    """``k=v``: v as a JSON number/bool/null when it parses as one, else a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        message = f"expected KEY=VALUE, got {text!r}"
        raise click.BadParameter(message, param_hint="--param")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    if isinstance(value, (dict, list)):
        value = raw
    return key.strip(), value


@click.group("ops")
def ops() -> None:
    """Submit, list, watch, cancel and resume operations."""


@ops.command("submit")
@click.argument("operation_type", type=click.Choice(_TYPES))
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="a parameter")
@click.option("--watch", is_flag=True, help="follow the operation until it ends")
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0, min_open=True),
    help="seconds each attempt may run (default: the backend's KTRDR_OPS_DEFAULT_TIMEOUT)",
)
@backend_url_option
@token_option
def submit(
    operation_type: str,
    params: tuple[str, ...],
    watch: bool,
    timeout_s: float | None,
    backend_url: str,
    token: str | None,
) -> None:
    """Create an operation; prints its id."""
    parameters = dict(_parse_param(p) for p in params)
    with fleet(backend_url, token) as client:
        operation = client.submit(operation_type, parameters, timeout_s=timeout_s)
        click.echo(operation["id"])
        if watch:
            _watch(client, operation["id"], Console(stderr=True))


@ops.command("list")
@click.option("--status", type=click.Choice(_STATUSES))
@click.option("--type", "operation_type", type=click.Choice(_TYPES))
@click.option(
    "--limit",
    type=click.IntRange(1),
    default=50,
    show_default=True,
    help=f"operations to list; beyond {MAX_PAGE_ITEMS} (one page) the next pages are "
    "fetched by cursor",
)
@click.option("--all", "everything", is_flag=True, help="list every matching operation")
@click.option(
    "--offset",
    type=click.IntRange(0, MAX_OFFSET),
    default=0,
    show_default=True,
    help="operations to skip first (newest first)",
)
@click.option("--json", "as_json", is_flag=True, help="print the backend's JSON")
@backend_url_option
@token_option
def list_operations(
    status: str | None,
    operation_type: str | None,
    limit: int,
    everything: bool,
    offset: int,
    as_json: bool,
    backend_url: str,
    token: str | None,
) -> None:
    """List operations, newest first (results: ``ktrdr ops show``)."""
    items: list[dict[str, Any]] = []
    first: dict[str, Any] = {}
    last: dict[str, Any] = {}
    with fleet(backend_url, token) as client:
        pages = client.operation_pages(
            status=status,
            operation_type=operation_type,
            limit=None if everything else limit,
            offset=offset,
        )
        for page in pages:
            first = first or page
            last = page
            items += page["items"]
    if as_json:
        _print_json({**first, "items": items, "next_cursor": last.get("next_cursor")})
        return
    total = first.get("total")
    counted = f"{total}" if total is not None else f"more than {MAX_COUNTED:,}"
    table = Table(title=f"operations ({counted} in all)")
    for column in ("id", "type", "status", "progress", "worker", "created"):
        table.add_column(column)
    for item in items:
        progress = item.get("progress") or {}
        table.add_row(
            str(item["id"]),
            str(item.get("type")),
            str(item.get("status")),
            f"{progress.get('percent', 0):.0f}%" if progress else "-",
            str(item.get("worker_id") or "-"),
            str(item.get("created_at", "-")),
        )
    Console().print(table)


@ops.command("show")
@click.argument("operation_id")
@click.option("--json", "as_json", is_flag=True, help="print the backend's JSON")
@click.option(
    "--plot",
    is_flag=True,
    help="also draw its series: loss and accuracy per epoch, or equity per bar",
)
@backend_url_option
@token_option
def show(operation_id: str, as_json: bool, plot: bool, backend_url: str, token: str | None) -> None:
    """Show one operation: status, progress, result or error, trace id (and charts)."""
    if as_json and plot:
        message = "--plot draws charts in the terminal; use --json alone for the data"
        raise click.UsageError(message)
    with fleet(backend_url, token) as client:
        operation = client.operation(operation_id)
        series = client.series(operation_id) if plot else None
    if as_json:
        _print_json(operation)
        return
    console = Console()
    _print_operation(console, operation)
    if series is not None:
        _print_charts(console, series)


def _print_charts(console: Console, series: dict[str, Any]) -> None:
    charts = render_charts(series, width=min(console.width, 120), color=console.is_terminal)
    if not charts:
        console.print("no series recorded yet")
    for chart in charts:
        console.print(Text.from_ansi(chart), no_wrap=True, crop=True)


def _print_operation(console: Console, operation: dict[str, Any]) -> None:
    table = Table(show_header=False, title=f"operation {operation['id']}")
    table.add_column("field", style="bold")
    table.add_column("value")
    shown = (
        "type",
        "status",
        "worker_id",
        "attempt",
        "lost_attempts",
        "timeout_s",
        "created_at",
        "started_at",
        "finished_at",
        "error",
    )
    for key in (*shown, "trace_id"):  # trace_id: only when tracing was on (KTRDR_OTEL_*)
        if operation.get(key) is not None:
            table.add_row(key, str(operation[key]))
    progress = operation.get("progress") or {}
    if progress and operation.get("status") not in _FINISHED:
        table.add_row(
            "progress", f"{progress.get('percent', 0):.1f}% {progress.get('message', '')}"
        )
    for key, value in (operation.get("result") or {}).items():
        if not isinstance(value, (dict, list)):
            table.add_row(
                f"result.{key}", f"{value:.6g}" if isinstance(value, float) else str(value)
            )
    console.print(table)


@ops.command("watch")
@click.argument("operation_id")
@backend_url_option
@token_option
def watch(operation_id: str, backend_url: str, token: str | None) -> None:
    """Follow an operation with a live progress bar until it ends."""
    with fleet(backend_url, token) as client:
        _watch(client, operation_id, Console())


def _watch(client: FleetClient, operation_id: str, console: Console, poll_s: float = 0.25) -> None:
    """Poll the operation and draw its progress; exit 1 unless it completed."""
    columns = (
        TextColumn("[bold]{task.fields[label]}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("", total=100, label=operation_id[:12], detail="pending")
        while True:
            operation = client.operation(operation_id)
            progress = operation.get("progress") or {}
            bar.update(
                task,
                completed=float(progress.get("percent", 0.0)),
                detail=_progress_detail(operation),
            )
            if operation.get("status") in _FINISHED:
                if operation["status"] == "completed":
                    bar.update(task, completed=100)
                break
            time.sleep(poll_s)  # pacing a poll loop against a remote server
    _print_operation(console, operation)
    if operation["status"] != "completed":
        raise SystemExit(EXIT_FAILED)


def _progress_detail(operation: dict[str, Any]) -> str:
    progress = operation.get("progress") or {}
    details = progress.get("details") or {}
    parts = [str(operation.get("status"))]
    for key in ("epoch", "bar", "loss", "accuracy", "equity"):
        if key in details:
            value = details[key]
            parts.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
    return " ".join(parts)


@ops.command("logs")
@click.argument("operation_id")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object per line")
@backend_url_option
@token_option
def logs(operation_id: str, as_json: bool, backend_url: str, token: str | None) -> None:
    """Print the worker-side log of an operation (its job process's lines included)."""
    with fleet(backend_url, token) as client:
        answer = client.logs(operation_id)
    lines = answer.get("lines") or []
    if answer.get("truncated"):
        click.echo("(the log is longer than the backend reads; its end is cut)", err=True)
    for line in lines:
        click.echo(json.dumps(line) if as_json else log_line(line))


#: Control characters (ANSI escapes included) a log line must not send to a terminal.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def log_line(line: dict[str, Any]) -> str:
    """One log record as text: time, level, logger, attempt, message (and traceback)."""
    attempt = line.get("attempt")
    where = f" [attempt {attempt}]" if attempt is not None else ""
    text = (
        f"{line.get('time', '-')} {line.get('level', '-')!s:8} "
        f"{line.get('logger', '-')}{where}: {line.get('message', '')}"
    )
    if line.get("exception"):
        text += "\n" + str(line["exception"])
    return _CONTROL.sub("?", text)


@ops.command("cancel")
@click.argument("operation_id")
@backend_url_option
@token_option
def cancel(operation_id: str, backend_url: str, token: str | None) -> None:
    """Cancel a pending or running operation."""
    with fleet(backend_url, token) as client:
        operation = client.cancel(operation_id)
    click.echo(f"{operation['id']} {operation['status']}")


@ops.command("resume")
@click.argument("operation_id")
@backend_url_option
@token_option
def resume(operation_id: str, backend_url: str, token: str | None) -> None:
    """Resume a failed or cancelled operation from its checkpoint."""
    with fleet(backend_url, token) as client:
        operation = client.resume(operation_id)
    click.echo(f"{operation['id']} {operation['status']}")


def register(group: click.Group) -> None:
    """Add ``workers`` and ``ops`` to the ``ktrdr`` command."""
    group.add_command(workers)
    group.add_command(ops)
