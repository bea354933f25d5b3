"""Backtest worker entrypoint (``python -m`` this module, or ``ktrdr worker backtest``)."""

from __future__ import annotations

import os

from ktrdr.config import WorkerType
from ktrdr.startup import without_httpx_cli


def main() -> None:
    """Console entry point: the process environment is read here and only here."""
    without_httpx_cli()
    # Imported only now, so that the line above comes before the runtime imports httpx.
    from ktrdr.workers.entrypoint import run_worker

    raise SystemExit(run_worker(WorkerType.BACKTEST, os.environ))


if __name__ == "__main__":
    main()
