"""The project installs headless Chromium itself: `make test` runs scripts/ensure_chromium.sh."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "ensure_chromium.sh"


def _stub(directory: Path, name: str, output: str = "") -> None:
    path = directory / name
    path.write_text(f"#!/bin/sh\necho {output}\n" if output else "#!/bin/sh\nexit 0\n")
    path.chmod(0o755)


def _run(path_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": str(path_dir), "HOME": os.environ.get("HOME", "/")}
    return subprocess.run(
        ["/bin/bash", str(SCRIPT)], env=env, capture_output=True, text=True, check=False
    )


def test_make_test_and_the_integration_target_ensure_chromium_first() -> None:
    """The README's test command (and test-integration) depend on the chromium target."""
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test: .*\bchromium\b", makefile, re.MULTILINE)
    assert re.search(r"^test-integration: .*\bchromium\b", makefile, re.MULTILINE)
    assert re.search(r"^chromium:\n\t@bash scripts/ensure_chromium.sh$", makefile, re.MULTILINE)


def test_an_installed_chromium_is_left_alone(tmp_path: Path) -> None:
    """chromium and chromedriver on PATH: exit 0 at once, apt-get never called."""
    _stub(tmp_path, "chromium")
    _stub(tmp_path, "chromedriver")
    (tmp_path / "apt-get").write_text("#!/bin/sh\necho apt-get was called >&2\nexit 9\n")
    (tmp_path / "apt-get").chmod(0o755)
    done = _run(tmp_path)
    assert (done.returncode, done.stderr) == (0, "")


def test_without_root_a_missing_chromium_is_one_clear_line(tmp_path: Path) -> None:
    """Missing and not root: exit 1 with the packages and the command to install them."""
    _stub(tmp_path, "id", "1000")
    done = _run(tmp_path)
    assert done.returncode == 1
    assert "apt-get install -y chromium chromium-driver" in done.stderr
    assert done.stderr.count("\n") == 1
