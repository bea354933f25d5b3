"""``ktrdr up``: a working fleet on this machine with one command.

Starts a backend and training/backtest workers as child processes on loopback, the
embedded SQLite store and checkpoints under ``--data-dir``; prints each worker as it
registers and the dashboard's URL; ``--demo`` submits one operation of each type and
follows them to the end.
The backend gets an operator token: the configured one (``KTRDR_AUTH_OPERATOR_TOKEN``
or its ``_FILE``), else the one in ``<data dir>/operator_token``, made on first use
(owner-only, written atomically), which ``ktrdr workers`` and ``ktrdr ops`` read by
default. Workers never see it.
Ctrl-C, SIGTERM or SIGHUP stops every child (workers first, so they unregister) and
exits 0, even when stdout is a pipe whose reader is gone. A child that fails to start
stops the rest; its report is printed and the exit is 1. If ``ktrdr up`` itself dies
(SIGKILL included), its children stop on their own (:mod:`ktrdr.lifeline`).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Any

import attrs
import click
import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from ktrdr.cli.operator_token import (
    TOKEN_FILE_NAME,
    OperatorToken,
    ensure_token_file,
    from_configuration,
)
from ktrdr.cli.output import tolerant
from ktrdr.config import (
    APISettings,
    AuthSettings,
    CheckpointSettings,
    ConfigurationError,
    DatabaseSettings,
    EnvLoader,
    WorkerSettings,
    all_env_names,
    env_name,
)
from ktrdr.fleet_client import BackendError, BackendUnreachable, FleetClient
from ktrdr.protocol import DASHBOARD_PATH
from ktrdr.supervisor import Child, ChildSpec, Supervisor
from ktrdr.web import ensure_bindable

EXIT_FAILED = 1
_POLL_S = 0.2
DEMO_OPERATIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("training", {"epochs": 300, "bars": 5000, "seed": 7}),
    ("backtest", {"bars": 200000, "seed": 7, "fast_window": 20, "slow_window": 120}),
)


class UpError(Exception):
    """``ktrdr up`` cannot go on; the message is for the terminal."""


def per_child_variables() -> frozenset[str]:
    """Every name of the settings ``ktrdr up`` sets per child (current, deprecated, _FILE).

    Inherited values of these would make the children collide, so none is passed on.
    """
    api, worker = attrs.fields(APISettings), attrs.fields(WorkerSettings)
    per_child = (
        api.host,
        api.port,
        worker.id,
        worker.host,
        worker.port,
        worker.public_url,
        worker.backend_url,
        worker.type,
    )
    return frozenset(name for field in per_child for name in all_env_names(field))


def operator_variables() -> frozenset[str]:
    """Every name of the operator token (current, ``_FILE``): the backend's alone."""
    return frozenset(all_env_names(attrs.fields(AuthSettings).operator_token))


