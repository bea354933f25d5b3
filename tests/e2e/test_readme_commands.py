"""The README's commands: CI runs the test command; this runs the run command, and the
fleet commands it prints "from another terminal" against ``ktrdr up``, with its token."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
from pathlib import Path

import pytest
from support.processes import ProcessGroup, base_env, run_ktrdr

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
#: Parameters of a training run that takes minutes: the README's cancel and resume target.
LONG_TRAINING = ["--param", "epochs=10000", "--param", "bars=1000000"]
LONG_TRAINING += ["--param", "hidden_units=256"]


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
    assert re.search(r"^dashboard http://127\.0\.0\.1:\d+/ui/$", result.stdout, re.MULTILINE)
    assert "demo     training  completed" in result.stdout
    assert "demo     backtest  completed" in result.stdout


def _fleet_commands() -> list[list[str]]:
    """The commands of the README block to run "from another terminal", comments dropped."""
    found = re.search(
        r"from another terminal in the same directory:\n\n```bash\n(.*?)```", README, re.S
    )
    assert found, "the README's fleet commands block moved"
    lines = [line.split("  #", 1)[0].strip() for line in found[1].splitlines()]
    return [shlex.split(line) for line in lines if line]


def test_the_readme_prints_the_fleet_commands_this_file_runs() -> None:
    """The block holds the workers listing and the six ops commands, as .venv/bin/ktrdr."""
    commands = _fleet_commands()
    assert {c[0] for c in commands} == {".venv/bin/ktrdr"}
    assert [c[1:3] for c in commands] == [
        ["workers"],
        ["ops", "submit"],
        ["ops", "list"],
        ["ops", "show"],
        ["ops", "watch"],
        ["ops", "cancel"],
        ["ops", "resume"],
    ]


@pytest.mark.slow
def test_the_readme_fleet_commands_work_against_ktrdr_up_as_printed(tmp_path: Path) -> None:
    """In ktrdr up's directory each printed command exits 0; it authenticates with up's file."""
    here = tmp_path / "here"
    with ProcessGroup(tmp_path) as group:
        up = group.python(
            "ktrdr-up", "ktrdr.cli", "up", "--api-port", "0", env=base_env(), cwd=here
        )
        output = up.wait_for_output("fleet is up", timeout_s=120)
        backend_url = re.search(r"backend  (http://\S+)", output)
        assert backend_url, output
        assert f"dashboard {backend_url[1]}/ui/" in output
        assert "token    file data/operator_token (created)" in output
        token_file = here / "data" / "operator_token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        env = base_env(COLUMNS="200", KTRDR_WORKER_BACKEND_URL=backend_url[1])

        def ktrdr(argv: list[str], cwd: Path = here) -> subprocess.CompletedProcess[str]:
            return run_ktrdr(*argv, env=env, cwd=cwd, timeout_s=180)

        ids: dict[str, str] = {}
        results = {}
        for command in _fleet_commands():
            argv = command[1:]
            if argv[:2] == ["ops", "cancel"]:
                # The README's <id> for cancel and resume: a run long enough to be cancelled.
                long_run = ktrdr(["ops", "submit", "training", *LONG_TRAINING])
                assert long_run.returncode == 0, long_run.stderr
                ids["cancel"] = ids["resume"] = long_run.stdout.split()[0]
            if "<id>" in argv:
                argv = [ids.get(argv[1], ids["submit"]) if a == "<id>" else a for a in argv]
            result = ktrdr(argv)
            results[" ".join(command[1:3])] = (result.returncode, result.stderr[-500:])
            if argv[:2] == ["ops", "submit"]:
                ids["submit"] = result.stdout.split()[0]
        elsewhere = ktrdr(["workers"], cwd=tmp_path)
        up.signal(signal.SIGTERM)
        assert up.wait_exit(timeout_s=60) == 0, up.output()
    assert {name: code for name, (code, _) in results.items()} == dict.fromkeys(results, 0), results
    assert elsewhere.returncode == 1
    assert "KTRDR_AUTH_OPERATOR_TOKEN" in elsewhere.stderr
