"""A worker's Prometheus metrics: what it ran, whether it is busy, its job's progress and cost.

One :class:`WorkerMetrics` per worker process, on a registry it is given (or its own),
never the library's global one; the worker's server serves it at ``GET /metrics``
(``ktrdr.web.metrics``). The figures:

- ``ktrdr_worker_operations_total{operation_type,outcome}``: operations this worker
  ran, by how they ended (completed, failed, cancelled);
- ``ktrdr_worker_busy``: 1 while an operation runs, else 0;
- ``ktrdr_worker_operation_progress_percent``: the running operation's progress (0 idle);
- ``ktrdr_worker_checkpoint_write_seconds``: time to write one checkpoint to disk
  (atomic write with fsync), a histogram;
- ``ktrdr_worker_job_memory_peak_bytes``: peak resident memory of the running job's
  process, or of the last one (read when scraped, and from the job's own report);
- ``ktrdr_worker_info{worker_id,worker_type,version}``: always 1, for joining.

Updates come from the event loop and the job supervising thread; prometheus-client's
metrics are thread-safe. :class:`DisabledWorkerMetrics` counts nothing.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

import ktrdr
from ktrdr.protocol import OperationStatus, OperationType

__all__ = [
    "CHECKPOINT_BUCKETS",
    "DisabledWorkerMetrics",
    "WorkerMetrics",
    "process_memory_peak",
]

#: Checkpoint writes: a few milliseconds on a local disk, seconds on a slow network one.
CHECKPOINT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def process_memory_peak(pid: int, *, proc: Path = Path("/proc")) -> int | None:
    """Peak resident memory of process ``pid`` in bytes (Linux ``VmHWM``); None if unknown."""
    try:
        status = (proc / str(pid) / "status").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            fields = line.split()
            if len(fields) >= 2 and fields[1].isdigit():
                return int(fields[1]) * 1024  # the kernel writes kB
    return None


class WorkerMetrics:
    """Every metric a worker exports, on ``registry``."""

    enabled = True

    def __init__(
        self,
        *,
        worker_id: str,
        worker_type: OperationType,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.operations = Counter(
            "ktrdr_worker_operations",
            "Operations this worker ran, by type and how they ended",
            ["operation_type", "outcome"],
            registry=r,
        )
        self.busy = Gauge("ktrdr_worker_busy", "1 while an operation runs here, else 0", registry=r)
        self.progress = Gauge(
            "ktrdr_worker_operation_progress_percent",
            "Progress of the running operation, 0 to 100 (0 when idle)",
            registry=r,
        )
        self.checkpoint_write = Histogram(
            "ktrdr_worker_checkpoint_write_seconds",
            "Time to write one checkpoint (temp file, fsync, rename)",
            buckets=CHECKPOINT_BUCKETS,
            registry=r,
        )
        self.memory_peak = Gauge(
            "ktrdr_worker_job_memory_peak_bytes",
            "Peak resident memory of the running job's process, or of the last one",
            registry=r,
        )
        self.info = Gauge(
            "ktrdr_worker_info",
            "This worker's id, type and ktrdr version (always 1)",
            ["worker_id", "worker_type", "version"],
            registry=r,
        )
        self.info.labels(worker_id, worker_type.value, ktrdr.__version__).set(1)
        for status in OperationStatus:
            if status.finished:
                self.operations.labels(worker_type.value, status.value)

    def operation_started(self) -> None:
        """An operation started here."""
        self.busy.set(1)
        self.progress.set(0)

    def progress_reported(self, percent: float) -> None:
        """The running job reported ``percent``."""
        self.progress.set(percent)

    def operation_ended(
        self, operation_type: OperationType, outcome: OperationStatus, memory_peak: int | None
    ) -> None:
        """The operation ended with ``outcome``; ``memory_peak`` is its job's, if known."""
        self.operations.labels(operation_type.value, outcome.value).inc()
        self.busy.set(0)
        self.progress.set(0)
        if memory_peak is not None:
            self.memory_peak.set(memory_peak)

    def checkpoint_written(self, seconds: float) -> None:
        """One checkpoint was written in ``seconds``."""
        self.checkpoint_write.observe(seconds)

    def job_memory_seen(self, peak: int) -> None:
        """The running job's process has peaked at ``peak`` bytes so far."""
        self.memory_peak.set(peak)


class DisabledWorkerMetrics(WorkerMetrics):
    """``KTRDR_METRICS_ENABLED=false``: the same interface, nothing counted or served."""

    enabled = False

    def operation_started(self) -> None:
        """Not counted."""

    def progress_reported(self, percent: float) -> None:
        """Not counted."""

    def operation_ended(
        self, operation_type: OperationType, outcome: OperationStatus, memory_peak: int | None
    ) -> None:
        """Not counted."""

    def checkpoint_written(self, seconds: float) -> None:
        """Not counted."""

    def job_memory_seen(self, peak: int) -> None:
        """Not counted."""
