"""The Worker runtime with a fake backend (MockTransport), fake time and fake runners."""

from __future__ import annotations

import asyncio
import datetime
import json
import logging

import attrs
import httpx
import pytest
from support.worker_fakes import (
    SETTINGS,
    FakeBackend,
    FakeTime,
    ScriptedRunner,
    make_worker,
    start_request,
    wait_for,
)

from ktrdr.config import CheckpointSettings, WorkerType
from ktrdr.errors import ConfigurationError
from ktrdr.protocol import (
    OperationStatus,
    OperationType,
    Progress,
    WorkerStatus,
)
from ktrdr.workers.base import (
    MAX_REPORT_ERROR,
    UnknownOperation,
    WorkerBusy,
    WorkerStopping,
    WrongOperationType,
)
from ktrdr.workers.fingerprint import config_fingerprint
from ktrdr.workers.runner import RunContext, RunOutcome, StopReason

pytestmark = pytest.mark.anyio

# -- construction and identity -----------------------------------------------------------


def test_worker_needs_a_type_and_a_matching_runner() -> None:
    """Settings without a type, or a runner of another type, are programming errors."""
    with pytest.raises(ValueError, match="type is not set"):
        make_worker(FakeBackend(), settings=attrs.evolve(SETTINGS, type=None))
    backtest = attrs.evolve(SETTINGS, type=WorkerType.BACKTEST)
    with pytest.raises(ValueError, match="backtest worker needs a backtest runner"):
        make_worker(FakeBackend(), settings=backtest)


def test_an_id_the_backend_would_refuse_is_a_configuration_error() -> None:
    """A worker id with spaces is reported against KTRDR_WORKER_ID at construction."""
    with pytest.raises(ConfigurationError, match="KTRDR_WORKER_ID='bad id'"):
        make_worker(FakeBackend(), settings=attrs.evolve(SETTINGS, id="bad id"))


def test_registration_request_describes_this_worker() -> None:
    """Registration carries id, type, public URL, interval, fingerprint and capabilities."""
    worker = make_worker(FakeBackend())

    request = worker.registration_request()

    assert request.worker_id == "training-test-5003"
    assert request.worker_type is OperationType.TRAINING
    assert request.endpoint_url == "http://127.0.0.1:5003"
    assert request.heartbeat_interval_s == 0.2
    assert request.config_fingerprint == config_fingerprint(SETTINGS, CheckpointSettings())
    assert request.capabilities["operation_types"] == ["training"]
    assert request.current_operation_id is None


def test_health_reports_id_type_status_and_operation() -> None:
    """GET /health's payload: id, type, status, current operation, registration."""
    assert make_worker(FakeBackend()).health() == {
        "worker_id": "training-test-5003",
        "worker_type": "training",
        "status": "idle",
        "current_operation_id": None,
        "registered": False,
        "progress": None,
    }


# -- registration and heartbeats -------------------------------------------------------


async def test_registration_retries_with_capped_exponential_backoff() -> None:
    """Refused connections are retried after 0.1, 0.2, 0.4, 0.8, 1, 1 s until accepted."""
    backend = FakeBackend()
    backend.refuse_connections = 6
    fake = FakeTime()
    worker = make_worker(backend, fake_time=fake)

    registered = await worker.register_until_success()

    assert registered is True
    assert worker.registered is True
    assert fake.sleeps == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert backend.paths().count("POST /api/v1/workers/register") == 7


async def test_registration_gives_up_when_the_worker_stops() -> None:
    """A shutdown during the retries ends the loop instead of retrying forever."""
    backend = FakeBackend()
    backend.refuse_connections = 1000
    fake = FakeTime()
    worker = make_worker(backend, fake_time=fake)
    original_sleep = fake.sleep

    async def sleep_then_stop(seconds: float) -> None:
        await original_sleep(seconds)
        if len(fake.sleeps) == 3:
            worker.request_shutdown()

    worker._sleep = sleep_then_stop

    assert await worker.register_until_success() is False
    assert len(fake.sleeps) == 3


