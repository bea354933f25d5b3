"""Start, watch and always clean up child processes in tests.

``ProcessGroup`` is a context manager (use it in a fixture): every child it spawned
gets SIGTERM, then SIGKILL, when the block ends, whatever happened inside.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")

#: Default bound of every wait: generous, because a loaded CI machine is slow to start Python.
DEFAULT_TIMEOUT_S = 30.0
#: How often conditions are re-checked.
POLL_INTERVAL_S = 0.02


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago (the OS picked it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on ``host:port`` and a server could bind it.

    Uses ``SO_REUSEADDR`` like uvicorn does, so a port whose old connections linger
    in TIME_WAIT (a server that just exited) counts as free.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


@contextlib.contextmanager
def port_lock(port: int, *, timeout_s: float = 120.0) -> Iterator[None]:
    """Hold a machine-wide lock on a fixed ``port`` (e.g. the 5003 default).

    Test runs that must use a well-known port serialise on this lock, so two suites
    running at once on one machine do not fight over it.
    """
    path = Path(tempfile.gettempdir()) / f"ktrdr-test-port-{port}.lock"
    with path.open("a") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"port {port} stayed locked for {timeout_s}s") from None
                time.sleep(0.05)  # waiting for another process's lock, not for a condition here
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def wait_until(
    condition: Callable[[], T | None],
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    message: str | Callable[[], str] = "condition not met",
    interval_s: float = POLL_INTERVAL_S,
) -> T:
    """Poll ``condition`` until it returns something truthy; return that value.

    Raises ``AssertionError`` with ``message`` (a string or a callable building one,
    e.g. to include a child's log) when ``timeout_s`` passes first.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"after {timeout_s}s: {text}")
        time.sleep(interval_s)


def get_json(url: str, *, timeout_s: float = 2.0, headers: Mapping[str, str] | None = None) -> Any:
    """``GET url`` and decode JSON; None when nothing answers or the status is not 2xx."""
    request = urllib.request.Request(url, headers=dict(headers or {}))  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - http loopback
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def base_env(**overrides: str) -> dict[str, str]:
    """A minimal, explicit child environment: PATH, unbuffered output, no insecure box.

    Nothing else leaks in from the test runner's environment, so a developer's own
    ``KTRDR_*`` variables cannot change a test's outcome.
    """
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "KTRDR_ACKNOWLEDGE_INSECURE_DEFAULTS": "true",
        "OMP_NUM_THREADS": "1",  # as in the image: no BLAS threads fighting over 2 cores
        "OPENBLAS_NUM_THREADS": "1",
    }
    env.update(overrides)
    return env


def run_ktrdr(
    *args: str, env: Mapping[str, str], cwd: Path, timeout_s: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run the ``ktrdr`` command (``python -m ktrdr.cli``) to completion; capture output."""
    return subprocess.run(
        [sys.executable, "-m", "ktrdr.cli", *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


class Spawned:
    """A child process whose stdout and stderr go to files in its directory."""

    def __init__(self, name: str, process: subprocess.Popen[bytes], stdout: Path, stderr: Path):
        self.name = name
        self.process = process
        self.stdout_path = stdout
        self.stderr_path = stderr

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        """The exit code, or None while it runs."""
        return self.process.poll()

    def alive(self) -> bool:
        """True while the child runs."""
        return self.process.poll() is None

    def stdout(self) -> str:
        """Everything the child wrote to stdout so far."""
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        """Everything the child wrote to stderr so far (logs go there)."""
        return self.stderr_path.read_text(errors="replace")

    def output(self) -> str:
        """stdout and stderr, labelled, for assertion messages."""
        name = self.name
        return f"--- {name} stdout ---\n{self.stdout()}\n--- {name} stderr ---\n{self.stderr()}"

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` if the child still runs."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)

    def wait_exit(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> int:
        """Wait for the child to exit; its exit code. Raises AssertionError on timeout."""
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            message = f"{self.name} still running after {timeout_s}s\n{self.output()}"
            raise AssertionError(message) from None

    def wait_for_output(self, text: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> str:
        """Wait until ``text`` appears in stdout or stderr; return the combined output."""

        def seen() -> str | None:
            combined = self.stdout() + self.stderr()
            return combined if text in combined else None

        return wait_until(
            seen,
            timeout_s=timeout_s,
            message=lambda: f"{text!r} never appeared\n{self.output()}",
        )


class ProcessGroup:
    """Spawns children and guarantees none survives the ``with`` block."""

    def __init__(self, directory: Path, *, grace_s: float = 10.0) -> None:
        self.directory = directory
        self.grace_s = grace_s
        self.children: list[Spawned] = []

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()

    def spawn(
        self,
        name: str,
        args: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path | None = None,
    ) -> Spawned:
        """Start ``args`` with exactly ``env``, in ``cwd`` (default: the group's directory)."""
        workdir = cwd if cwd is not None else self.directory
        workdir.mkdir(parents=True, exist_ok=True)
        index = len(self.children)
        stdout = self.directory / f"{index:02d}-{name}.stdout"
        stderr = self.directory / f"{index:02d}-{name}.stderr"
        with stdout.open("wb") as out, stderr.open("wb") as err:
            process = subprocess.Popen(
                list(args),
                env=dict(env),
                cwd=workdir,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        child = Spawned(name, process, stdout, stderr)
        self.children.append(child)
        return child

    def python(
        self,
        name: str,
        module: str,
        *args: str,
        env: Mapping[str, str],
        cwd: Path | None = None,
    ) -> Spawned:
        """``python -m module args...`` with the interpreter running the tests."""
        return self.spawn(name, [sys.executable, "-m", module, *args], env=env, cwd=cwd)

    def stop_all(self) -> None:
        """SIGTERM every live child, wait up to ``grace_s``, SIGKILL what is left."""
        for child in self.children:
            child.signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        for child in self.children:
            try:
                child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.signal(signal.SIGKILL)
                child.process.wait()


__all__ = [
    "DEFAULT_TIMEOUT_S",
    "ProcessGroup",
    "Spawned",
    "base_env",
    "free_port",
    "get_json",
    "port_is_free",
    "port_lock",
    "run_ktrdr",
    "wait_until",
]