def operator_token(
    environ: Mapping[str, str], data_dir: Path
) -> tuple[OperatorToken, dict[str, str]]:
    """The fleet's operator token and the variables that give it to the backend.

    The configured token is passed on as configured; otherwise the token file under
    ``data_dir`` is kept (or made) and the backend reads it through ``_FILE``.
    """
    try:
        configured = from_configuration(environ)
        if configured is not None:
            names = operator_variables()
            return configured, {k: v for k, v in environ.items() if k in names}
        path = data_dir / TOKEN_FILE_NAME
        secret, what = ensure_token_file(path)
    except (ConfigurationError, OSError) as exc:
        raise UpError(f"cannot set up the operator token: {exc}") from None
    file_variable = env_name(attrs.fields(AuthSettings).operator_token) + "_FILE"
    return OperatorToken(secret, f"file {_shown(path)} ({what})"), {file_variable: str(path)}


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is inside it (as the CLI reads it)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _StopFlag:
    """Set by SIGINT/SIGTERM; the main loop checks it between polls."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        self.signal = signum


class Fleet:
    """One ``ktrdr up`` run: its children, its client, its terminal output."""

    def __init__(
        self,
        *,
        environ: Mapping[str, str],
        data_dir: Path,
        api_port: int,
        console: Console,
        supervisor: Supervisor,
        stop: _StopFlag,
        backend_env: Mapping[str, str] | None = None,
    ) -> None:
        """``backend_env``: variables for the backend alone (its operator token)."""
        held_back = per_child_variables() | operator_variables()
        self._base_env = {k: v for k, v in environ.items() if k not in held_back}
        self._backend_env = dict(backend_env or {})
        self._data_dir = data_dir
        self._api_port = api_port
        self._console = console
        self._supervisor = supervisor
        self._stop = stop
        self.backend_url = f"http://127.0.0.1:{api_port}"
        self.workers: list[Child] = []

    def _env(self, overrides: Mapping[attrs.Attribute[Any], str]) -> dict[str, str]:
        """The base environment plus ``overrides`` (settings field → value) for one child."""
        env = dict(self._base_env)
        env.setdefault(
            env_name(attrs.fields(DatabaseSettings).path), str(self._data_dir / "ktrdr.db")
        )
        env.setdefault(
            env_name(attrs.fields(CheckpointSettings).dir), str(self._data_dir / "checkpoints")
        )
        env.update({env_name(field): value for field, value in overrides.items()})
        return env

    def _check_children(self) -> None:
        for child in self._supervisor.exited():
            message = (
                f"{child.spec.name} exited with code {child.exit_code}; its output:\n"
                + child.log_text().rstrip()
            )
            raise UpError(message)

    def _wait(self, what: str, ready: Any, timeout_s: float) -> Any:
        """Poll ``ready()`` until it returns a truthy value, a child dies or we are stopped."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._check_children()
            if self._stop.signal is not None:
                return None
            value = ready()
            if value:
                return value
            time.sleep(_POLL_S)
        message = f"timed out after {timeout_s:g}s waiting for {what}"
        raise UpError(message)

    def start_backend(self, client: FleetClient, timeout_s: float) -> None:
        api = attrs.fields(APISettings)
        env = self._env({api.host: "127.0.0.1", api.port: str(self._api_port)})
        env.update(self._backend_env)
        self._supervisor.start(
            ChildSpec(
                name="backend",
                module="ktrdr.api.main",
                env=env,
                log_path=self._data_dir / "logs" / "backend.log",
            )
        )

        def healthy() -> bool:
            try:
                client.health()
            except (BackendUnreachable, BackendError):
                return False
            return True

        if self._wait("the backend", healthy, timeout_s):
            self._console.print(f"backend  [bold]{self.backend_url}[/bold]")

    def start_workers(
        self, client: FleetClient, counts: Mapping[str, int], timeout_s: float
    ) -> None:
        expected: dict[str, str] = {}
        worker = attrs.fields(WorkerSettings)
        for kind, count in counts.items():
            for index in range(1, count + 1):
                port = free_port()
                worker_id = f"{kind}-{index}"
                env = self._env(
                    {
                        worker.id: worker_id,
                        worker.host: "127.0.0.1",
                        worker.port: str(port),
                        worker.public_url: f"http://127.0.0.1:{port}",
                        worker.backend_url: self.backend_url,
                    }
                )
                child = self._supervisor.start(
                    ChildSpec(
                        name=worker_id,
                        module=f"ktrdr.workers.{kind}_worker",
                        env=env,
                        log_path=self._data_dir / "logs" / f"{worker_id}.log",
                    )
                )
                self.workers.append(child)
                expected[worker_id] = f"http://127.0.0.1:{port}"
        announced: set[str] = set()

        def all_registered() -> bool:
            try:
                registered = {w["worker_id"] for w in client.workers()}
            except (BackendUnreachable, BackendError):
                return False
            for worker_id in sorted(registered & set(expected) - announced):
                announced.add(worker_id)
                self._console.print(f"worker   {worker_id:<12} {expected[worker_id]}  registered")
            return announced == set(expected)

        self._wait("the workers to register", all_registered, timeout_s)

    def run_demo(self, client: FleetClient, timeout_s: float) -> None:
        submitted = [client.submit(kind, params) for kind, params in DEMO_OPERATIONS]
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>5.1f}%"),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
        )
        finished: dict[str, dict[str, Any]] = {}
        with Progress(*columns, console=self._console) as bar:
            tasks = {
                op["id"]: bar.add_task(f"{op['type']:<9}", total=100, detail="pending")
                for op in submitted
            }

            def all_done() -> bool:
                for op_id, task in tasks.items():
                    if op_id in finished:
                        continue
                    op = client.operation(op_id)
                    progress = op.get("progress") or {}
                    percent = 100.0 if op["status"] == "completed" else progress.get("percent", 0)
                    bar.update(task, completed=float(percent), detail=op["status"])
                    if op["status"] in ("completed", "failed", "cancelled"):
                        finished[op_id] = op
                return len(finished) == len(tasks)

            self._wait("the demo operations", all_done, timeout_s)
        for op in finished.values():
            result = op.get("result") or {}
            shown = ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in result.items()
                if isinstance(v, (int, float, str)) and not isinstance(v, bool)
            )
            self._console.print(
                f"demo     {op['type']:<9} {op['status']}  {shown or op.get('error')}"
            )

    def wait_for_signal(self) -> None:
        self._console.print("fleet is up; Ctrl-C stops it")
        while self._stop.signal is None:
            self._check_children()
            time.sleep(_POLL_S)

    def shut_down(self) -> dict[str, int]:
        """Workers first (they unregister while the backend still listens), then the backend."""
        order = [*self.workers, *[c for c in self._supervisor.children if c not in self.workers]]
        return self._supervisor.stop(order)


