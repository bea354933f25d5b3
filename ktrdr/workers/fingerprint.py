"""A worker's configuration fingerprint, so the backend can flag mismatched workers.

The fingerprint is the first 16 hex digits of a SHA-256 over the canonical JSON of
the settings that must agree between interchangeable workers of one type:

- the worker type and the ktrdr version (the code that runs operations);
- ``KTRDR_WORKER_HEARTBEAT_INTERVAL`` (the backend's liveness thresholds assume it);
- every ``KTRDR_CHECKPOINT_*`` setting (a resumed operation must find and trust
  checkpoints written by another worker of the same type).

Deliberately left out: the id, host, port and public URL (different for every worker
by design), the backend URL and timeouts (local transport tuning), logging, and
every secret (a fingerprint must never help guess one).
"""

from __future__ import annotations

import hashlib
import json

import ktrdr
from ktrdr.config import CheckpointSettings, WorkerSettings

FINGERPRINT_LENGTH = 16


def fingerprint_payload(
    worker: WorkerSettings, checkpoint: CheckpointSettings
) -> dict[str, object]:
    """The values the fingerprint covers (also handy to show an operator)."""
    return {
        "ktrdr_version": ktrdr.__version__,
        "type": worker.type.value if worker.type is not None else None,
        "heartbeat_interval_s": worker.heartbeat_interval.total_seconds(),
        "checkpoint": {
            "epoch_interval": checkpoint.epoch_interval,
            "time_interval_s": checkpoint.time_interval.total_seconds(),
            "bar_interval": checkpoint.bar_interval,
            "dir": checkpoint.dir.as_posix(),
            "max_age_days": checkpoint.max_age_days,
        },
    }


def config_fingerprint(worker: WorkerSettings, checkpoint: CheckpointSettings) -> str:
    """Stable across processes and hosts for equal settings; see the module docstring."""
    canonical = json.dumps(
        fingerprint_payload(worker, checkpoint), sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:FINGERPRINT_LENGTH]


__all__ = ["FINGERPRINT_LENGTH", "config_fingerprint", "fingerprint_payload"]
