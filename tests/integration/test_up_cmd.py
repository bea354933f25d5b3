"""``ktrdr up`` as a real process: a fleet comes up, stops cleanly, and fails loudly."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest
from support.processes import ProcessGroup, Spawned, base_env, wait_until

pytestmark = pytest.mark.slow


def _ktrdr_children(marker: str) -> list[int]:
    """Pids of live processes whose environment carries ``marker`` (our data dir)."""
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


def _parent(pid: int) -> int | None:
    """The parent pid of ``pid`` (None once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _up(group: ProcessGroup, tmp_path: Path, *args: str, **env: str) -> tuple[Path, Spawned]:
    data_dir = tmp_path / "fleet-data"
    environment = base_env(UP_TEST_MARKER=str(data_dir), **env)
    child = group.python(
        "ktrdr-up",
        "ktrdr.cli",
        "up",
        "--api-port",
        "0",
        "--data-dir",
        str(data_dir),
        *args,
        env=environment,
        cwd=tmp_path,
    )
    return data_dir, child


def test_up_registers_both_workers_and_sigterm_leaves_no_child(tmp_path: Path) -> None:
    """Both workers register; SIGTERM stops every child and ktrdr up exits 0."""
    with ProcessGroup(tmp_path) as group:
        data_dir, up = _up(group, tmp_path)
        up.wait_for_output("training-1")
        output = up.wait_for_output("fleet is up")
        assert "backtest-1" in output
        assert "registered" in output
        children = set(_ktrdr_children(str(data_dir))) - {up.pid}
        direct = {pid for pid in children if _parent(pid) == up.pid}
        assert len(direct) == 3  # backend, training worker, backtest worker (+ job servers)
        up.signal(signal.SIGTERM)
        assert up.wait_exit() == 0
        assert _ktrdr_children(str(data_dir)) == []
        logs = sorted(p.name for p in (data_dir / "logs").iterdir())
        assert logs == ["backend.log", "backtest-1.log", "training-1.log"]


def test_demo_operations_complete_and_nothing_is_left_running(tmp_path: Path) -> None:
    """``--demo`` runs a training and a backtest operation to completion, then stops cleanly."""
    with ProcessGroup(tmp_path) as group:
        data_dir, up = _up(group, tmp_path, "--demo", "--exit-after-demo")
        assert up.wait_exit(timeout_s=120) == 0, up.output()
        output = up.stdout()
        assert "demo     training  completed" in output
        assert "demo     backtest  completed" in output
        assert "accuracy=" in output
        assert "sharpe=" in output
        assert _ktrdr_children(str(data_dir)) == []


def test_child_with_bad_configuration_stops_the_fleet(tmp_path: Path) -> None:
    """A worker that rejects its configuration: its report is printed, the rest stop, exit 1."""
    with ProcessGroup(tmp_path) as group:
        data_dir, up = _up(group, tmp_path, KTRDR_CHECKPOINT_EPOCH_INTERVAL="zero")
        code = up.wait_exit()
        stderr = up.stderr()
        assert code == 1
        assert "KTRDR_CHECKPOINT_EPOCH_INTERVAL" in stderr
        assert "'zero'" in stderr
        assert "Traceback" not in stderr
        wait_until(lambda: _ktrdr_children(str(data_dir)) == [], message="children left")


def test_api_port_in_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """A configured backend port that is taken: one clear line, exit 1, nothing started."""
    with socket.socket() as busy, ProcessGroup(tmp_path) as group:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        data_dir = tmp_path / "fleet-data"
        up = group.python(
            "ktrdr-up",
            "ktrdr.cli",
            "up",
            "--api-port",
            str(port),
            "--data-dir",
            str(data_dir),
            env=base_env(UP_TEST_MARKER=str(data_dir)),
            cwd=tmp_path,
        )
        assert up.wait_exit() == 1
        lines = up.stderr().strip().splitlines()
        expected = (
            f"ktrdr up: --api-port={port}: cannot listen on 127.0.0.1:{port} (Address already"
            " in use); stop the process using it or choose another port"
        )
        assert lines == [expected]
        assert _ktrdr_children(str(data_dir)) == []
