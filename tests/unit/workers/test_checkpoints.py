"""The checkpoint store: atomic writes, safe loading, expiry, the startup check."""

from __future__ import annotations

import datetime
import json
import os
import threading
import zipfile
from pathlib import Path
from typing import Any

import pytest

from ktrdr.config import CheckpointSettings, ConfigurationError
from ktrdr.errors import CheckpointCorrupt, CheckpointFenced, CheckpointMissing
from ktrdr.job_messages import CheckpointData
from ktrdr.workers.checkpoints import CHECKPOINT_FILE, CheckpointStore

NOW = datetime.datetime(2026, 3, 1, 12, 0, tzinfo=datetime.timezone.utc)


def make_store(tmp_path: Path, **overrides: Any) -> CheckpointStore:
    values: dict[str, Any] = {"dir": tmp_path / "checkpoints"}
    values.update(overrides)
    return CheckpointStore(settings=CheckpointSettings(**values))


STATE = bytes(range(256)) * 4


def save_sample(
    store: CheckpointStore, operation_id: str = "op-1", step: int = 4, state: bytes = STATE
) -> Path:
    data = CheckpointData(step=step, meta={"parameters": {"seed": 1}, "note": "x"}, state=state)
    return store.save(operation_id, kind="training", data=data)


# --- save and load --------------------------------------------------------------------


def test_save_writes_under_dir_and_operation_id(tmp_path: Path) -> None:
    """The checkpoint lives at ``<dir>/<operation id>/checkpoint.zip`` with no temp files."""
    store = make_store(tmp_path)
    path = save_sample(store)
    assert path == tmp_path / "checkpoints" / "op-1" / CHECKPOINT_FILE
    assert sorted(p.name for p in path.parent.iterdir()) == [CHECKPOINT_FILE]
    assert store.exists("op-1")


def test_load_returns_what_was_saved(tmp_path: Path) -> None:
    """State bytes, metadata and step come back exactly."""
    store = make_store(tmp_path)
    save_sample(store, step=7)
    checkpoint = store.load("op-1", kind="training")
    assert checkpoint.step == 7
    assert checkpoint.meta == {"parameters": {"seed": 1}, "note": "x"}
    assert checkpoint.state == STATE


def test_save_replaces_the_previous_checkpoint(tmp_path: Path) -> None:
    """A second save replaces the first."""
    store = make_store(tmp_path)
    save_sample(store, step=1)
    save_sample(store, step=2)
    assert store.load("op-1", kind="training").step == 2


def test_a_full_disk_keeps_the_old_checkpoint_and_leaves_no_temp_file(small_fs: Path) -> None:
    """A save that runs out of space leaves the previous checkpoint intact and no temp file."""
    store = make_store(small_fs, dir=small_fs / "checkpoints")
    path = save_sample(store, step=1)

    with pytest.raises(OSError, match="No space left"):
        save_sample(store, step=2, state=os.urandom(256 * 1024))

    assert sorted(p.name for p in path.parent.iterdir()) == [CHECKPOINT_FILE]
    assert store.load("op-1", kind="training").step == 1


def test_unsafe_operation_id_is_refused(tmp_path: Path) -> None:
    """An id that could escape the checkpoint directory is refused."""
    store = make_store(tmp_path)
    with pytest.raises(ValueError, match=r"operation id '\.\./x' cannot name"):
        save_sample(store, operation_id="../x")


def test_missing_checkpoint_is_reported_with_path_and_max_age(tmp_path: Path) -> None:
    """Loading a checkpoint that does not exist names the path and the expiry setting."""
    store = make_store(tmp_path, max_age_days=9)
    with pytest.raises(CheckpointMissing, match=r"op-1.*KTRDR_CHECKPOINT_MAX_AGE_DAYS=9"):
        store.load("op-1", kind="training")


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
        pytest.param(lambda data: b"garbage" * 10, id="garbage"),
        pytest.param(lambda data: b"", id="empty"),
    ],
)
def test_damaged_checkpoint_is_corrupt(tmp_path: Path, damage: Any) -> None:
    """A truncated, garbage or empty file is reported as corrupt, naming the file."""
    store = make_store(tmp_path)
    path = save_sample(store)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointCorrupt, match=r"checkpoint .*checkpoint\.zip"):
        store.load("op-1", kind="training")


