"""The outbox on real files: atomic durable entries, a full disk, crashes, corrupt entries."""

from __future__ import annotations

import datetime
import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support.processes import wait_until
from support.tmpfs import fill

from ktrdr.workers.outbox import CORRUPT_FOLDER, REJECTED_FOLDER, Outbox

REPORT = {"worker_id": "training-a-5003", "status": "completed", "result": {"loss": 0.25}}
T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


class Ticks:
    """A clock that moves one second per reading."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime.datetime:
        self.now += datetime.timedelta(seconds=1)
        return self.now


def outbox_in(directory: Path) -> Outbox:
    return Outbox(directory=directory / "outbox", clock=Ticks())


def test_an_entry_keeps_the_report_body_exactly_and_reads_back(tmp_path: Path) -> None:
    """put() stores the whole body, fields it does not know included; scan() returns it."""
    outbox = outbox_in(tmp_path)
    body = {**REPORT, "attempt": 3, "future_field": [1, {"x": None}]}

    written = outbox.put("op-1", body)
    scan = outbox.scan()

    assert scan.set_aside == ()
    assert [(e.operation_id, dict(e.report), e.status) for e in scan.entries] == [
        ("op-1", body, "completed")
    ]
    assert scan.entries[0].written_at == written.written_at
    assert written.path == outbox.directory / "op-1.json"
    assert json.loads(written.path.read_text())["report"] == body


def test_entries_are_listed_oldest_first(tmp_path: Path) -> None:
    """scan() orders entries by the time they were written, not by name."""
    outbox = outbox_in(tmp_path)
    for operation_id in ("op-c", "op-a", "op-b"):
        outbox.put(operation_id, REPORT)

    assert [e.operation_id for e in outbox.scan().entries] == ["op-c", "op-a", "op-b"]


def test_a_newer_outcome_replaces_the_entry_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    """A second put() of one operation replaces the entry; the directory holds only it."""
    outbox = outbox_in(tmp_path)
    outbox.put("op-1", REPORT)

    outbox.put("op-1", {**REPORT, "status": "failed"})

    assert [e.status for e in outbox.scan().entries] == ["failed"]
    assert sorted(p.name for p in outbox.directory.iterdir()) == ["op-1.json"]


def test_remove_forgets_an_entry_and_tolerates_a_missing_one(tmp_path: Path) -> None:
    """remove() deletes the entry; removing again is not an error."""
    outbox = outbox_in(tmp_path)
    entry = outbox.put("op-1", REPORT)

    outbox.remove(entry)
    outbox.remove(entry)

    assert outbox.scan().entries == ()


def test_removing_an_entry_leaves_a_newer_one_of_its_operation(tmp_path: Path) -> None:
    """An outcome replaced while the older one was on its way: delivering the older
    removes nothing (the file is the newer one's), setting it aside neither.
    """
    outbox = outbox_in(tmp_path)
    older = outbox.put("op-1", REPORT)
    newer = outbox.put("op-1", {**REPORT, "status": "failed"})

    outbox.remove(older)
    moved = outbox.set_aside(older, "HTTP 422")

    assert moved is None
    assert [e.status for e in outbox.scan().entries] == ["failed"]
    outbox.remove(newer)
    assert outbox.scan().entries == ()


def test_entries_found_by_a_scan_can_be_removed(tmp_path: Path) -> None:
    """What an earlier process left (read back by scan) is removed like a new entry."""
    Outbox(directory=tmp_path / "outbox").put("op-1", REPORT)
    outbox = outbox_in(tmp_path)

    [entry] = outbox.scan().entries
    outbox.remove(entry)

    assert outbox.scan().entries == ()


def test_a_missing_directory_is_an_empty_outbox(tmp_path: Path) -> None:
    """A worker's first start: no directory yet, nothing pending, nothing created."""
    outbox = outbox_in(tmp_path)

    assert outbox.scan().entries == ()
    assert not outbox.directory.exists()


def test_the_outbox_lives_under_the_checkpoint_dir_per_worker_id(tmp_path: Path) -> None:
    """<KTRDR_CHECKPOINT_DIR>/.outbox/<worker id>; an id that cannot name a directory is refused."""
    outbox = Outbox.in_checkpoint_dir(tmp_path, "training-a-5003")

    assert outbox.directory == tmp_path / ".outbox" / "training-a-5003"
    with pytest.raises(ValueError, match="cannot name an outbox directory"):
        Outbox.in_checkpoint_dir(tmp_path, "../escape")
    with pytest.raises(ValueError, match="cannot name an outbox entry"):
        outbox.put("../op", REPORT)


def test_a_report_that_is_not_plain_json_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    """NaN cannot travel as JSON: ValueError, and no file (not even a temporary one)."""
    outbox = outbox_in(tmp_path)

    with pytest.raises(ValueError, match="JSON"):
        outbox.put("op-1", {**REPORT, "result": {"loss": float("nan")}})

    assert not outbox.directory.exists()


def test_a_full_disk_leaves_the_earlier_entry_whole_and_no_partial_file(small_fs: Path) -> None:
    """ENOSPC while writing: OSError, the operation's earlier entry and the others intact,
    no temporary file left behind, and the next scan finds nothing corrupt.
    """
    outbox = Outbox(directory=small_fs / "outbox", clock=Ticks())
    outbox.put("op-1", REPORT)
    outbox.put("op-2", {**REPORT, "status": "failed"})
    fill(small_fs, "filler")
    big = {**REPORT, "result": {"weights": "w" * 32 * 1024}}

    with pytest.raises(OSError, match="No space left on device") as raised:
        outbox.put("op-1", big)

    scan = outbox.scan()
    assert raised.value.errno == errno.ENOSPC
    assert {e.operation_id: dict(e.report) for e in scan.entries} == {
        "op-1": REPORT,
        "op-2": {**REPORT, "status": "failed"},
    }
    assert scan.set_aside == ()
    assert sorted(p.name for p in outbox.directory.iterdir()) == ["op-1.json", "op-2.json"]


def _written(directory: Path) -> int:
    """How many times the writer process has replaced the entry so far."""
    document = json.loads((directory / "op-1.json").read_text())
    return int(document["report"]["n"])


_WRITER = """
import sys, pathlib
from ktrdr.workers.outbox import Outbox
outbox = Outbox(directory=pathlib.Path(sys.argv[1]))
n = 0
while True:
    n += 1
    outbox.put("op-1", {"status": "completed", "n": n, "blob": "x" * 400_000})
    if n == 1:
        print("written", flush=True)
"""


def test_a_process_killed_mid_write_leaves_a_whole_entry(tmp_path: Path) -> None:
    """SIGKILL of a process rewriting an entry in a loop: the entry reads back whole,
    nothing is corrupt, and the crash's temporary file is cleaned up by the next scan.
    """
    directory = tmp_path / "outbox"
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(directory)],
        stdout=subprocess.PIPE,
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline() == b"written\n"
        wait_until(lambda: _written(directory) >= 5, timeout_s=30)  # a kill mid-rewrite
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        if writer.stdout is not None:
            writer.stdout.close()

    scan = Outbox(directory=directory).scan()

    assert scan.set_aside == ()
    assert len(scan.entries) == 1
    assert scan.entries[0].report["n"] >= 1
    assert len(str(scan.entries[0].report["blob"])) == 400_000
    assert sorted(p.name for p in directory.iterdir()) == ["op-1.json"]


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("op-1.json", b'{"format": "ktrdr-outcome", "vers', "it is not JSON (line 1, column"),
        ("op-2.json", b"\xff\xfe secret-token-value", "it is not UTF-8 text"),
        ("op-3.json", b'["secret-token-value"]', "it is not a ktrdr outcome"),
        (
            "op-4.json",
            b'{"format": "ktrdr-outcome", "version": 99, "operation_id": "op-4"}',
            "format version 99 is not 1",
        ),
        (
            "op-5.json",
            b'{"format": "ktrdr-outcome", "version": 1, "operation_id": "op-9", "report": {}}',
            "the operation it names is not the one in its file name",
        ),
        (
            "op-6.json",
            b'{"format": "ktrdr-outcome", "version": 1, "operation_id": "op-6", "report": 7}',
            "it holds no report",
        ),
        (
            "op-7.json",
            b'{"format": "ktrdr-outcome", "version": 1, "operation_id": "op-7", "report": {},'
            b' "written_at": "yesterday"}',
            "its written_at is not a time",
        ),
        ("notes.txt", b"secret-token-value", "its name is not <operation id>.json"),
    ],
)
def test_a_corrupt_entry_is_set_aside_with_a_reason_and_the_others_survive(
    tmp_path: Path, name: str, content: bytes, problem: str
) -> None:
    """An unreadable entry is moved to corrupt/ with a reason naming what is wrong (never
    its content); the valid entries are still returned and nothing raises.
    """
    outbox = outbox_in(tmp_path)
    outbox.put("op-ok", REPORT)
    (outbox.directory / name).write_bytes(content)

    scan = outbox.scan()

    assert [e.operation_id for e in scan.entries] == ["op-ok"]
    [aside] = scan.set_aside
    assert aside.problem.startswith(problem), aside.problem
    assert "secret-token-value" not in aside.problem
    assert aside.path == outbox.directory / CORRUPT_FOLDER / name
    assert aside.path.read_bytes() == content
    assert outbox.scan().set_aside == ()  # moved: reported once, not at every start


