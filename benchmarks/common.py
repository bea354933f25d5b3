"""Helpers shared by the benchmark scripts that start ktrdr processes and time them.

The scripts import it as ``common`` (running ``python benchmarks/<script>.py`` puts
this directory first on ``sys.path``). It holds process plumbing (free ports, child
environments, spawn and stop, polling with a deadline, a throwaway PostgreSQL
database) and the figure summary the scripts print. It must not hold any benchmark's
setup, targets or printed layout, and it starts nothing on import.
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def base_env(**extra: str) -> dict[str, str]:
    """A minimal child environment (no inherited KTRDR_* variable) plus ``extra``."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONUNBUFFERED": "1",
        "KTRDR_ACKNOWLEDGE_INSECURE_DEFAULTS": "true",
    }
    env.update(extra)
    return env


def spawn(
    args: list[str], env: dict[str, str], cwd: Path, *, log: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start a child with no stdin; its output is appended to ``log`` or discarded."""
    if log is None:
        return subprocess.Popen(
            args,
            env=env,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
    with log.open("ab") as out:
        return subprocess.Popen(
            args, env=env, cwd=cwd, stdout=out, stderr=out, stdin=subprocess.DEVNULL
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if the child is still there after 15 s."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_until(
    condition: Callable[[], bool],
    what: str,
    *,
    timeout_s: float,
    poll_s: float,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    """Poll ``condition`` until it holds; SystemExit on timeout or if ``process`` exits."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if process is not None and process.poll() is not None:
            raise SystemExit(f"{what} exited with {process.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(poll_s)


def describe(values: list[float], *, width: int = 6, with_max: bool = True) -> str:
    """Median, min, p90 (nearest rank) and optionally max of ``values`` (seconds), in ms."""
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    text = (
        f"median {statistics.median(values) * 1000:{width}.1f} ms"
        f" | min {ordered[0] * 1000:{width}.1f} ms | p90 {p90 * 1000:{width}.1f} ms"
    )
    if with_max:
        text += f" | max {ordered[-1] * 1000:{width}.1f} ms"
    return text


@contextmanager
def postgres_database(url: str, *, prefix: str = "ktrdr_bench") -> Iterator[dict[str, str]]:
    """A fresh database on the server at ``url`` (a SQLAlchemy URL), as the KTRDR_DB_*
    variables of a backend using it; dropped afterwards, connections and all."""
    import sqlalchemy as sa  # only the scripts that measure PostgreSQL need it

    server = sa.make_url(url)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield {
            "KTRDR_DB_ENGINE": "postgresql",
            "KTRDR_DB_HOST": server.host or "127.0.0.1",
            "KTRDR_DB_PORT": str(server.port or 5432),
            "KTRDR_DB_NAME": name,
            "KTRDR_DB_USER": server.username or "postgres",
            "KTRDR_DB_PASSWORD": server.password or "unused",
        }
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
