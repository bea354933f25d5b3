"""Checkpoints: when they are due, atomic writes, safe loading, expiry, the startup check."""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ktrdr.config import CheckpointSettings, ConfigurationError
from ktrdr.workers.checkpoints import (
    CHECKPOINT_FILE,
    CheckpointCorrupt,
    CheckpointMissing,
    CheckpointPolicy,
    CheckpointStore,
)

NOW = datetime.datetime(2026, 3, 1, 12, 0, tzinfo=datetime.timezone.utc)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_store(tmp_path: Path, **overrides: Any) -> CheckpointStore:
    values: dict[str, Any] = {"dir": tmp_path / "checkpoints"}
    values.update(overrides)
    return CheckpointStore(settings=CheckpointSettings(**values))


def save_sample(store: CheckpointStore, operation_id: str = "op-1", step: int = 4) -> Path:
    return store.save(
        operation_id,
        kind="training",
        step=step,
        meta={"parameters": {"seed": 1}, "note": "x"},
        arrays={"w": np.arange(6, dtype=np.float64).reshape(2, 3), "n": np.array([1, 2])},
    )


# --- policy ---------------------------------------------------------------------------


def test_policy_is_due_every_n_steps() -> None:
    """With a long time interval, a checkpoint is due exactly every ``every`` steps."""
    clock = FakeClock()
    policy = CheckpointPolicy(every=3, interval=datetime.timedelta(hours=1), clock=clock)
    assert [policy.due(step) for step in (1, 2, 3)] == [False, False, True]
    policy.saved(3)
    assert [policy.due(step) for step in (4, 5, 6)] == [False, False, True]


def test_policy_is_due_when_the_time_interval_passed_first() -> None:
    """With many steps to go, a checkpoint is due once the time interval has passed."""
    clock = FakeClock()
    policy = CheckpointPolicy(every=1000, interval=datetime.timedelta(seconds=60), clock=clock)
    clock.now += 59.9
    assert not policy.due(1)
    clock.now += 0.1
    assert policy.due(2)
    policy.saved(2)
    clock.now += 30
    assert not policy.due(3)


def test_policy_counts_from_the_start_step() -> None:
    """A resumed run counts steps from where it resumed, not from zero."""
    policy = CheckpointPolicy(
        every=5, interval=datetime.timedelta(hours=1), clock=FakeClock(), start_step=20
    )
    assert not policy.due(24)
    assert policy.due(25)


def test_epoch_policy_reads_epoch_interval_and_time_interval(tmp_path: Path) -> None:
    """``epoch_interval`` and ``time_interval`` from the settings drive the training policy."""
    clock = FakeClock()
    store = make_store(
        tmp_path, epoch_interval=4, bar_interval=2, time_interval=datetime.timedelta(seconds=30)
    )
    policy = store.epoch_policy(clock=clock)
    assert not policy.due(3)
    assert policy.due(4)
    clock.now += 30
    assert policy.due(1)


def test_bar_policy_reads_bar_interval(tmp_path: Path) -> None:
    """``bar_interval`` (not ``epoch_interval``) drives the backtest policy."""
    store = make_store(tmp_path, epoch_interval=4, bar_interval=7)
    policy = store.bar_policy(clock=FakeClock())
    assert not policy.due(6)
    assert policy.due(7)


# --- save and load --------------------------------------------------------------------


def test_save_writes_under_dir_and_operation_id(tmp_path: Path) -> None:
    """The checkpoint lives at ``<dir>/<operation id>/checkpoint.npz`` with no temp files."""
    store = make_store(tmp_path)
    path = save_sample(store)
    assert path == tmp_path / "checkpoints" / "op-1" / CHECKPOINT_FILE
    assert sorted(p.name for p in path.parent.iterdir()) == [CHECKPOINT_FILE]
    assert store.exists("op-1")


def test_load_returns_what_was_saved(tmp_path: Path) -> None:
    """Arrays, metadata and step come back exactly."""
    store = make_store(tmp_path)
    save_sample(store, step=7)
    checkpoint = store.load("op-1", kind="training")
    assert checkpoint.step == 7
    assert checkpoint.meta == {"parameters": {"seed": 1}, "note": "x"}
    assert checkpoint.arrays["w"].tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    assert checkpoint.arrays["n"].tolist() == [1, 2]


def test_save_replaces_the_previous_checkpoint(tmp_path: Path) -> None:
    """A second save replaces the first."""
    store = make_store(tmp_path)
    save_sample(store, step=1)
    save_sample(store, step=2)
    assert store.load("op-1", kind="training").step == 2


def test_failed_save_keeps_the_old_checkpoint_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails midway leaves the previous checkpoint intact and no temp file."""
    store = make_store(tmp_path)
    path = save_sample(store, step=1)

    def broken_savez(file: Any, **arrays: Any) -> None:
        file.write(b"PK\x03\x04half a zip")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="No space left"):
        save_sample(store, step=2)
    assert sorted(p.name for p in path.parent.iterdir()) == [CHECKPOINT_FILE]
    assert store.load("op-1", kind="training").step == 1


def test_object_arrays_are_refused(tmp_path: Path) -> None:
    """Arrays of Python objects would need pickle, so saving them is refused."""
    store = make_store(tmp_path)
    with pytest.raises(ValueError, match="'bad' holds Python objects"):
        store.save("op-1", kind="t", step=0, meta={}, arrays={"bad": np.array([{}], dtype=object)})
    assert not store.exists("op-1")


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
    with pytest.raises(CheckpointCorrupt, match=r"checkpoint .*checkpoint\.npz"):
        store.load("op-1", kind="training")


def test_pickled_content_is_never_loaded(tmp_path: Path) -> None:
    """A file holding a pickled object array is refused as corrupt, never unpickled."""
    store = make_store(tmp_path)
    path = store.path_for("op-1")
    path.parent.mkdir(parents=True)
    with path.open("wb") as handle:
        np.savez(handle, payload=np.array([{"a": 1}], dtype=object))
    with pytest.raises(CheckpointCorrupt, match="corrupt"):
        store.load("op-1", kind="training")


def test_checkpoint_of_another_kind_is_refused(tmp_path: Path) -> None:
    """A training checkpoint cannot resume a backtest."""
    store = make_store(tmp_path)
    save_sample(store)
    with pytest.raises(CheckpointCorrupt, match="written by a 'training' runner, not 'backtest'"):
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


def test_npz_without_ktrdr_metadata_is_refused(tmp_path: Path) -> None:
    """A valid npz file that ktrdr did not write is refused."""
    store = make_store(tmp_path)
    path = store.path_for("op-1")
    path.parent.mkdir(parents=True)
    with path.open("wb") as handle:
        np.savez(handle, w=np.zeros(3))
    with pytest.raises(CheckpointCorrupt, match="corrupt or not a ktrdr checkpoint"):
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
