"""Helpers for tests that start real processes (backend, workers) on loopback.

Import as ``from support.processes import ...`` (``tests/`` is on ``sys.path``
because ``tests/conftest.py`` lives there). Everything here follows the suite's
rules: free ports picked by the OS on 127.0.0.1, an explicit ``env`` for every child
(``os.environ`` is never modified), ``cwd`` in a temporary directory, output to
files (no pipe can fill up and block a child), waiting by polling with a deadline,
and every child killed on the way out.

``support.worker_fakes`` holds in-process fakes (backend, time) for unit
tests of the worker runtime.
"""

from support.fleet import Fleet, backend_env, worker_env
from support.processes import (
    ProcessGroup,
    Spawned,
    base_env,
    free_port,
    get_json,
    port_lock,
    wait_until,
)

__all__ = [
    "Fleet",
    "ProcessGroup",
    "Spawned",
    "backend_env",
    "base_env",
    "free_port",
    "get_json",
    "port_lock",
    "wait_until",
    "worker_env",
]