async def test_a_heartbeat_404_re_registers_at_once() -> None:
    """After a backend restart the first heartbeat's 404 triggers registration, no waiting.

    This is what bounds re-registration by one heartbeat interval (the backend restart
    integration test allows two).
    """
    backend = FakeBackend()
    fake = FakeTime()
    worker = make_worker(backend, fake_time=fake)
    await worker.register_until_success()
    backend.known.clear()  # the backend restarted and forgot everyone
    backend.calls.clear()

    await worker.heartbeat_once()

    assert backend.paths() == [
        "POST /api/v1/workers/training-test-5003/heartbeat",
        "POST /api/v1/workers/register",
    ]
    assert fake.sleeps == []
    assert worker.registered is True


async def test_a_failed_heartbeat_is_logged_and_survived(caplog: pytest.LogCaptureFixture) -> None:
    """A heartbeat that cannot reach the backend is a warning, not a crash."""

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    worker = make_worker(down, fake_time=FakeTime())  # type: ignore[arg-type]

    await worker.heartbeat_once()

    assert "heartbeat failed" in caplog.text
    assert caplog.records[-1].levelno == logging.WARNING


async def test_lifecycle_registers_then_heartbeats_every_interval() -> None:
    """start(): register once, then one heartbeat per interval, until stop()."""
    backend = FakeBackend()
    fake = FakeTime()
    worker = make_worker(backend, fake_time=fake)

    await worker.start()
    await wait_for(lambda: backend.heartbeats >= 3)
    await worker.stop()

    paths = backend.paths()
    assert paths[0] == "POST /api/v1/workers/register"
    assert paths[1:4] == ["POST /api/v1/workers/training-test-5003/heartbeat"] * 3
    assert paths[-1] == "DELETE /api/v1/workers/training-test-5003"
    assert fake.sleeps[:3] == pytest.approx([0.2, 0.2, 0.2])
    assert backend.known == set()


async def test_lifecycle_ends_without_heartbeats_if_stopped_before_registering() -> None:
    """A worker told to stop while the backend is unreachable never starts heartbeating."""
    backend = FakeBackend()
    backend.refuse_connections = 1000
    fake = FakeTime()
    worker = make_worker(backend, fake_time=fake)

    await worker.start()
    await wait_for(lambda: len(fake.sleeps) >= 2)
    worker.request_shutdown()
    await wait_for(lambda: worker._lifecycle is not None and worker._lifecycle.done())

    assert backend.heartbeats == 0
    assert worker.registered is False


async def test_stop_without_any_registration_does_not_call_the_backend() -> None:
    """A worker that never started (bind failed) has nothing to unregister."""
    backend = FakeBackend()
    worker = make_worker(backend, fake_time=FakeTime())

    await worker.stop()

    assert backend.calls == []
    assert worker.status is WorkerStatus.STOPPING


# -- operations --------------------------------------------------------------------------


async def test_an_operation_runs_reports_progress_and_its_outcome() -> None:
    """While running: busy with progress in heartbeats; at the end: report, then idle."""
    backend = FakeBackend()
    runner = ScriptedRunner()
    worker = make_worker(backend, runner=runner)

    await worker.start_operation(start_request())
    await wait_for(runner.started.is_set)
    beat = worker.heartbeat_request()
    runner.release.set()
    await wait_for(lambda: backend.reports())

    assert beat.status is WorkerStatus.BUSY
    assert beat.current_operation_id == "op-1"
    assert beat.progress == Progress(percent=25, message="epoch 1")
    assert runner.contexts[0].parameters == {"epochs": 3}
    assert backend.reports() == [
        {
            "worker_id": "training-test-5003",
            "status": "completed",
            "result": {"loss": 0.1},
            "error": None,
            "checkpoint_saved": False,
        }
    ]
    assert worker.current_operation_id is None


