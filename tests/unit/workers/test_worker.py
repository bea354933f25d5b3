"""The Worker runtime with a fake backend (MockTransport), fake time and scripted job processes."""

from __future__ import annotations

import asyncio
import datetime
import json
import logging

import attrs
import httpx
import pytest
from support.scripted_jobs import ScriptedJob
from support.worker_fakes import (
    SETTINGS,
    FakeBackend,
    FakeTime,
    make_worker,
    start_request,
    wait_for,
)

from ktrdr.config import CheckpointSettings
from ktrdr.errors import (
    ConfigurationError,
    UnknownOperation,
    WorkerBusy,
    WorkerStopping,
    WrongOperationType,
)
from ktrdr.job_messages import CheckpointData, JobOutcome
from ktrdr.protocol import (
    OperationStatus,
    OperationType,
    Progress,
    WorkerStatus,
)
from ktrdr.workers.fingerprint import config_fingerprint
from ktrdr.workers.worker import MAX_REPORT_ERROR

pytestmark = pytest.mark.anyio

# -- construction and identity -----------------------------------------------------------


def test_worker_needs_a_type() -> None:
    """Settings without a type are a programming error (validate_all fills the type)."""
    with pytest.raises(ValueError, match="type is not set"):
        make_worker(FakeBackend(), settings=attrs.evolve(SETTINGS, type=None))


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
        "attempt": None,
        "registered": False,
        "progress": None,
        "job_pid": None,
        "pending_outcomes": [],
    }


# -- registration and heartbeats -------------------------------------------------------


@pytest.mark.parametrize(
    ("public_url", "words"),
    [("http://a:5003/?x=1", "no query string"), ("http://u:p@a:5003", "no user-info")],
)
def test_a_public_url_that_is_not_a_base_url_stops_the_worker_at_startup(
    public_url: str, words: str
) -> None:
    """A public URL the backend would refuse is a ConfigurationError naming the variable."""
    settings = attrs.evolve(SETTINGS, public_url=public_url)

    with pytest.raises(ConfigurationError) as raised:
        make_worker(FakeBackend(), settings=settings)

    assert f"KTRDR_WORKER_PUBLIC_URL='{public_url}'" in str(raised.value)
    assert words in str(raised.value)


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


async def test_a_replaced_credential_re_registers_at_once() -> None:
    """A heartbeat refused with 401 registers again at once; the next carries the new one."""
    backend = FakeBackend()
    worker = make_worker(backend, fake_time=FakeTime())
    await worker.register_until_success()
    backend.replace_credential(worker.worker_id)
    backend.calls.clear()

    await worker.heartbeat_once()
    await worker.heartbeat_once()

    assert backend.paths() == [
        "POST /api/v1/workers/training-test-5003/heartbeat",
        "POST /api/v1/workers/register",
        "POST /api/v1/workers/training-test-5003/heartbeat",
    ]
    assert backend.authorizations[-1] == f"Bearer {backend.credentials[worker.worker_id]}"
    assert worker.registered is True


async def test_the_shared_token_is_sent_only_to_register() -> None:
    """Heartbeats, reports and unregister carry the worker's credential, never the token."""
    backend = FakeBackend(token="t")
    job = ScriptedJob()
    worker = make_worker(backend, job=job, fake_time=FakeTime())
    await worker.register_until_success()
    await worker.heartbeat_once()
    await worker.start_operation(start_request())
    job.release.set()
    await wait_for(lambda: backend.reports())
    await worker.stop()

    sent = dict(zip(backend.paths(), backend.authorizations, strict=True))
    assert sent["POST /api/v1/workers/register"] == "Bearer t"
    others = [auth for path, auth in sent.items() if not path.endswith("/register")]
    assert len(others) == 3
    assert all(auth != "Bearer t" and auth is not None for auth in others)


