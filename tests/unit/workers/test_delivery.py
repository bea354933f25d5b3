"""Outcome delivery: a real outbox on disk, the real backend client, a MockTransport backend."""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from support.worker_fakes import FakeBackend, FakeTime

from ktrdr.config import CheckpointSettings, Secret
from ktrdr.job_messages import CheckpointData
from ktrdr.protocol import Handoff, OperationType, RegisterRequest
from ktrdr.workers.backend_client import BackendClient
from ktrdr.workers.backoff import registration_backoff
from ktrdr.workers.checkpoints import CheckpointStore
from ktrdr.workers.delivery import Delivery, OutcomeDelivery
from ktrdr.workers.outbox import REJECTED_FOLDER, Outbox

pytestmark = pytest.mark.anyio

WORKER = "training-a-5003"
REGISTRATION = RegisterRequest(
    worker_id=WORKER,
    worker_type=OperationType.TRAINING,
    endpoint_url="http://127.0.0.1:9",  # nothing answers: never called
    heartbeat_interval_s=0.2,
    config_fingerprint="fp",
)
COMPLETED = {"worker_id": WORKER, "status": "completed", "result": {"loss": 0.5}}
FAILED = {"worker_id": WORKER, "status": "failed", "error": "bad data"}
CANCELLED = {"worker_id": WORKER, "status": "cancelled", "error": "cancelled by request"}


class Rig:
    """An OutcomeDelivery over a real outbox and checkpoint store in ``tmp_path``."""

    def __init__(
        self,
        tmp_path: Path,
        backend: FakeBackend,
        *,
        handler: Callable[[httpx.Request], httpx.Response] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        heartbeat_s: float = 0.2,
        outbox_dir: Path | None = None,
        take_next: Callable[[], bool] = lambda: False,
        on_handoff: Callable[[Handoff], None] | None = None,
    ) -> None:
        self.backend = backend
        self.time = FakeTime()
        self.client = BackendClient(
            http=httpx.AsyncClient(transport=httpx.MockTransport(handler or backend)),
            base_url="http://backend:8000",
            token=Secret("t"),
            timeout=datetime.timedelta(seconds=2),
        )
        self.checkpoints = CheckpointStore(settings=CheckpointSettings(dir=tmp_path / "ckpt"))
        directory = outbox_dir if outbox_dir is not None else tmp_path / "ckpt" / ".outbox" / WORKER
        self.outbox = Outbox(directory=directory)
        interval = datetime.timedelta(seconds=heartbeat_s)
        self.delivery = OutcomeDelivery(
            outbox=self.outbox,
            backend=self.client,
            checkpoints=self.checkpoints,
            register_again=self.register_again,
            backoff=lambda: registration_backoff(interval, random=lambda: 1.0),
            sleep=sleep or self.time.sleep,
            take_next=take_next,
            on_handoff=on_handoff,
        )

    async def register_again(self, seen: int) -> None:
        if self.client.registrations == seen:
            await self.client.register(REGISTRATION)

    async def register(self) -> None:
        await self.client.register(REGISTRATION)
        self.delivery.wake(fresh=True)

    def checkpoint(self, operation_id: str) -> None:
        self.checkpoints.save(
            operation_id, kind="training", data=CheckpointData(step=3, meta={}, state=b"s")
        )

    def on_disk(self) -> list[str]:
        return [e.operation_id for e in self.outbox.scan().entries]


async def settled(future: asyncio.Future[Delivery]) -> Delivery:
    return await asyncio.wait_for(future, timeout=10)


async def test_an_outcome_is_on_disk_before_it_is_sent(tmp_path: Path) -> None:
    """When the report reaches the backend, its entry is already in the outbox."""
    backend = FakeBackend()
    seen_on_disk: list[bool] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/report"):
            seen_on_disk.append(rig.outbox.path_for("op-1").is_file())
        return backend(request)

    rig = Rig(tmp_path, backend, handler=handler)
    await rig.register()

    done = await settled(await rig.delivery.submit("op-1", COMPLETED))

    assert done is Delivery.DELIVERED
    assert seen_on_disk == [True]
    assert backend.reports() == [COMPLETED]
    assert rig.on_disk() == []