@click.command("up")
@click.option("--training", type=click.IntRange(0, 32), default=1, show_default=True)
@click.option("--backtest", type=click.IntRange(0, 32), default=1, show_default=True)
@click.option(
    "--api-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="backend port (default: KTRDR_API_PORT, else 8000; 0 picks a free port)",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("data"),
    show_default=True,
    help="SQLite store, checkpoints and child logs",
)
@click.option("--demo", is_flag=True, help="submit a training and a backtest operation")
@click.option(
    "--timeout", "timeout_s", type=click.FloatRange(1, 3600), default=60, show_default=True
)
@click.option("--exit-after-demo", is_flag=True, hidden=True, help="stop once the demo ends")
def up(
    training: int,
    backtest: int,
    api_port: int | None,
    data_dir: Path,
    demo: bool,
    timeout_s: float,
    exit_after_demo: bool,
) -> None:
    """Start a backend and workers on this machine; Ctrl-C stops them all."""
    # Output is best effort (`ktrdr up | tee log`: tee may die first); stopping is not.
    stdout, stderr = tolerant(sys.stdout), tolerant(sys.stderr)
    console = Console(file=stdout)
    environ = dict(os.environ)
    try:
        port = _choose_api_port(api_port, environ)
        operator, backend_env = operator_token(environ, data_dir.resolve())
    except UpError as exc:
        click.echo(f"ktrdr up: {exc}", file=stderr)
        raise SystemExit(EXIT_FAILED) from None
    stop = _StopFlag()
    exit_signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, stop) for sig in exit_signals}
    supervisor = Supervisor()
    fleet = Fleet(
        environ=environ,
        data_dir=data_dir.resolve(),
        api_port=port,
        console=console,
        supervisor=supervisor,
        stop=stop,
        backend_env=backend_env,
    )
    failure: str | None = None
    try:
        with httpx.Client(timeout=5.0) as http:
            client = FleetClient(
                base_url=fleet.backend_url,
                client=http,
                token=operator.secret,
                token_source=operator.source,
            )
            fleet.start_backend(client, timeout_s)
            if stop.signal is None:
                console.print(f"dashboard [bold]{fleet.backend_url}{DASHBOARD_PATH}[/bold]")
            console.print(f"token    {operator.source}")
            if stop.signal is None:
                fleet.start_workers(client, {"training": training, "backtest": backtest}, timeout_s)
            if demo and stop.signal is None:
                fleet.run_demo(client, timeout_s * 10)
            if not (demo and exit_after_demo):
                fleet.wait_for_signal()
    except (UpError, BackendError, BackendUnreachable) as exc:
        failure = str(exc)
    finally:
        console.print("stopping fleet ...")
        codes = fleet.shut_down()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    unclean = {name: code for name, code in codes.items() if code not in (0, None)}
    if failure is not None:
        click.echo(f"ktrdr up: {failure}", file=stderr)
        raise SystemExit(EXIT_FAILED)
    if unclean:
        shown = ", ".join(f"{n} exited {c}" for n, c in unclean.items())
        console.print(f"stopped; not all children exited cleanly: {shown}")
    else:
        console.print("stopped")
    stdout.flush()


def _choose_api_port(option: int | None, environ: Mapping[str, str]) -> int:
    """The ``--api-port`` option, else KTRDR_API_PORT, else the default; 0 → a free port."""
    variable = "--api-port"
    if option is None:
        variable = env_name(attrs.fields(APISettings).port)
        try:
            option = EnvLoader(environ).load(APISettings).port
        except ConfigurationError as exc:
            raise UpError(str(exc)) from None
    if option == 0:
        return free_port()
    try:
        ensure_bindable("127.0.0.1", option, variable=variable)
    except ConfigurationError as exc:
        raise UpError(exc.problems[0]) from None
    return option


def register(group: click.Group) -> None:
    """Add ``up`` to the ``ktrdr`` command."""
    group.add_command(up)
