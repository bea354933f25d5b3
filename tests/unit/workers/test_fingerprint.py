"""The configuration fingerprint: equal for interchangeable workers, different otherwise."""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import attrs
import pytest

from ktrdr.config import CheckpointSettings, WorkerSettings, WorkerType
from ktrdr.workers.fingerprint import FINGERPRINT_LENGTH, config_fingerprint

WORKER = WorkerSettings(type=WorkerType.TRAINING, id="training-a-5003", port=5003)
CHECKPOINT = CheckpointSettings()


def test_fingerprint_is_short_hex_and_stable() -> None:
    """16 lowercase hex digits, the same on every call (and in every process)."""
    value = config_fingerprint(WORKER, CHECKPOINT)

    assert re.fullmatch(r"[0-9a-f]{16}", value)
    assert len(value) == FINGERPRINT_LENGTH
    assert config_fingerprint(WORKER, CheckpointSettings()) == value


def test_per_worker_identity_does_not_change_it() -> None:
    """Id, host, port, public URL, backend URL and timeouts differ by design: same value."""
    other = attrs.evolve(
        WORKER,
        id="training-b-6000",
        host="127.0.0.1",
        port=6000,
        public_url="http://127.0.0.1:6000",
        backend_url="http://elsewhere:8000",
        shutdown_timeout=datetime.timedelta(seconds=3),
    )

    assert config_fingerprint(other, CHECKPOINT) == config_fingerprint(WORKER, CHECKPOINT)


@pytest.mark.parametrize(
    ("worker", "checkpoint"),
    [
        (attrs.evolve(WORKER, type=WorkerType.BACKTEST), CHECKPOINT),
        (attrs.evolve(WORKER, heartbeat_interval=datetime.timedelta(seconds=5)), CHECKPOINT),
        (WORKER, attrs.evolve(CHECKPOINT, epoch_interval=3)),
        (WORKER, attrs.evolve(CHECKPOINT, time_interval=datetime.timedelta(seconds=60))),
        (WORKER, attrs.evolve(CHECKPOINT, bar_interval=5)),
        (WORKER, attrs.evolve(CHECKPOINT, dir=Path("elsewhere"))),
        (WORKER, attrs.evolve(CHECKPOINT, max_age_days=2)),
    ],
    ids=["type", "heartbeat", "epochs", "time", "bars", "dir", "max-age"],
)
def test_compatibility_settings_change_it(
    worker: WorkerSettings, checkpoint: CheckpointSettings
) -> None:
    """Type, heartbeat interval and every checkpoint setting are part of the fingerprint."""
    assert config_fingerprint(worker, checkpoint) != config_fingerprint(WORKER, CHECKPOINT)
