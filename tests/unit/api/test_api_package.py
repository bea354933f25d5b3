"""The public surface of ktrdr.api (a change here is a deliberate API change)."""

from __future__ import annotations

import ktrdr.api


def test_public_names_are_pinned() -> None:
    """ktrdr.api exports exactly these names, and each one exists."""
    assert sorted(ktrdr.api.__all__) == [
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
    assert all(hasattr(ktrdr.api, name) for name in ktrdr.api.__all__)