async def test_an_acknowledged_completion_removes_its_checkpoint_a_failure_keeps_it(
    tmp_path: Path,
) -> None:
    """The checkpoint of a completed operation stays until the backend has the result,
    then goes; a failed one's stays (it can be resumed).
    """
    backend = FakeBackend()
    while_sent: list[bool] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/report"):
            while_sent.append(rig.checkpoints.exists(request.url.path.split("/")[-2]))
        return backend(request)

    rig = Rig(tmp_path, backend, handler=handler)
    await rig.register()
    rig.checkpoint("op-done")
    rig.checkpoint("op-failed")

    completed = await rig.delivery.submit("op-done", COMPLETED)
    failed = await rig.delivery.submit("op-failed", FAILED)

    assert [await settled(completed), await settled(failed)] == [Delivery.DELIVERED] * 2
    assert while_sent == [True, True]
    assert rig.checkpoints.exists("op-done") is False
    assert rig.checkpoints.exists("op-failed") is True


async def test_an_unavailable_backend_is_retried_with_capped_backoff_until_it_answers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """40 refused connections then five 503s: kept on disk, retried 0.1 s doubling up to
    the 1 s cap, never given up, then delivered; warnings only every 10th attempt.
    """
    backend = FakeBackend()
    backend.report_answers = [httpx.ConnectError("refused")] * 40 + [503] * 5
    rig = Rig(tmp_path, backend)
    await rig.register()
    rig.checkpoint("op-1")

    with caplog.at_level(logging.INFO, logger="ktrdr.workers.delivery"):
        done = await settled(await rig.delivery.submit("op-1", COMPLETED))

    assert done is Delivery.DELIVERED
    assert len(backend.reports()) == 46
    assert rig.time.sleeps[:6] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert max(rig.time.sleeps) == 1.0
    assert len(rig.time.sleeps) == 45
    assert rig.on_disk() == []
    assert not rig.checkpoints.exists("op-1")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 5  # attempts 1, 10, 20, 30, 40
    assert warnings[0].startswith("outcome of operation op-1 not delivered (attempt 1): ")
    assert "kept in the outbox" in warnings[0]
    assert "delivered after 45 failed attempt(s)" in caplog.text


@pytest.mark.parametrize(
    ("status", "report", "level"),
    [
        (409, COMPLETED, logging.WARNING),
        (409, CANCELLED, logging.INFO),
        (404, COMPLETED, logging.WARNING),
    ],
)
async def test_a_409_or_404_is_final_the_outcome_is_dropped_the_checkpoint_kept(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    status: int,
    report: dict[str, object],
    level: int,
) -> None:
    """The backend will not take it (already ended, not the current attempt, gone): sent
    once, dropped from the outbox with a warning (INFO for a cancel that crossed the
    user's), the checkpoint left for a resume.
    """
    backend = FakeBackend()
    backend.report_answers = [status]
    rig = Rig(tmp_path, backend)
    await rig.register()
    rig.checkpoint("op-1")

    with caplog.at_level(logging.INFO, logger="ktrdr.workers.delivery"):
        done = await settled(await rig.delivery.submit("op-1", report))

    assert done is Delivery.REFUSED
    assert len(backend.reports()) == 1
    assert rig.on_disk() == []
    assert rig.checkpoints.exists("op-1")
    [record] = [r for r in caplog.records if "not taken by the backend" in r.getMessage()]
    assert record.levelno == level
    assert f"HTTP {status}" in record.getMessage()


