"""Training worker entrypoint (``python -m`` this module, or ``ktrdr worker training``)."""

from __future__ import annotations

import os

from ktrdr.config import WorkerType
from ktrdr.workers.entrypoint import run_worker


def main() -> None:
    """Console entry point: the process environment is read here and only here."""
    raise SystemExit(run_worker(WorkerType.TRAINING, os.environ))


if __name__ == "__main__":
    main()
