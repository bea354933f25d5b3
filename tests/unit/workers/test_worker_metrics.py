"""A worker's /metrics: who may read it, and that it shows what the worker did."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import generate_latest
from support.scrape import Scrape
from support.scripted_jobs import ScriptedJob
from support.worker_fakes import SETTINGS, FakeBackend, make_worker, start_request, wait_for

from ktrdr.config import AuthSettings, CheckpointSettings, MetricsSettings, Secret
from ktrdr.job_messages import CheckpointData, JobRequest
from ktrdr.protocol import OperationType, WorkerStatus
from ktrdr.workers.checkpoints import CheckpointStore
from ktrdr.workers.job_host import JobHost
from ktrdr.workers.metrics import DisabledWorkerMetrics, WorkerMetrics, process_memory_peak
from ktrdr.workers.server import create_worker_app
from ktrdr.workers.worker import Worker

pytestmark = pytest.mark.anyio

TOKEN = "worker-metrics-token"
SCRAPE_TOKEN = "worker-scrape-token"


def metrics_for_tests() -> WorkerMetrics:
    """Enabled metrics of the test worker (training-test-5003)."""
    return WorkerMetrics(worker_id=SETTINGS.id, worker_type=OperationType.TRAINING)


@pytest.fixture
def job() -> ScriptedJob:
    """A scripted job that holds its operation until released."""
    return ScriptedJob()


@pytest.fixture
def worker(job: ScriptedJob) -> Worker:
    """A training worker with metrics on, over a fake backend."""
    return make_worker(FakeBackend(), job=job, metrics=metrics_for_tests())


def client_for(worker: Worker, scrape_token: str | None = None) -> httpx.AsyncClient:
    """A client of ``worker``'s app (worker token TOKEN, the scrape token if given)."""
    token = Secret(scrape_token) if scrape_token is not None else None
    app = create_worker_app(
        worker, auth=AuthSettings(worker_token=Secret(TOKEN)), metrics=MetricsSettings(token=token)
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://worker")


@pytest.fixture
async def client(worker: Worker, job: ScriptedJob) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the worker's app; releases the job at the end."""
    async with client_for(worker) as http:
        yield http
    job.release.set()
    await wait_for(lambda: worker.status is not WorkerStatus.BUSY)


async def scrape(client: httpx.AsyncClient, token: str = TOKEN) -> Scrape:
    """GET /metrics with ``token``; the parsed samples (200 required)."""
    response = await client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    return Scrape(response.text)


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong", f"Bearer {SCRAPE_TOKEN}", TOKEN],
    ids=["none", "wrong", "unset-scrape-token", "no-scheme"],
)
async def test_metrics_without_an_accepted_token_is_401_and_shows_nothing(
    client: httpx.AsyncClient, authorization: str | None
) -> None:
    """401 naming KTRDR_AUTH_WORKER_TOKEN; no metric and no token in the answer."""
    headers = {"Authorization": authorization} if authorization else {}
    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert "KTRDR_AUTH_WORKER_TOKEN" in response.json()["detail"]
    for leak in ("ktrdr_", TOKEN, SCRAPE_TOKEN, SETTINGS.id):
        assert leak not in response.text


async def test_the_scrape_token_reads_metrics_but_starts_nothing(worker: Worker) -> None:
    """With KTRDR_METRICS_TOKEN set it reads /metrics; POST /operations refuses it."""
    headers = {"Authorization": f"Bearer {SCRAPE_TOKEN}"}
    async with client_for(worker, SCRAPE_TOKEN) as client:
        scraped = await scrape(client, SCRAPE_TOKEN)
        start = await client.post(
            "/operations", json=start_request().model_dump(mode="json"), headers=headers
        )
    assert scraped.value("ktrdr_worker_busy") == 0
    labels = {"worker_id": SETTINGS.id, "worker_type": "training", "version": "0.4.0"}
    assert scraped.value("ktrdr_worker_info", labels) == 1
    assert start.status_code == 401
    assert worker.status is WorkerStatus.IDLE


async def test_metrics_switched_off_are_not_served() -> None:
    """Disabled metrics: /metrics is 404 even with the worker token."""
    worker = make_worker(FakeBackend())
    assert isinstance(worker.metrics, DisabledWorkerMetrics)
    async with client_for(worker) as client:
        response = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 404


async def test_a_run_shows_busy_progress_memory_then_its_outcome(
    client: httpx.AsyncClient, worker: Worker, job: ScriptedJob
) -> None:
    """While the job runs: busy 1, its progress, its process's memory; then one completed."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    started = await client.post(
        "/operations", json=start_request().model_dump(mode="json"), headers=auth
    )
    assert started.status_code == 202
    await wait_for(lambda: worker.heartbeat_request().progress is not None)
    during = await scrape(client)
    job.release.set()
    await wait_for(lambda: worker.status is WorkerStatus.IDLE)
    after = await scrape(client)

    assert (during.value("ktrdr_worker_busy"), after.value("ktrdr_worker_busy")) == (1, 0)
    progress = "ktrdr_worker_operation_progress_percent"
    assert (during.value(progress), after.value(progress)) == (25, 0)
    if Path("/proc/self/status").exists():
        assert during.value("ktrdr_worker_job_memory_peak_bytes") > 1024 * 1024
    completed = {"operation_type": "training", "outcome": "completed"}
    assert during.value("ktrdr_worker_operations_total", completed) == 0
    assert after.value("ktrdr_worker_operations_total", completed) == 1
    assert after.total("ktrdr_worker_operations_total") == 1


def test_each_checkpoint_write_is_timed_and_a_refused_one_is_not(tmp_path: Path) -> None:
    """Two saved checkpoints are two samples; a write the disk refuses adds none."""
    metrics = metrics_for_tests()
    settings = CheckpointSettings(dir=tmp_path / "checkpoints")
    host = JobHost(
        checkpoints=CheckpointStore(settings=settings),
        worker=SETTINGS,
        checkpoint_settings=settings,
        metrics=metrics,
    )
    request = JobRequest(
        operation_id="op-1",
        operation_type=OperationType.TRAINING,
        parameters={},
        checkpoint_settings=settings,
    )
    data = CheckpointData(step=1, meta={}, state=b"x" * 1000)
    assert host.save(request, data) is None
    assert host.save(request, data) is None
    host.checkpoints.delete("op-1")
    (tmp_path / "checkpoints" / "op-1").write_text("a file where the directory should be")
    assert host.save(request, data) is not None

    scraped = Scrape(generate_latest(metrics.registry).decode())
    assert scraped.value("ktrdr_worker_checkpoint_write_seconds_count") == 2
    assert scraped.value("ktrdr_worker_checkpoint_write_seconds_sum") > 0


def test_memory_peak_is_read_from_proc_status(tmp_path: Path) -> None:
    """VmHWM in kB becomes bytes; a process that is gone, or a line missing, gives None."""
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "status").write_text("Name:\tpython\nVmHWM:\t  2048 kB\nVmRSS:\t1 kB\n")
    (tmp_path / "43").mkdir()
    (tmp_path / "43" / "status").write_text("Name:\tpython\n")
    assert process_memory_peak(42, proc=tmp_path) == 2048 * 1024
    assert process_memory_peak(43, proc=tmp_path) is None
    assert process_memory_peak(44, proc=tmp_path) is None
