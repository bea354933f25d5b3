"""The backend: worker registry and its HTTP API (operations, orphans and the store join it).

``create_app`` is the one way to build the app; ``ktrdr.api.main`` is the entrypoint.
"""

from ktrdr.api.app import create_app, utc_now
from ktrdr.api.liveness import LivenessPolicy, LivenessVerdict, assess, sweep
from ktrdr.api.registry import UnknownWorker, WorkerRecord, WorkerRegistry, drifting_workers

__all__ = [
    "LivenessPolicy",
    "LivenessVerdict",
    "UnknownWorker",
    "WorkerRecord",
    "WorkerRegistry",
    "assess",
    "create_app",
    "drifting_workers",
    "sweep",
    "utc_now",
]
