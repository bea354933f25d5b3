"""The jobs ktrdr runs (training, backtest) and the one checkpointed step loop they share.

A job computes; it knows nothing of HTTP, the backend or the worker's files. Imports
point one way: this package uses ``ktrdr.config``, ``ktrdr.protocol``,
``ktrdr.job_messages`` and ``ktrdr.errors``; only the worker entrypoints and the CLI
import it, and the worker runtime (``ktrdr.workers``) and the backend (``ktrdr.api``)
never do (nor numpy). Each operation runs in its own process
(:func:`run_job_process`), started by the worker runtime.
"""

from ktrdr.errors import BarsError, JobFailed
from ktrdr.jobs.backtest import BacktestJob
from ktrdr.jobs.bars import Bars, generate_bars, load_bars
from ktrdr.jobs.process import JOBS, run_job_process
from ktrdr.jobs.step_loop import (
    CheckpointPolicy,
    Job,
    JobChannel,
    PreparedRun,
    decode_state,
    encode_state,
    run_steps,
)
from ktrdr.jobs.training import TrainingJob

__all__ = [
    "JOBS",
    "BacktestJob",
    "Bars",
    "BarsError",
    "CheckpointPolicy",
    "Job",
    "JobChannel",
    "JobFailed",
    "PreparedRun",
    "TrainingJob",
    "decode_state",
    "encode_state",
    "generate_bars",
    "load_bars",
    "run_job_process",
    "run_steps",
]
