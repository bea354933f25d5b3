"""Each operation's own log on the worker: what it keeps, its bound, and who may read it."""

from __future__ import annotations

import datetime
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.scripted_jobs import ScriptedJob
from support.tracing import memory_tracing, trace_hex
from support.worker_fakes import FakeBackend, make_worker, start_request, wait_for

from ktrdr.config import AuthSettings, CheckpointSettings, Secret
from ktrdr.log_context import operation_context
from ktrdr.protocol import WorkerStatus
from ktrdr.workers.checkpoints import CheckpointStore
from ktrdr.workers.operation_logs import LOGS_DIRECTORY, OperationLogs
from ktrdr.workers.server import create_worker_app

TOKEN = "operation-logs-token"
log = logging.getLogger("ktrdr.test.operation_logs")


@pytest.fixture(autouse=True)
def info_level() -> Iterator[None]:
    """Records at INFO reach the handlers (the root logger's level, restored after)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    yield
    root.setLevel(level)


def test_only_the_operations_own_records_are_kept_as_json_lines(tmp_path: Path) -> None:
    """Inside capture: its records; not another operation's, not unbound ones, not later ones."""
    logs = OperationLogs(root=tmp_path)
    with logs.capture("op-1"):
        with operation_context("op-1", attempt=3):
            log.info("mine %d", 1)
        with operation_context("op-2"):
            log.info("another operation's")
        log.info("no operation")
    with operation_context("op-1"):
        log.info("after the capture")

    body = logs.read("op-1")
    assert body is not None
    lines = [json.loads(line) for line in body.splitlines()]
    assert [(r["message"], r["operation_id"], r["attempt"]) for r in lines] == [
        ("mine 1", "op-1", 3)
    ]
    assert logs.path_for("op-1") == tmp_path / LOGS_DIRECTORY / "op-1.log"
    assert logs.read("op-2") is None


def test_a_chatty_operation_keeps_its_latest_lines_within_the_bound(tmp_path: Path) -> None:
    """Two rotating halves: never more than max_bytes on disk, the newest line kept."""
    logs = OperationLogs(root=tmp_path, max_bytes=4000)
    with logs.capture("op-1"), operation_context("op-1"):
        for index in range(500):
            log.info("line %04d %s", index, "x" * 40)

    files = list((tmp_path / LOGS_DIRECTORY).iterdir())
    body = logs.read("op-1")
    assert body is not None
    assert sum(f.stat().st_size for f in files) <= 4000 + 200
    assert len(files) == 2
    assert json.loads(body.splitlines()[-1])["message"].startswith("line 0499")


def test_an_unwritable_log_directory_leaves_the_operation_running(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file where the log directory should be: one warning, and the block still runs."""
    (tmp_path / LOGS_DIRECTORY).write_text("not a directory")
    ran = False
    with OperationLogs(root=tmp_path).capture("op-1"):
        ran = True
    assert ran
    assert "its log cannot be kept" in caplog.text


def test_an_id_that_cannot_be_a_file_name_is_refused(tmp_path: Path) -> None:
    """Ids are file names here: a path separator or a leading dot is a ValueError."""
    for bad in ("../etc", ".hidden", "a/b"):
        with pytest.raises(ValueError, match="cannot name a log file"):
            OperationLogs(root=tmp_path).path_for(bad)


@pytest.mark.anyio
async def test_the_worker_serves_an_operations_log_to_the_worker_token_only() -> None:
    """GET /operations/{id}/logs: 401 without the token; 404 for an operation it never ran;
    the operation's lines (start to end) after it ran.
    """
    job = ScriptedJob()
    worker = make_worker(FakeBackend(), job=job)
    app = create_worker_app(worker, auth=AuthSettings(worker_token=Secret(TOKEN)))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
        await worker.start_operation(start_request("op-9"))
        job.release.set()
        await wait_for(lambda: worker.status is WorkerStatus.IDLE and not worker._reporters)
        bare = await client.get("/operations/op-9/logs")
        unknown = await client.get("/operations/op-0/logs", headers=auth)
        served = await client.get("/operations/op-9/logs", headers=auth)

    assert bare.status_code == 401
    assert unknown.status_code == 404
    assert served.status_code == 200
    assert served.headers["content-type"].startswith("application/x-ndjson")
    messages = [json.loads(line)["message"] for line in served.text.splitlines()]
    assert "operation op-9 started (training, attempt 1)" in messages
    assert any(m.startswith("operation op-9 ended: completed") for m in messages)


def test_old_logs_expire_with_the_checkpoints(tmp_path: Path) -> None:
    """The checkpoint purge (KTRDR_CHECKPOINT_MAX_AGE_DAYS) removes logs as old as that too."""
    logs = OperationLogs(root=tmp_path)
    with logs.capture("op-old"), operation_context("op-old"):
        log.info("long ago")
    with logs.capture("op-new"), operation_context("op-new"):
        log.info("today")
    long_ago = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=40)
    os.utime(logs.path_for("op-old"), (long_ago.timestamp(), long_ago.timestamp()))

    store = CheckpointStore(settings=CheckpointSettings(dir=tmp_path, max_age_days=30))
    removed = store.purge_expired(datetime.datetime.now(datetime.timezone.utc))

    assert removed == [logs.path_for("op-old")]
    assert logs.read("op-old") is None
    assert logs.read("op-new") is not None


@pytest.mark.anyio
@pytest.mark.parametrize("traced", [True, False])
async def test_a_traced_operations_lines_carry_the_trace_of_its_run_span(traced: bool) -> None:
    """Tracing on: the worker's lines of an operation (start, supervising thread, end) carry
    the run span's trace id; tracing off: none carries a trace id.
    """
    memory = memory_tracing() if traced else None
    job = ScriptedJob()
    worker = make_worker(FakeBackend(), job=job, tracing=memory.tracing if memory else None)
    await worker.register_until_success()
    try:
        await worker.start_operation(start_request("op-5"))
        job.release.set()
        # The run span ends once the outcome left the outbox (the backend has it).
        await wait_for(
            lambda: (
                worker.status is WorkerStatus.IDLE
                and not worker._reporters
                and not worker.pending_outcomes
            )
        )
        await worker.stop()
        run_trace = trace_hex(memory.named("run training")) if memory else None
    finally:
        if memory is not None:
            memory.close()

    body = worker.operation_log("op-5")
    assert body is not None
    lines = [json.loads(line) for line in body.splitlines()]
    loggers = {line["logger"] for line in lines}
    assert {"ktrdr.workers.worker", "ktrdr.workers.job_process"} <= loggers
    assert {line.get("trace_id") for line in lines} == {run_trace}
