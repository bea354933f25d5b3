"""Backtest worker entrypoint (``python -m`` this module, or ``ktrdr worker backtest``)."""

from __future__ import annotations

import os

from ktrdr.config import WorkerType
from ktrdr.startup import without_unused_imports


def main() -> None:
    """Console entry point: the process environment is read here and only here."""
    without_unused_imports()
    # Imported only now, so that the line above comes before the runtime's imports.
    from ktrdr.workers.entrypoint import run_worker

    raise SystemExit(run_worker(WorkerType.BACKTEST, os.environ))


if __name__ == "__main__":
    main()