async def test_a_second_operation_is_refused_while_busy() -> None:
    """One operation at a time: a second start raises WorkerBusy naming the first."""
    runner = ScriptedRunner()
    worker = make_worker(FakeBackend(), runner=runner)
    await worker.start_operation(start_request("op-1"))

    with pytest.raises(WorkerBusy, match="op-1"):
        await worker.start_operation(start_request("op-2"))

    runner.release.set()
    await wait_for(lambda: worker.status is WorkerStatus.IDLE)


async def test_an_operation_of_the_other_type_is_refused() -> None:
    """A training worker refuses backtest operations."""
    worker = make_worker(FakeBackend())

    with pytest.raises(WrongOperationType, match="training worker"):
        await worker.start_operation(start_request(operation_type=OperationType.BACKTEST))

    assert worker.status is WorkerStatus.IDLE


async def test_cancel_stops_the_runner_and_reports_cancelled() -> None:
    """cancel_operation passes StopReason.CANCELLED; unknown ids raise UnknownOperation."""
    backend = FakeBackend()
    runner = ScriptedRunner()
    worker = make_worker(backend, runner=runner)
    await worker.start_operation(start_request())
    await wait_for(runner.started.is_set)

    with pytest.raises(UnknownOperation):
        worker.cancel_operation("op-other")
    worker.cancel_operation("op-1")
    await wait_for(lambda: worker.status is WorkerStatus.IDLE)

    assert runner.seen_stop is StopReason.CANCELLED
    assert backend.reports()[0]["status"] == "cancelled"


async def test_shutdown_stops_the_operation_reports_it_then_unregisters() -> None:
    """SIGTERM with an operation: stop with SHUTDOWN, report (checkpoint saved), unregister."""
    backend = FakeBackend()
    runner = ScriptedRunner()
    worker = make_worker(backend, runner=runner)
    await worker.register_until_success()
    await worker.start_operation(start_request())
    await wait_for(runner.started.is_set)

    worker.request_shutdown()  # what the server's signal handling calls
    with pytest.raises(WorkerStopping):
        await worker.start_operation(start_request("op-2"))
    await worker.stop()  # what the lifespan shutdown calls

    assert runner.seen_stop is StopReason.SHUTDOWN
    report_index = backend.paths().index("POST /api/v1/operations/op-1/report")
    delete_index = backend.paths().index("DELETE /api/v1/workers/training-test-5003")
    assert report_index < delete_index
    assert backend.reports()[0]["checkpoint_saved"] is True
    assert backend.known == set()


async def test_a_runner_ignoring_the_stop_request_cannot_hold_the_shutdown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """stop() gives up on a stuck runner within the shutdown timeout and still unregisters."""
    backend = FakeBackend()
    runner = ScriptedRunner(ignore_stop=True)
    settings = attrs.evolve(SETTINGS, shutdown_timeout=datetime.timedelta(seconds=0.5))
    worker = make_worker(backend, runner=runner, settings=settings)
    await worker.register_until_success()
    await worker.start_operation(start_request())
    await wait_for(runner.started.is_set)

    await asyncio.wait_for(worker.stop(), timeout=10)
    runner.release.set()

    assert "did not stop within KTRDR_WORKER_SHUTDOWN_TIMEOUT" in caplog.text
    assert backend.paths()[-1] == "DELETE /api/v1/workers/training-test-5003"
    assert backend.reports() == []


async def test_a_crashing_runner_is_reported_as_failed() -> None:
    """An exception inside run() becomes a FAILED report naming it."""

    class Crashing:
        operation_type = OperationType.TRAINING

        def run(self, context: RunContext) -> RunOutcome:
            raise ZeroDivisionError("boom")

    backend = FakeBackend()
    worker = make_worker(backend, runner=Crashing())

    await worker.start_operation(start_request())
    await wait_for(lambda: backend.reports())

    report = backend.reports()[0]
    assert report["status"] == "failed"
    assert report["error"] == "runner error: ZeroDivisionError: boom"