def test_checkpoint_of_another_kind_is_refused(tmp_path: Path) -> None:
    """A training checkpoint cannot resume a backtest."""
    store = make_store(tmp_path)
    save_sample(store)
    with pytest.raises(CheckpointCorrupt, match="written by a 'training' job, not 'backtest'"):
        store.load("op-1", kind="backtest")


def test_checkpoint_copied_from_another_operation_is_refused(tmp_path: Path) -> None:
    """A checkpoint file moved under another operation's directory is refused."""
    store = make_store(tmp_path)
    source = save_sample(store, operation_id="op-1")
    target = store.path_for("op-2")
    target.parent.mkdir(parents=True)
    target.write_bytes(source.read_bytes())
    with pytest.raises(CheckpointCorrupt, match="belongs to operation 'op-1'"):
        store.load("op-2", kind="training")


def test_a_zip_ktrdr_did_not_write_is_refused(tmp_path: Path) -> None:
    """A valid zip file without ktrdr's header is refused as not a ktrdr checkpoint."""
    store = make_store(tmp_path)
    path = store.path_for("op-1")
    path.parent.mkdir(parents=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("other.txt", "hello")
    with pytest.raises(CheckpointCorrupt, match="corrupt or not a ktrdr checkpoint"):
        store.load("op-1", kind="training")


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"format": "other"}, "it is not a ktrdr checkpoint"),
        ({"version": 1}, "format version 1 is not 2"),
        ({"step": "four"}, "lacks the step"),
    ],
)
def test_a_header_that_does_not_fit_is_refused(
    tmp_path: Path, change: dict[str, Any], problem: str
) -> None:
    """A header of another format, version or without a step is refused, saying why."""
    store = make_store(tmp_path)
    path = save_sample(store)
    with zipfile.ZipFile(path) as archive:
        header = json.loads(archive.read("header.json"))
        state = archive.read("state.bin")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("header.json", json.dumps({**header, **change}))
        archive.writestr("state.bin", state)
    with pytest.raises(CheckpointCorrupt, match=problem):
        store.load("op-1", kind="training")


def test_delete_removes_the_operation_directory(tmp_path: Path) -> None:
    """Deleting removes the checkpoint and its directory; deleting twice is harmless."""
    store = make_store(tmp_path)
    path = save_sample(store)
    store.delete("op-1")
    store.delete("op-1")
    assert not path.parent.exists()


# --- expiry ---------------------------------------------------------------------------


def age(path: Path, days: float) -> None:
    stamp = (NOW - datetime.timedelta(days=days)).timestamp()
    os.utime(path, (stamp, stamp))


def test_purge_removes_files_older_than_max_age_days(tmp_path: Path) -> None:
    """Files older than ``max_age_days`` go (with their emptied directory); newer ones stay."""
    store = make_store(tmp_path, max_age_days=2)
    old = save_sample(store, operation_id="old")
    fresh = save_sample(store, operation_id="fresh")
    age(old, 2.01)
    age(fresh, 1.99)
    removed = store.purge_expired(NOW)
    assert removed == [old]
    assert not old.parent.exists()
    assert fresh.exists()


def test_purge_reads_max_age_days(tmp_path: Path) -> None:
    """The same three-day-old file is kept when ``max_age_days`` is 5."""
    store = make_store(tmp_path, max_age_days=5)
    old = save_sample(store, operation_id="old")
    age(old, 3)
    assert store.purge_expired(NOW) == []
    assert old.exists()


def test_purge_leaves_the_outbox_alone(tmp_path: Path) -> None:
    """Undelivered outcomes (``.outbox/``) never expire with the checkpoints, however old."""
    store = make_store(tmp_path, max_age_days=2)
    entry = store.root / ".outbox" / "training-a-5003" / "op-1.json"
    entry.parent.mkdir(parents=True)
    entry.write_text("{}")
    lone = store.root / ".outbox" / "stray.json"
    lone.write_text("{}")
    age(entry, 40)
    age(lone, 40)

    assert store.purge_expired(NOW) == []
    assert entry.exists()
    assert lone.exists()


def test_purge_without_directory_does_nothing(tmp_path: Path) -> None:
    """A worker that never saved a checkpoint has nothing to purge."""
    assert make_store(tmp_path).purge_expired(NOW) == []


# --- startup check --------------------------------------------------------------------


def test_ensure_writable_creates_the_directory(tmp_path: Path) -> None:
    """The startup check creates a missing directory and leaves no probe file."""
    store = make_store(tmp_path, dir=tmp_path / "a" / "b")
    store.ensure_writable()
    assert (tmp_path / "a" / "b").is_dir()
    assert list((tmp_path / "a" / "b").iterdir()) == []