def test_an_entry_larger_than_any_report_is_set_aside_unread(tmp_path: Path) -> None:
    """A huge file (not a report) is set aside by its size, without reading it."""
    outbox = outbox_in(tmp_path)
    outbox.directory.mkdir(parents=True)
    (outbox.directory / "op-1.json").write_bytes(b"{" + b" " * (3 * 1024 * 1024))

    [aside] = outbox.scan().set_aside

    assert aside.problem.startswith("it is 3145729 bytes, larger than any report")


def test_setting_aside_twice_keeps_both_files(tmp_path: Path) -> None:
    """A refused entry goes to rejected/; a later one of the same operation does not
    overwrite it.
    """
    outbox = outbox_in(tmp_path)
    first = outbox.set_aside(outbox.put("op-1", REPORT), "HTTP 422")
    second = outbox.set_aside(outbox.put("op-1", {**REPORT, "status": "failed"}), "HTTP 422")

    assert first is not None
    assert second is not None
    assert first.path == outbox.directory / REJECTED_FOLDER / "op-1.json"
    assert second.path != first.path
    assert second.path.parent == first.path.parent
    assert json.loads(first.path.read_text())["report"]["status"] == "completed"
    assert json.loads(second.path.read_text())["report"]["status"] == "failed"
    assert outbox.scan().entries == ()


def test_a_leftover_temporary_file_is_removed_by_the_scan(tmp_path: Path) -> None:
    """A write a crash interrupted before its rename is not an entry: it is deleted."""
    outbox = outbox_in(tmp_path)
    outbox.put("op-1", REPORT)
    leftover = outbox.directory / ".outcome-abc123.tmp"
    leftover.write_bytes(b'{"format": "ktrdr-out')

    scan = outbox.scan()

    assert [e.operation_id for e in scan.entries] == ["op-1"]
    assert scan.set_aside == ()
    assert not leftover.exists()