async def test_an_unreportable_result_becomes_a_failure_and_long_errors_are_cut() -> None:
    """A result JSON cannot carry is reported as FAILED; errors are cut to the wire limit."""
    backend = FakeBackend()
    odd = ScriptedRunner(
        outcome=RunOutcome(status=OperationStatus.COMPLETED, result={"model": object()})
    )
    odd.release.set()
    worker = make_worker(backend, runner=odd)
    await worker.start_operation(start_request())
    await wait_for(lambda: backend.reports())
    long = ScriptedRunner(outcome=RunOutcome(status=OperationStatus.FAILED, error="x" * 9000))
    long.release.set()
    worker._runner = long
    await wait_for(lambda: worker.status is WorkerStatus.IDLE)
    await worker.start_operation(start_request("op-2"))
    await wait_for(lambda: len(backend.reports()) == 2)

    first, second = backend.reports()
    assert first["status"] == "failed"
    assert "could not be reported" in first["error"]
    assert len(second["error"]) == MAX_REPORT_ERROR


class HeldReports(FakeBackend):
    """A FakeBackend that holds every report until ``release`` is set, then answers it."""

    def __init__(self, report_status: int = 200) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.report_status = report_status

    async def __call__(self, request: httpx.Request) -> httpx.Response:  # type: ignore[override]
        if not request.url.path.endswith("/report"):
            return super().__call__(request)
        self.calls.append(("POST", request.url.path, json.loads(request.content)))
        await self.release.wait()
        self.calls.append(("ANSWERED", request.url.path + " (answered)", None))
        body = {"error": "invalid_transition", "detail": "it is cancelled"}
        return httpx.Response(self.report_status, json=body)


async def test_the_worker_is_free_as_soon_as_the_outcome_is_known() -> None:
    """The next operation can start while the last one's report is still on its way."""
    backend = HeldReports()
    runner = ScriptedRunner()
    runner.release.set()
    worker = make_worker(backend, runner=runner)

    await worker.start_operation(start_request("op-1"))
    await wait_for(lambda: backend.reports())
    status_while_reporting = worker.status
    await worker.start_operation(start_request("op-2"))
    backend.release.set()
    await wait_for(lambda: len(backend.reports()) == 2)

    assert status_while_reporting is WorkerStatus.IDLE
    assert [r["status"] for r in backend.reports()] == ["completed", "completed"]


async def test_a_409_on_a_report_is_final_and_not_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The backend refusing a report (already cancelled) is logged at INFO, sent once."""
    backend = HeldReports(report_status=409)
    backend.release.set()
    runner = ScriptedRunner()
    runner.release.set()
    worker = make_worker(backend, runner=runner)

    with caplog.at_level(logging.INFO, logger="ktrdr.workers.base"):
        await worker.start_operation(start_request())
        await wait_for(
            lambda: "ANSWERED /api/v1/operations/op-1/report (answered)" in backend.paths()
        )
        await worker.stop()

    assert len(backend.reports()) == 1
    assert "report of operation op-1 not needed" in caplog.text
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_stop_waits_for_a_report_still_in_flight() -> None:
    """An operation that ended just before SIGTERM is reported before unregistering."""
    backend = HeldReports()
    runner = ScriptedRunner()
    runner.release.set()
    worker = make_worker(backend, runner=runner)
    await worker.register_until_success()
    await worker.start_operation(start_request())
    await wait_for(lambda: backend.reports())

    stopping = asyncio.create_task(worker.stop())
    await wait_for(lambda: worker.status is WorkerStatus.STOPPING)
    backend.release.set()
    await asyncio.wait_for(stopping, timeout=10)

    paths = backend.paths()
    assert paths.index("ANSWERED /api/v1/operations/op-1/report (answered)") < paths.index(
        "DELETE /api/v1/workers/training-test-5003"
    )