async def test_a_report_refused_after_a_backend_restart_registers_and_reports_again() -> None:
    """After a backend restart the report's 401 leads to a registration and the same report."""
    backend = FakeBackend()
    job = ScriptedJob()
    worker = make_worker(backend, job=job)
    await worker.register_until_success()
    await worker.start_operation(start_request())
    await wait_for(job.started.is_set)
    backend.known.clear()  # the backend restarted and forgot every worker
    backend.calls.clear()

    job.release.set()
    await wait_for(lambda: len(backend.reports()) == 2)

    assert backend.paths() == [
        "POST /api/v1/operations/op-1/report",
        "POST /api/v1/workers/register",
        "POST /api/v1/operations/op-1/report",
    ]
    assert backend.reports()[0] == backend.reports()[1]
    assert worker.registered is True


async def test_a_failed_heartbeat_is_logged_and_survived(caplog: pytest.LogCaptureFixture) -> None:
    """A heartbeat that cannot reach the backend is a warning, not a crash."""
    backend = FakeBackend()
    worker = make_worker(backend, fake_time=FakeTime())
    await worker.register_until_success()
    backend.down = True

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
    job = ScriptedJob()
    worker = make_worker(backend, job=job)
    await worker.register_until_success()

    await worker.start_operation(start_request())
    await wait_for(job.started.is_set)
    beat = worker.heartbeat_request()
    job.release.set()
    await wait_for(lambda: backend.reports())

    assert beat.status is WorkerStatus.BUSY
    assert beat.current_operation_id == "op-1"
    assert beat.attempt == 1
    assert beat.progress == Progress(percent=25, message="epoch 1")
    assert beat.series == {"loss": [(1, 0.5)]}
    assert job.request()["parameters"] == {"epochs": 3}
    assert backend.reports() == [
        {
            "worker_id": "training-test-5003",
            "attempt": 1,
            "status": "completed",
            "result": {"loss": 0.1},
            "error": None,
            "checkpoint_saved": False,
            "series": {"loss": [[1, 0.5]]},
        }
    ]
    assert worker.current_operation_id is None


async def test_series_points_go_in_heartbeats_until_one_is_answered() -> None:
    """A heartbeat that fails keeps its points for the next; one answered 200 sends them once."""
    backend = FakeBackend()
    job = ScriptedJob()
    worker = make_worker(backend, job=job)
    await worker.register_until_success()
    await worker.start_operation(start_request())
    await wait_for(job.started.is_set)
    await wait_for(lambda: worker.heartbeat_request().series is not None)

    backend.down = True
    await worker.heartbeat_once()
    backend.down = False
    await worker.heartbeat_once()
    await worker.heartbeat_once()
    job.release.set()
    await wait_for(lambda: backend.reports())

    sent = [body.get("series") for _, path, body in backend.calls if path.endswith("/heartbeat")]
    assert sent == [{"loss": [[1, 0.5]]}, {"loss": [[1, 0.5]]}, None]
    assert backend.reports()[0]["series"] == {"loss": [[1, 0.5]]}


async def test_a_second_operation_is_refused_while_busy() -> None:
    """One operation at a time: a second start raises WorkerBusy naming the first."""
    job = ScriptedJob()
    worker = make_worker(FakeBackend(), job=job)
    await worker.start_operation(start_request("op-1"))

    with pytest.raises(WorkerBusy, match="op-1"):
        await worker.start_operation(start_request("op-2"))

    job.release.set()
    await wait_for(lambda: worker.status is WorkerStatus.IDLE)


async def test_an_operation_of_the_other_type_is_refused() -> None:
    """A training worker refuses backtest operations."""
    worker = make_worker(FakeBackend())

    with pytest.raises(WrongOperationType, match="training worker"):
        await worker.start_operation(start_request(operation_type=OperationType.BACKTEST))

    assert worker.status is WorkerStatus.IDLE


