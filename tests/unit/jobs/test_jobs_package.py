"""The public surface of ktrdr.jobs (a change here is a deliberate API change)."""

from __future__ import annotations

import ktrdr.jobs


def test_public_names_are_pinned() -> None:
    """ktrdr.jobs exports exactly these names, and each one exists."""
    assert sorted(ktrdr.jobs.__all__) == [
        "BacktestJob",
        "Bars",
        "BarsError",
        "CheckpointPolicy",
        "JOBS",
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
    assert all(hasattr(ktrdr.jobs, name) for name in ktrdr.jobs.__all__)
