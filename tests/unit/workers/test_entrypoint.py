"""Worker entrypoints: validation first, ktrdr's own jobs in job processes, no port from argv."""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from ktrdr.config import CheckpointSettings, WorkerType, validate_all
from ktrdr.job_messages import JOB_ENTRY, JobRequest, StopReason
from ktrdr.protocol import OperationType, StartOperationRequest
from ktrdr.workers.checkpoints import CheckpointStore
from ktrdr.workers.entrypoint import (
    CHECKPOINT_PURGE_INTERVAL,
    backend_tls,
    job_launcher,
    prepare_checkpoints,
    purge_checkpoints_forever,
    run_worker,
    warn_about_data_dir,
)

NOW = datetime.datetime(2026, 4, 1, tzinfo=datetime.timezone.utc)


def test_bad_configuration_exits_1_before_building_anything(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """KTRDR_WORKER_PORT=abc: exit 1 with the report on stderr, nothing started."""
    with pytest.raises(SystemExit) as exited:
        run_worker(
            WorkerType.TRAINING,
            {"KTRDR_WORKER_PORT": "abc"},
            env_file=None,
        )

    stderr = capsys.readouterr().err
    assert exited.value.code == 1
    assert "KTRDR_WORKER_PORT='abc'" in stderr
    assert "Traceback" not in stderr


def test_type_conflicting_with_the_entrypoint_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    """KTRDR_WORKER_TYPE=training on the backtest entrypoint is refused with exit 1."""
    with pytest.raises(SystemExit) as exited:
        run_worker(
            WorkerType.BACKTEST,
            {"KTRDR_WORKER_TYPE": "training"},
            env_file=None,
        )

    assert exited.value.code == 1
    assert "KTRDR_WORKER_TYPE='training'" in capsys.readouterr().err


@pytest.mark.parametrize("worker_type", [WorkerType.TRAINING, WorkerType.BACKTEST])
def test_the_launcher_runs_ktrdrs_jobs_with_the_worker_settings(
    worker_type: WorkerType, tmp_path: Path
) -> None:
    """Jobs run ktrdr.jobs' entry; checkpoints go to the store; graces follow the settings."""
    config = validate_all(
        "worker",
        {"KTRDR_CHECKPOINT_DIR": str(tmp_path / "ckpt"), "KTRDR_WORKER_STOP_GRACE": "3s"},
        env_file=None,
        worker_type=worker_type,
    )
    checkpoints = CheckpointStore(settings=config.checkpoint)

    launcher = job_launcher(config, checkpoints)

    assert JOB_ENTRY.module == "ktrdr.jobs.process"
    assert launcher.host.checkpoints is checkpoints
    assert launcher.host.grace_s(StopReason.CANCELLED) == 3.0
    assert launcher.host.grace_s(StopReason.SHUTDOWN) == 3.0  # below half the 25 s timeout


def test_the_launcher_gives_jobs_the_data_settings(tmp_path: Path) -> None:
    """KTRDR_DATA_DIR and KTRDR_DATA_MAX_FILE_SIZE reach every job's request."""
    environ = {"KTRDR_DATA_DIR": str(tmp_path), "KTRDR_DATA_MAX_FILE_SIZE": "5M"}
    config = validate_all("worker", environ, env_file=None, worker_type=WorkerType.BACKTEST)
    launcher = job_launcher(config, CheckpointStore(settings=config.checkpoint))

    request = launcher.host.prepare(
        StartOperationRequest(operation_id="op-1", operation_type=OperationType.BACKTEST)
    )

    assert isinstance(request, JobRequest)
    assert (request.data.dir, request.data.max_file_size) == (tmp_path, 5 * 1024**2)


def test_a_missing_data_directory_is_a_warning_naming_the_variable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """KTRDR_DATA_DIR that does not exist: a startup warning, not an exit."""
    environ = {"KTRDR_DATA_DIR": str(tmp_path / "nowhere")}
    missing = validate_all("worker", environ, env_file=None, worker_type=WorkerType.TRAINING)
    present = validate_all(
        "worker", {"KTRDR_DATA_DIR": str(tmp_path)}, env_file=None, worker_type=WorkerType.TRAINING
    )

    with caplog.at_level(logging.WARNING, logger="ktrdr.workers"):
        assert warn_about_data_dir(missing) is False
        assert warn_about_data_dir(present) is True

    assert [r.getMessage() for r in caplog.records] == [
        f"KTRDR_DATA_DIR={tmp_path / 'nowhere'} is not a directory: "
        "operations with a csv_path will fail until it exists"
    ]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """run_worker configures the root logger; put it back for the tests that follow."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_an_unwritable_checkpoint_dir_exits_1_naming_the_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """KTRDR_CHECKPOINT_DIR under a regular file: exit 1 at startup, no traceback."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")

    code = run_worker(
        WorkerType.TRAINING,
        {"KTRDR_CHECKPOINT_DIR": str(blocker / "checkpoints")},
        env_file=None,
    )

    stderr = capsys.readouterr().err
    assert code == 1
    assert f"KTRDR_CHECKPOINT_DIR={str(blocker / 'checkpoints')!r}" in stderr
    assert "not writable" in stderr
    assert "Traceback" not in stderr


def _old_file(directory: Path, name: str, age: datetime.timedelta) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(b"x")
    stamp = (NOW - age).timestamp()
    os.utime(path, (stamp, stamp))
    return path


def test_startup_checks_the_directory_and_purges_files_past_max_age_days(tmp_path: Path) -> None:
    """At start: the directory is created, files older than MAX_AGE_DAYS are removed."""
    store = CheckpointStore(settings=CheckpointSettings(dir=tmp_path / "ckpt", max_age_days=3))
    old = _old_file(tmp_path / "ckpt" / "op-old", "checkpoint.zip", datetime.timedelta(days=4))
    fresh = _old_file(tmp_path / "ckpt" / "op-new", "checkpoint.zip", datetime.timedelta(days=2))

    prepare_checkpoints(store, NOW)

    assert not old.exists()
    assert not old.parent.exists()
    assert fresh.exists()


@pytest.mark.anyio
async def test_checkpoints_are_purged_every_interval_while_serving(tmp_path: Path) -> None:
    """The serving worker purges expired checkpoints again every CHECKPOINT_PURGE_INTERVAL."""
    store = CheckpointStore(settings=CheckpointSettings(dir=tmp_path, max_age_days=1))
    sleeps: list[float] = []
    expired: list[bool] = []

    async def sleep(seconds: float) -> None:
        expired.append(not any(tmp_path.iterdir()))
        sleeps.append(seconds)
        if len(sleeps) == 3:
            raise asyncio.CancelledError
        _old_file(tmp_path / f"op-{len(sleeps)}", "checkpoint.zip", datetime.timedelta(days=2))

    with pytest.raises(asyncio.CancelledError):
        await purge_checkpoints_forever(store, clock=lambda: NOW, sleep=sleep)

    assert sleeps == [CHECKPOINT_PURGE_INTERVAL.total_seconds()] * 3
    assert expired == [True, True, True]  # each file planted was gone by the next round


def test_a_plain_http_backend_gets_a_client_that_loads_no_certificates() -> None:
    """http:// backend: a strict TLS context trusting no authority; https://: httpx's default."""
    plain = backend_tls("http://backend:8000")

    assert isinstance(plain, ssl.SSLContext)
    assert plain.cert_store_stats()["x509_ca"] == 0
    assert (plain.verify_mode, plain.check_hostname) == (ssl.CERT_REQUIRED, True)
    assert backend_tls("https://backend.example:8443") is True
    assert backend_tls("HTTPS://backend.example") is True