async def test_cancel_stops_the_job_and_reports_cancelled() -> None:
    """cancel_operation sends the job a cancelled stop; unknown ids raise UnknownOperation."""
    backend = FakeBackend()
    job = ScriptedJob()
    worker = make_worker(backend, job=job)
    await worker.register_until_success()
    await worker.start_operation(start_request())
    await wait_for(job.started.is_set)

    with pytest.raises(UnknownOperation):
        worker.cancel_operation("op-other")
    worker.cancel_operation("op-1")
    await wait_for(lambda: worker.status is WorkerStatus.IDLE and backend.reports())

    assert job.seen_stop == "cancelled"
    assert backend.reports()[0]["status"] == "cancelled"


async def test_shutdown_stops_the_operation_reports_it_then_unregisters() -> None:
    """SIGTERM with an operation: stop with SHUTDOWN, report (checkpoint saved), unregister."""
    backend = FakeBackend()
    job = ScriptedJob()
    worker = make_worker(backend, job=job)
    await worker.register_until_success()
    await worker.start_operation(start_request())
    await wait_for(job.started.is_set)

    worker.request_shutdown()  # what the server's signal handling calls
    with pytest.raises(WorkerStopping):
        await worker.start_operation(start_request("op-2"))
    await worker.stop()  # what the lifespan shutdown calls

    assert job.seen_stop == "shutdown"
    report_index = backend.paths().index("POST /api/v1/operations/op-1/report")
    delete_index = backend.paths().index("DELETE /api/v1/workers/training-test-5003")
    assert report_index < delete_index
    assert backend.reports()[0]["checkpoint_saved"] is True
    assert backend.known == set()


async def test_a_job_ignoring_sigterm_is_killed_reported_and_the_worker_unregisters() -> None:
    """On shutdown a stuck job is killed after half the shutdown budget, then reported."""
    backend = FakeBackend()
    job = ScriptedJob(behaviour="ignore_stop")
    settings = attrs.evolve(
        SETTINGS,
        shutdown_timeout=datetime.timedelta(seconds=1),
        stop_grace=datetime.timedelta(seconds=30),
    )
    worker = make_worker(backend, job=job, settings=settings)
    await worker.register_until_success()
    await worker.start_operation(start_request())
    await wait_for(job.started.is_set)

    await asyncio.wait_for(worker.stop(), timeout=10)

    report = backend.reports()[0]
    assert report["status"] == "cancelled"
    assert report["error"] == (
        "the job did not stop within 0.5s (half of KTRDR_WORKER_SHUTDOWN_TIMEOUT, below "
        "KTRDR_WORKER_STOP_GRACE=30s) and was killed (shutdown)"
    )
    assert backend.paths()[-1] == "DELETE /api/v1/workers/training-test-5003"