async def test_an_outcome_the_backend_cannot_read_is_set_aside_not_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """422: moved to rejected/ (an operator can look at it), logged as an error naming
    the file; never sent again.
    """
    backend = FakeBackend()
    backend.report_answers = [422]
    rig = Rig(tmp_path, backend)
    await rig.register()

    done = await settled(await rig.delivery.submit("op-1", COMPLETED))

    rejected = rig.outbox.directory / REJECTED_FOLDER / "op-1.json"
    assert done is Delivery.SET_ASIDE
    assert rejected.is_file()
    assert rig.on_disk() == []
    assert len(backend.reports()) == 1
    assert f"not retried, kept at {rejected}" in caplog.text
    assert "HTTP 422 invalid_request" in caplog.text


async def test_a_refused_credential_registers_again_and_sends_again(tmp_path: Path) -> None:
    """401 (a newer registration took the credential, the backend restarted): register,
    then the same body again.
    """
    backend = FakeBackend()
    rig = Rig(tmp_path, backend)
    await rig.register()
    backend.replace_credential(WORKER)
    backend.calls.clear()

    done = await settled(await rig.delivery.submit("op-1", COMPLETED))

    assert done is Delivery.DELIVERED
    assert backend.paths() == [
        "POST /api/v1/operations/op-1/report",
        "POST /api/v1/workers/register",
        "POST /api/v1/operations/op-1/report",
    ]
    assert backend.reports() == [COMPLETED, COMPLETED]


async def test_nothing_is_sent_before_a_registration_then_everything_is(tmp_path: Path) -> None:
    """Without a credential outcomes wait (on disk); the registration's wake sends them."""
    backend = FakeBackend()
    rig = Rig(tmp_path, backend)

    first = await rig.delivery.submit("op-1", COMPLETED)
    second = await rig.delivery.submit("op-2", FAILED)
    await asyncio.sleep(0.05)
    sent_before = list(backend.calls)
    await rig.register()

    assert [await settled(first), await settled(second)] == [Delivery.DELIVERED] * 2
    assert sent_before == []
    assert backend.reports() == [COMPLETED, FAILED]


