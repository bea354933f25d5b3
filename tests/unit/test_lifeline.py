"""ktrdr.lifeline with real processes: a child stops when the process holding its pipe dies."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.processes import wait_until

from ktrdr.lifeline import main

#: A child module: says it is ready, exits 0 on SIGTERM (or ignores it when told to).
CHILD = """\
import os, signal, sys, time
if os.environ.get("IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print("ready", __name__, sys.argv[1:], flush=True)
while True:
    time.sleep(0.05)
"""

#: A go-between: starts the child under the lifeline with --pdeathsig, then waits.
#: Its pipe's write end is inherited from the test, so only PDEATHSIG can stop the child.
PARENT = """\
import os, subprocess, sys, time
read_end = int(sys.argv[1])
child = subprocess.Popen(
    [sys.executable, "-m", "ktrdr.lifeline", f"--fd={read_end}", f"--parent={os.getpid()}",
     "--grace=30", "--pdeathsig", "--", "lifeline_child"],
    pass_fds=(read_end,), stdout=open(sys.argv[2], "wb"), stderr=subprocess.STDOUT,
)
print(child.pid, flush=True)
while True:
    time.sleep(0.05)
"""


@pytest.fixture
def child_env(tmp_path: Path) -> dict[str, str]:
    """An environment in which ``lifeline_child`` is the CHILD module."""
    (tmp_path / "lifeline_child.py").write_text(CHILD)
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(tmp_path)}


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    """A lifeline pipe; whatever the test did not close is closed afterwards."""
    read_end, write_end = os.pipe()
    yield read_end, write_end
    for fd in (read_end, write_end):
        with contextlib.suppress(OSError):
            os.close(fd)


def _start(
    env: dict[str, str], read_end: int, log: Path, *, grace_s: float = 30
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ktrdr.lifeline",
                f"--fd={read_end}",
                f"--parent={os.getpid()}",
                f"--grace={grace_s:g}",
                "--",
                "lifeline_child",
                "--flag",
                "value",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            pass_fds=(read_end,),
        )


def _wait_ready(log: Path) -> str:
    return wait_until(
        lambda: log.read_text() if "ready" in log.read_text() else None,
        message=lambda: f"child never ready: {log.read_text()!r}",
    )


def _exit_code(process: subprocess.Popen[bytes], timeout_s: float = 10) -> int | None:
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return None


def test_the_module_runs_as_main_with_its_arguments(
    child_env: dict[str, str], pipe: tuple[int, int], tmp_path: Path
) -> None:
    """MODULE runs in the same process as __main__ and sees only its own arguments."""
    log = tmp_path / "child.log"
    process = _start(child_env, pipe[0], log)
    try:
        assert "ready __main__ ['--flag', 'value']" in _wait_ready(log)
    finally:
        process.kill()
        process.wait()


def test_a_closed_lifeline_stops_the_child_with_sigterm(
    child_env: dict[str, str], pipe: tuple[int, int], tmp_path: Path
) -> None:
    """When the last write end closes (its holder died), the child gets SIGTERM and exits 0."""
    log = tmp_path / "child.log"
    process = _start(child_env, pipe[0], log)
    _wait_ready(log)

    os.close(pipe[1])

    assert _exit_code(process) == 0
    assert f"(pid {os.getpid()}) is gone; stopping" in log.read_text()


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace(
    child_env: dict[str, str], pipe: tuple[int, int], tmp_path: Path
) -> None:
    """A child that does not stop on SIGTERM is SIGKILLed once the grace period passed."""
    log = tmp_path / "child.log"
    process = _start({**child_env, "IGNORE_TERM": "1"}, pipe[0], log, grace_s=0.3)
    _wait_ready(log)

    os.close(pipe[1])

    assert _exit_code(process) == -signal.SIGKILL


def test_a_lifeline_already_closed_at_start_stops_the_child(
    child_env: dict[str, str], pipe: tuple[int, int], tmp_path: Path
) -> None:
    """A parent that died before the child armed its lifeline still stops it."""
    log = tmp_path / "child.log"
    os.close(pipe[1])

    process = _start(child_env, pipe[0], log)

    assert _exit_code(process) in (0, -signal.SIGTERM)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_pdeathsig_stops_the_child_when_its_parent_is_killed(
    child_env: dict[str, str], pipe: tuple[int, int], tmp_path: Path
) -> None:
    """With --pdeathsig, SIGKILL of the parent makes the kernel SIGTERM the child.

    The pipe's write end stays open here (the test holds it), so only the parent-death
    signal can have stopped the child.
    """
    log = tmp_path / "child.log"
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(pipe[0]), str(log)],
        env=child_env,
        stdout=subprocess.PIPE,
        pass_fds=(pipe[0],),
    )
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        _wait_ready(log)

        parent.kill()
        parent.wait()

        wait_until(lambda: not _alive(child_pid), timeout_s=10, message="child still alive")
        assert "is gone" not in log.read_text()  # the pipe never closed: PDEATHSIG did it
    finally:
        parent.kill()
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (an exited child of init is reaped at once)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_set_parent_death_signal_sets_it() -> None:
    """prctl through ctypes: PR_GET_PDEATHSIG then reads SIGTERM (in a throwaway process)."""
    code = (
        "import ctypes, signal\n"
        "from ktrdr.lifeline import set_parent_death_signal\n"
        "assert set_parent_death_signal(signal.SIGTERM)\n"
        "value = ctypes.c_int()\n"
        "ctypes.CDLL(None).prctl(2, ctypes.byref(value), 0, 0, 0)  # PR_GET_PDEATHSIG\n"
        "print(value.value)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert int(done.stdout) == signal.SIGTERM


def test_a_command_without_a_module_is_a_usage_error() -> None:
    """No ``-- MODULE``: exit with the usage line, nothing armed."""
    with pytest.raises(SystemExit, match=re.escape("usage: python -m ktrdr.lifeline --fd N")):
        main(["--fd=3", "--parent=1"])