async def test_a_report_that_cannot_go_through_cannot_hold_the_shutdown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A backend that never answers the report: stop() gives up in time, keeps the
    outcome in the outbox for the next start, and unregisters.
    """
    backend = HeldReports()
    job = ScriptedJob()
    job.release.set()
    settings = attrs.evolve(SETTINGS, shutdown_timeout=datetime.timedelta(seconds=0.5))
    worker = make_worker(backend, job=job, settings=settings)
    await worker.register_until_success()
    await worker.start_operation(start_request())
    await wait_for(lambda: backend.reports())

    await asyncio.wait_for(worker.stop(), timeout=10)

    assert "1 outcome(s) not delivered yet (operations op-1); kept in" in caplog.text
    assert backend.paths()[-1] == "DELETE /api/v1/workers/training-test-5003"
    assert [e.operation_id for e in worker.outbox.scan().entries] == ["op-1"]


async def test_a_job_ignoring_a_cancel_is_killed_after_the_stop_grace() -> None:
    """A job that does not stop within KTRDR_WORKER_STOP_GRACE is killed; the worker is free."""
    backend = FakeBackend()
    job = ScriptedJob(behaviour="ignore_stop")
    settings = attrs.evolve(SETTINGS, stop_grace=datetime.timedelta(seconds=0.3))
    worker = make_worker(backend, job=job, settings=settings)
    await worker.register_until_success()
    await worker.start_operation(start_request())
    await wait_for(job.started.is_set)

    worker.cancel_operation("op-1")
    await wait_for(lambda: backend.reports())

    report = backend.reports()[0]
    assert report["status"] == "cancelled"
    assert report["error"] == (
        "the job did not stop within KTRDR_WORKER_STOP_GRACE=0.3s and was killed (cancelled)"
    )
    assert worker.status is WorkerStatus.IDLE
    assert job.seen_stop is None  # it never got to stop by itself


@pytest.mark.parametrize(
    ("behaviour", "error"),
    [
        ("raise", "the job process exited with code 1 before reporting an outcome"),
        ("exit", "the job process exited with code 7 before reporting an outcome"),
        ("segfault", "the job process died from SIGSEGV"),
    ],
)
async def test_a_crashing_job_fails_its_operation_and_the_worker_goes_on(
    behaviour: str, error: str
) -> None:
    """An exception, os._exit or a segfault in the job is a FAILED report; the next job runs."""
    backend = FakeBackend()
    worker = make_worker(backend, job=ScriptedJob(behaviour=behaviour))
    await worker.register_until_success()

    await worker.start_operation(start_request())
    await wait_for(lambda: backend.reports())
    await wait_for(lambda: worker.status is WorkerStatus.IDLE)

    report = backend.reports()[0]
    assert report["status"] == "failed"
    assert report["error"] == error


async def test_a_result_json_cannot_carry_becomes_a_failure() -> None:
    """A result the wire format cannot hold (an arbitrary object) is reported as FAILED."""
    backend = FakeBackend()
    odd = ScriptedJob(
        outcome=JobOutcome(status=OperationStatus.COMPLETED, result={"model": object()})
    )
    odd.release.set()
    worker = make_worker(backend, job=odd)
    await worker.register_until_success()
    await worker.start_operation(start_request())
    await wait_for(lambda: backend.reports())

    report = backend.reports()[0]
    assert report["status"] == "failed"
    assert "could not be reported" in report["error"]


async def test_long_errors_are_cut_to_the_wire_limit() -> None:
    """An error longer than the report allows is cut to MAX_REPORT_ERROR characters."""
    backend = FakeBackend()
    long = ScriptedJob(outcome=JobOutcome(status=OperationStatus.FAILED, error="x" * 9000))
    long.release.set()
    worker = make_worker(backend, job=long)
    await worker.register_until_success()
    await worker.start_operation(start_request())
    await wait_for(lambda: backend.reports())

    assert len(backend.reports()[0]["error"]) == MAX_REPORT_ERROR


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
    job = ScriptedJob()
    job.release.set()
    worker = make_worker(backend, job=job)
    await worker.register_until_success()

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
    """The backend refusing an outcome (409: already ended) is final: sent once, dropped
    from the outbox with a warning, never an error.
    """
    backend = HeldReports(report_status=409)
    backend.release.set()
    job = ScriptedJob()
    job.release.set()
    worker = make_worker(backend, job=job)
    await worker.register_until_success()

    with caplog.at_level(logging.INFO, logger="ktrdr.workers"):
        await worker.start_operation(start_request())
        await wait_for(
            lambda: "ANSWERED /api/v1/operations/op-1/report (answered)" in backend.paths()
        )
        await worker.stop()

    assert len(backend.reports()) == 1
    assert (
        "outcome of operation op-1 (completed) not taken by the backend: report of operation "
        "op-1: HTTP 409 invalid_transition: it is cancelled; dropped" in caplog.text
    )
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert worker.outbox.scan().entries == ()


async def test_stop_waits_for_a_report_still_in_flight() -> None:
    """An operation that ended just before SIGTERM is reported before unregistering."""
    backend = HeldReports()
    job = ScriptedJob()
    job.release.set()
    worker = make_worker(backend, job=job)
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


async def test_job_processes_are_warmed_up_only_once_registered() -> None:
    """The job server's warm-up waits for a successful registration (it would slow it down)."""
    backend = FakeBackend()
    backend.refuse_connections = 2
    worker = make_worker(backend, fake_time=FakeTime())
    registrations_seen: list[int] = []

    def warm_up() -> None:
        registrations_seen.append(backend.paths().count("POST /api/v1/workers/register"))

    worker._launcher.warm_up = warm_up  # type: ignore[method-assign]
    await worker.start()
    await wait_for(lambda: registrations_seen)
    await worker.stop()

    assert registrations_seen == [3]  # two refused attempts, then the one that succeeded