async def test_entries_of_an_earlier_run_are_loaded_and_delivered_oldest_first(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """load() at start: valid entries are queued (and listed), a corrupt one is reported
    as an error naming its file and set aside; all valid ones reach the backend.
    """
    backend = FakeBackend()
    rig = Rig(tmp_path, backend)
    rig.outbox.put("op-old", FAILED)
    rig.outbox.put("op-new", COMPLETED)
    (rig.outbox.directory / "op-bad.json").write_text("{truncated")

    with caplog.at_level(logging.INFO, logger="ktrdr.workers.delivery"):
        found = await rig.delivery.load()
    listed = rig.delivery.pending_ids
    rig.delivery.start()
    await rig.register()
    await asyncio.wait_for(_until(lambda: not rig.delivery.pending_ids), timeout=10)

    assert found == 2
    assert listed == ["op-old", "op-new"]
    assert backend.reports() == [FAILED, COMPLETED]
    assert rig.on_disk() == []
    assert "found 2 undelivered outcome(s) from an earlier run" in caplog.text
    corrupt = rig.outbox.directory / "corrupt" / "op-bad.json"
    assert "an outbox entry cannot be used (it is not JSON (line 1, column 2" in caplog.text
    assert f"set aside at {corrupt}, not delivered" in caplog.text


async def test_stop_keeps_what_could_not_be_delivered_on_disk(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A backend away at shutdown: stop() tries until its deadline, then leaves the entry
    on disk for the next start and says so.
    """
    backend = FakeBackend()
    rig = Rig(tmp_path, backend, sleep=asyncio.sleep)
    await rig.register()
    backend.report_answers = [503] * 1000

    await rig.delivery.submit("op-1", COMPLETED)
    left = await asyncio.wait_for(rig.delivery.stop(0.3), timeout=10)

    assert left == ["op-1"]
    assert rig.on_disk() == ["op-1"]
    assert len(backend.reports()) >= 2  # retried meanwhile
    assert "1 outcome(s) not delivered yet (operations op-1); kept in" in caplog.text
    assert "delivered after the next start" in caplog.text


async def test_stop_without_a_credential_does_not_wait(tmp_path: Path) -> None:
    """Never registered: nothing can be sent, so a shutdown does not spend its budget."""
    rig = Rig(tmp_path, FakeBackend(), sleep=asyncio.sleep)
    await rig.delivery.submit("op-1", COMPLETED)

    left = await asyncio.wait_for(rig.delivery.stop(60), timeout=5)

    assert left == ["op-1"]
    assert rig.on_disk() == ["op-1"]


async def test_a_registration_retries_at_once_however_long_the_backoff(tmp_path: Path) -> None:
    """After failures the next retry is seconds away; a (re-)registration sends now."""
    backend = FakeBackend()
    backend.report_answers = [503] * 7
    rig = Rig(tmp_path, backend, sleep=asyncio.sleep, heartbeat_s=30)
    await rig.register()

    waiting = await rig.delivery.submit("op-1", COMPLETED)
    await asyncio.wait_for(_until(lambda: len(backend.reports()) == 7), timeout=30)
    await rig.register()  # the next delay would be 6.4 s
    done = await asyncio.wait_for(waiting, timeout=3)

    assert done is Delivery.DELIVERED
    assert len(backend.reports()) == 8


async def test_a_disk_that_refuses_the_entry_still_delivers_from_memory(
    small_fs: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A full disk: an error says the outcome is in memory only; it is still delivered."""
    backend = FakeBackend()
    rig = Rig(tmp_path, backend, outbox_dir=small_fs / "outbox")
    await rig.register()
    (small_fs / "filler").write_bytes(b"\0" * 60 * 1024)
    big = {**COMPLETED, "result": {"weights": "w" * 16 * 1024}}

    done = await settled(await rig.delivery.submit("op-1", big))

    assert done is Delivery.DELIVERED
    assert backend.reports() == [big]
    assert "cannot be written to the outbox" in caplog.text
    assert "No space left on device" in caplog.text
    assert "delivering it from memory only" in caplog.text


async def _until(condition: Callable[[], object]) -> None:
    while not condition():
        await asyncio.sleep(0.005)


# --- asking for the next operation ----------------------------------------------------

NEXT = {"start": {"operation_id": "op-9", "operation_type": "training", "attempt": 2}}


async def test_a_live_report_asks_for_more_and_hands_the_answer_on_before_it_is_done(
    tmp_path: Path,
) -> None:
    """A report made by this run asks (``take_next``) when the worker can take more; the
    operation the answer hands over reaches ``on_handoff`` before the entry is delivered.
    An outcome an earlier run left never asks.
    """
    backend = FakeBackend()
    backend.hands_off = True
    seen: list[tuple[str, bool]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        answer = backend(request)
        asked = request.url.path.endswith("/report") and b'"take_next":true' in request.content
        if asked and answer.status_code == 200:
            return httpx.Response(200, json={"next_operation": NEXT})
        return answer

    def on_handoff(handoff: Handoff) -> None:
        seen.append((handoff.start.operation_id, "op-1" in rig.delivery.pending_ids))

    Outbox(directory=tmp_path / "ckpt" / ".outbox" / WORKER).put("op-0", FAILED)
    rig = Rig(tmp_path, backend, handler=handler, take_next=lambda: True, on_handoff=on_handoff)
    assert await rig.delivery.load() == 1
    await rig.register()
    live = await settled(await rig.delivery.submit("op-1", COMPLETED))

    assert live is Delivery.DELIVERED
    assert [r.get("take_next") for r in backend.reports()] == [None, True]
    assert seen == [("op-9", True)]  # handed on while op-1 was still pending


async def test_a_worker_that_cannot_take_more_does_not_ask(tmp_path: Path) -> None:
    backend = FakeBackend()
    backend.hands_off = True
    rig = Rig(tmp_path, backend, take_next=lambda: False, on_handoff=lambda handoff: None)
    await rig.register()

    await settled(await rig.delivery.submit("op-1", COMPLETED))

    assert backend.reports() == [COMPLETED]
