"""The backend: worker registry, operations (store, service, dispatch), orphans, retention.

``create_app`` is the one way to build the app; ``ktrdr.api.main`` is the entrypoint
and shows how the collaborators below are assembled from the settings.
"""

from ktrdr.api.app import create_app, utc_now
from ktrdr.api.dispatcher import Dispatcher
from ktrdr.api.liveness import LivenessPolicy, LivenessVerdict, assess, sweep
from ktrdr.api.operations import OperationsService, TooManyOperations
from ktrdr.api.orphans import OrphanDetector
from ktrdr.api.registry import UnknownWorker, WorkerRecord, WorkerRegistry, drifting_workers
from ktrdr.api.reports import OperationReports
from ktrdr.api.retention import RetentionCleaner
from ktrdr.api.store import OperationStore, StoreError
from ktrdr.api.store_health import StoreHealth

__all__ = [
    "Dispatcher",
    "LivenessPolicy",
    "LivenessVerdict",
    "OperationReports",
    "OperationStore",
    "OperationsService",
    "OrphanDetector",
    "RetentionCleaner",
    "StoreError",
    "StoreHealth",
    "TooManyOperations",
    "UnknownWorker",
    "WorkerRecord",
    "WorkerRegistry",
    "assess",
    "create_app",
    "drifting_workers",
    "sweep",
    "utc_now",
]
