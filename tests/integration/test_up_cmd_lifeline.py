"""``ktrdr up`` never orphans its children: SIGKILLed, or writing into a dead pipe.

Real processes: ``ktrdr up`` with a backend and two workers. Children are found by a
marker in their environment (the fleet's data directory), so the test watches exactly
the processes this run started.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.processes import ProcessGroup, base_env, wait_until

pytestmark = pytest.mark.slow

#: "Within a few seconds": idle children stop on SIGTERM in well under a second.
ORPHAN_DEADLINE_S = 5.0
#: Copies stdin to a file line by line, like ``tee`` (killed by the test).
TEE = """\
import sys
with open(sys.argv[1], "wb") as out:
    for line in sys.stdin.buffer:
        out.write(line)
        out.flush()
"""


def _children(marker: str) -> list[int]:
    """Pids of live processes whose environment carries ``marker``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().split()[2]
        except OSError:
            continue
        if marker.encode() in environ and state != "Z":
            pids.append(int(entry.name))
    return pids


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _up_command(data_dir: Path) -> list[str]:
    return [sys.executable, "-m", "ktrdr.cli", "up", "--api-port", "0",
            "--data-dir", str(data_dir)]  # fmt: skip


def _wait_for_fleet(data_dir: Path, up_pid: int) -> list[int]:
    """Wait until the backend and both workers run and the workers registered; all pids.

    Besides the three children, each worker has its job fork server and resource
    tracker (grandchildren): every one of them must go too.
    """
    logs = data_dir / "logs"

    def ready() -> list[int] | None:
        registered = all(
            "registered with the backend" in _read(logs / f"{name}.log")
            for name in ("training-1", "backtest-1")
        )
        children = [p for p in _children(str(data_dir)) if p != up_pid]
        return children if registered and len(children) >= 3 else None

    return wait_until(ready, timeout_s=60, message=lambda: _all_logs(logs))


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _all_logs(logs: Path) -> str:
    return "\n".join(f"--- {p.name}\n{_read(p)}" for p in sorted(logs.glob("*.log")))


def _backend_port(text: str) -> int:
    found = re.search(r"backend\s+\S*http://127\.0\.0\.1:(\d+)", text)
    assert found is not None, text
    return int(found.group(1))


def _refuses(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_sigkill_of_ktrdr_up_stops_every_child_within_seconds(tmp_path: Path) -> None:
    """kill -9 of ktrdr up: backend and workers stop gracefully within a few seconds."""
    data_dir = tmp_path / "fleet-data"
    with ProcessGroup(tmp_path) as group:
        up = group.spawn(
            "ktrdr-up",
            _up_command(data_dir),
            env=base_env(UP_TEST_MARKER=str(data_dir)),
            cwd=tmp_path,
        )
        children = _wait_for_fleet(data_dir, up.pid)
        port = _backend_port(up.wait_for_output("backend "))

        up.signal(signal.SIGKILL)
        assert up.wait_exit() == -signal.SIGKILL
        killed = time.monotonic()
        wait_until(
            lambda: not any(_alive(pid) for pid in children) and not _children(str(data_dir)),
            timeout_s=ORPHAN_DEADLINE_S,
            interval_s=0.05,
            message=lambda: f"children still running\n{_all_logs(data_dir / 'logs')}",
        )
        elapsed = time.monotonic() - killed

    assert elapsed < ORPHAN_DEADLINE_S
    assert _refuses(port)
    logs = data_dir / "logs"
    for name in ("backend", "training-1", "backtest-1"):
        text = _read(logs / f"{name}.log")
        assert f"(pid {up.pid}) is gone; stopping" in text, text
        assert "Finished server process" in text, text  # a graceful exit, not a kill
    assert "worker training-1 stopped" in _read(logs / "training-1.log")


@pytest.mark.parametrize(
    "sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name
)
def test_a_dead_reader_of_stdout_never_stops_the_clean_shutdown(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """`ktrdr up | tee`, tee dies, then a signal: every child is stopped by ktrdr up, exit 0."""
    data_dir = tmp_path / "fleet-data"
    tee_file = tmp_path / "tee.out"
    up_stderr = tmp_path / "up.stderr"
    read_end, write_end = os.pipe()
    tee = subprocess.Popen(
        [sys.executable, "-c", TEE, str(tee_file)], stdin=read_end, start_new_session=True
    )
    with up_stderr.open("wb") as stderr:
        up = subprocess.Popen(
            _up_command(data_dir),
            env=base_env(UP_TEST_MARKER=str(data_dir)),
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=stderr,
            start_new_session=True,
        )
    os.close(read_end)  # only tee reads the pipe, so its death breaks it
    os.close(write_end)
    try:
        children = _wait_for_fleet(data_dir, up.pid)
        wait_until(lambda: "backend " in _read(tee_file), message=lambda: _read(tee_file))
        tee.kill()
        tee.wait()

        up.send_signal(sig)
        code = up.wait(timeout=60)

        assert code == 0, _read(up_stderr)
        assert not any(_alive(pid) for pid in children)
        wait_until(lambda: not _children(str(data_dir)), message="grandchildren left")
        assert "Traceback" not in _read(up_stderr)
        assert "stopping fleet" not in _read(tee_file)  # it was written into the dead pipe
        logs = data_dir / "logs"
        for name in ("backend", "training-1", "backtest-1"):
            text = _read(logs / f"{name}.log")
            assert "Finished server process" in text, text
            assert "is gone; stopping" not in text, text  # ktrdr up stopped it, not the lifeline
        for worker in ("training-1", "backtest-1"):
            assert f"worker {worker} stopped" in _read(logs / f"{worker}.log")
    finally:
        for process in (tee, up):
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait()
        for pid in _children(str(data_dir)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
