"""``ktrdr backend`` and ``ktrdr worker training|backtest``: run a server in the foreground.

They call the same functions as ``python -m ktrdr.api.main`` and
``python -m ktrdr.workers.<type>_worker``, with the process environment; there are
deliberately no host/port options, so the settings are the one place a port is set.
Server modules are imported when a command runs, keeping ``ktrdr --help`` fast.
"""

from __future__ import annotations

import os

import click


@click.command("backend")
def backend() -> None:
    """Run the backend on KTRDR_API_HOST:KTRDR_API_PORT until SIGTERM or Ctrl-C."""
    from ktrdr.api.main import run

    raise SystemExit(run(os.environ))


@click.command("worker")
@click.argument("worker_type", metavar="TYPE", type=click.Choice(["training", "backtest"]))
def worker(worker_type: str) -> None:
    """Run a TYPE worker on KTRDR_WORKER_HOST:KTRDR_WORKER_PORT until SIGTERM or Ctrl-C."""
    if worker_type == "training":
        from ktrdr.workers.training_worker import main
    else:
        from ktrdr.workers.backtest_worker import main
    main()


def register(group: click.Group) -> None:
    """Add ``backend`` and ``worker`` to the ``ktrdr`` command."""
    group.add_command(backend)
    group.add_command(worker)


__all__ = ["backend", "register", "worker"]
