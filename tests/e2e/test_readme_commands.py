"""The README's two commands: CI runs the test command; this runs the run command."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run calls exactly the test command the README names."""
    assert "make test   # lint, type check and the whole test suite" in README
    assert re.search(r"^make test\b", (ROOT / ".ci" / "run").read_text(), re.MULTILINE)


@pytest.mark.slow
@pytest.mark.skipif(
    not (ROOT / ".venv" / ".installed").exists() or shutil.which("make") is None,
    reason="needs the project's .venv (made by `make test`) and make",
)
def test_make_run_brings_up_a_fleet_and_completes_the_demo(tmp_path: Path) -> None:
    """``make run`` starts a fleet whose demo operations complete; then it stops cleanly."""
    assert "make run    # a backend, a training worker and a backtest worker" in README
    up_args = f"--api-port 0 --data-dir {tmp_path / 'data'} --exit-after-demo"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "KTRDR_ACKNOWLEDGE_INSECURE_DEFAULTS": "true",
        "OMP_NUM_THREADS": "1",
    }
    result = subprocess.run(
        ["make", "-C", str(ROOT), "run", f"UP_ARGS={up_args}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo     training  completed" in result.stdout
    assert "demo     backtest  completed" in result.stdout