# -- the outbox ----------------------------------------------------------------------------


async def test_while_an_outcome_waits_heartbeats_list_it_and_new_work_is_taken() -> None:
    """The backend cannot store the report (503): the outcome stays in the outbox, every
    heartbeat and /health list it, the worker is idle and runs the next operation; once
    the backend answers, both outcomes are delivered and the list is empty.
    """
    backend = FakeBackend()
    backend.report_answers = [503] * 5
    job = ScriptedJob()
    worker = make_worker(backend, job=job)
    await worker.register_until_success()
    job.release.set()
    await worker.start_operation(start_request("op-1"))
    await wait_for(lambda: len(backend.reports()) >= 2)

    beat = worker.heartbeat_request()
    on_disk = [e.operation_id for e in worker.outbox.scan().entries]
    await worker.start_operation(start_request("op-2"))
    await wait_for(lambda: len(backend.reports()) == 7 and not worker.pending_outcomes)

    assert beat.status is WorkerStatus.IDLE
    assert beat.pending_outcomes == ["op-1"]
    assert on_disk == ["op-1"]
    assert worker.health()["pending_outcomes"] == []
    assert [r["status"] for r in backend.reports()] == ["completed"] * 7
    assert worker.outbox.scan().entries == ()
    await worker.stop()


async def test_a_restarted_worker_delivers_what_its_earlier_run_left() -> None:
    """Outcomes left on disk by an earlier process of this worker id are loaded at
    start (listed at once), delivered right after registering, and a completed
    operation's checkpoint is removed then.
    """
    backend = FakeBackend()
    job = ScriptedJob()
    earlier = make_worker(FakeBackend(), job=job)
    earlier.outbox.put("op-old", {"worker_id": SETTINGS.id, "status": "completed", "result": {}})
    checkpoints = job.launcher(SETTINGS).host.checkpoints
    checkpoints.save("op-old", kind="training", data=CheckpointData(step=1, meta={}, state=b"s"))
    worker = make_worker(backend, job=job, fake_time=FakeTime())

    await worker.start()
    listed = worker.health()["pending_outcomes"]
    await wait_for(lambda: backend.reports() and not worker.pending_outcomes)
    await worker.stop()

    assert listed == ["op-old"]
    assert backend.paths()[:2] == [
        "POST /api/v1/workers/register",
        "POST /api/v1/operations/op-old/report",
    ]
    assert backend.reports() == [{"worker_id": SETTINGS.id, "status": "completed", "result": {}}]
    assert worker.outbox.scan().entries == ()
    assert not checkpoints.exists("op-old")


async def test_an_outcome_is_in_the_outbox_before_its_report_is_sent() -> None:
    """When the report reaches the backend, the worker's outbox already holds it, with
    exactly the body sent.
    """
    backend = FakeBackend()
    job = ScriptedJob()
    on_disk: list[list[dict[str, object]]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/report"):
            on_disk.append([dict(e.report) for e in worker.outbox.scan().entries])
        return backend(request)

    worker = make_worker(backend, job=job, handler=handler)
    await worker.register_until_success()
    job.release.set()
    await worker.start_operation(start_request())
    await wait_for(lambda: backend.reports() and not worker.pending_outcomes)

    assert on_disk == [backend.reports()]
    assert worker.outbox.scan().entries == ()