def test_ensure_writable_names_the_variable_and_path(tmp_path: Path) -> None:
    """An unusable directory is a ConfigurationError naming KTRDR_CHECKPOINT_DIR and the path."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    store = make_store(tmp_path, dir=blocker / "checkpoints")
    with pytest.raises(ConfigurationError) as caught:
        store.ensure_writable()
    assert caught.value.problems[0].startswith(
        f"KTRDR_CHECKPOINT_DIR={str(blocker / 'checkpoints')!r}: the checkpoint directory"
    )


# --- fencing by attempt ---------------------------------------------------------------


def sample(step: int) -> CheckpointData:
    return CheckpointData(step=step, meta={"parameters": {"seed": 1}}, state=STATE)


def test_an_earlier_attempt_cannot_overwrite_a_later_ones_checkpoint(tmp_path: Path) -> None:
    """Attempt 2 saved step 40: attempt 1 (a paused worker woken up) is refused naming both
    attempts, and attempt 2's checkpoint is the one that loads; the header records it.
    """
    store = make_store(tmp_path)
    store.save("op-1", kind="training", data=sample(20), attempt=1)
    store.save("op-1", kind="training", data=sample(40), attempt=2)

    with pytest.raises(CheckpointFenced, match="attempt 1 of operation op-1 may not touch") as exc:
        store.save("op-1", kind="training", data=sample(60), attempt=1)

    assert "attempt 2 took it over" in str(exc.value)
    assert store.load("op-1", kind="training").step == 40
    with zipfile.ZipFile(store.path_for("op-1")) as archive:
        assert json.loads(archive.read("header.json"))["attempt"] == 2
    assert store.fence("op-1") == 2


def test_a_claim_fences_out_the_earlier_attempt_before_it_saves_anything(
    tmp_path: Path,
) -> None:
    """Attempt 2 claims (resuming) before its first save: attempt 1 can no longer save or
    delete; a fresh claim removes the old checkpoint but keeps the claim.
    """
    store = make_store(tmp_path)
    store.save("op-1", kind="training", data=sample(20), attempt=1)

    store.claim("op-1", attempt=2)
    with pytest.raises(CheckpointFenced):
        store.save("op-1", kind="training", data=sample(30), attempt=1)
    with pytest.raises(CheckpointFenced):
        store.delete("op-1", attempt=1)
    with pytest.raises(CheckpointFenced):
        store.claim("op-1", attempt=1)
    kept = store.load("op-1", kind="training").step
    store.claim("op-1", attempt=3, fresh=True)

    assert kept == 20
    assert not store.exists("op-1")
    assert store.fence("op-1") == 3


def test_deleting_with_an_attempt_keeps_the_claim(tmp_path: Path) -> None:
    """A completed attempt's delete removes the checkpoint, not the claim: a stale attempt
    cannot write one afterwards; purging old files removes the claim in time.
    """
    store = make_store(tmp_path, max_age_days=1)
    store.save("op-1", kind="training", data=sample(20), attempt=2)

    store.delete("op-1", attempt=2)
    with pytest.raises(CheckpointFenced):
        store.save("op-1", kind="training", data=sample(30), attempt=1)
    removed = store.purge_expired(NOW + datetime.timedelta(days=365 * 20))

    assert not store.exists("op-1")
    assert [p.name for p in removed] == ["attempt"]
    assert not (tmp_path / "checkpoints" / "op-1").exists()


def test_saves_of_two_stores_racing_never_let_the_older_attempt_win(tmp_path: Path) -> None:
    """Two stores on one directory (two workers), saving attempts 1 and 2 at once, many
    times over: the last checkpoint standing is always attempt 2's.
    """
    first, second = make_store(tmp_path), make_store(tmp_path)
    errors: list[BaseException] = []

    def save(store: CheckpointStore, attempt: int) -> None:
        for step in range(30):
            try:
                store.save("op-1", kind="training", data=sample(step), attempt=attempt)
            except CheckpointFenced:
                continue
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(exc)

    threads = [
        threading.Thread(target=save, args=(first, 1)),
        threading.Thread(target=save, args=(second, 2)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    with zipfile.ZipFile(first.path_for("op-1")) as archive:
        assert json.loads(archive.read("header.json"))["attempt"] == 2
    assert first.load("op-1", kind="training").step == 29
