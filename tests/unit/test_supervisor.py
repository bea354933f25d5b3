"""Supervisor: children start with their environment and are always gone after stop()."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from support.processes import wait_until

from ktrdr.supervisor import ChildSpec, Supervisor


def _spec(tmp_path: Path, name: str, code: str) -> ChildSpec:
    return ChildSpec(
        name=name,
        module="ktrdr_test_child",
        env={"PYTHONPATH": str(tmp_path), "CHILD_CODE": code},
        log_path=tmp_path / "logs" / f"{name}.log",
    )


def _write_child_module(tmp_path: Path) -> None:
    (tmp_path / "ktrdr_test_child.py").write_text("import os\nexec(os.environ['CHILD_CODE'])\n")


def test_stop_terminates_children_that_honour_sigterm(tmp_path: Path) -> None:
    """A child that exits on SIGTERM reports its own exit code."""
    _write_child_module(tmp_path)
    code = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
        "print('ready', flush=True)\n"
        "while True: time.sleep(1)\n"
    )
    supervisor = Supervisor(python=sys.executable, grace_s=10)
    child = supervisor.start(_spec(tmp_path, "polite", code))
    wait_until(lambda: "ready" in child.log_text(), message=child.log_text)
    assert supervisor.stop() == {"polite": 0}


def test_stop_kills_children_that_ignore_sigterm(tmp_path: Path) -> None:
    """A child that ignores SIGTERM is killed once the grace period has passed."""
    _write_child_module(tmp_path)
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "while True: time.sleep(1)\n"
    )
    supervisor = Supervisor(python=sys.executable, grace_s=0.2)
    child = supervisor.start(_spec(tmp_path, "stubborn", code))
    wait_until(lambda: "ready" in child.log_text(), message=child.log_text)
    assert supervisor.stop() == {"stubborn": -signal.SIGKILL}


def test_exited_lists_children_that_stopped_on_their_own(tmp_path: Path) -> None:
    """A child that fails at start is reported with its output."""
    _write_child_module(tmp_path)
    supervisor = Supervisor(python=sys.executable)
    child = supervisor.start(_spec(tmp_path, "broken", "raise SystemExit('bad config')"))
    assert child.process.wait(timeout=30) == 1
    assert supervisor.exited() == [child]
    assert "bad config" in child.log_text()
