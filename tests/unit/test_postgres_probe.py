"""`make test` runs the PostgreSQL tests when a server answers (scripts/find_test_postgres.py)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "find_test_postgres.py"


def _probe() -> ModuleType:
    spec = importlib.util.spec_from_file_location("find_test_postgres", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_test_passes_the_probed_url_unless_the_variable_is_set() -> None:
    """An operator's KTRDR_TEST_POSTGRES_URL (even empty) wins over the probe."""
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^test: .*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert recipe is not None
    assert (
        'KTRDR_TEST_POSTGRES_URL="$${KTRDR_TEST_POSTGRES_URL-$$($(BIN)/python '
        'scripts/find_test_postgres.py)}"' in recipe.group(1)
    )


def test_a_closed_port_is_not_reachable() -> None:
    assert _probe().reachable("postgresql+psycopg://postgres@127.0.0.1:9/test") is False


def test_the_script_prints_only_a_url_or_nothing() -> None:
    """Its stdout becomes the variable: the default URL, or empty with a note on stderr."""
    done = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, check=True, timeout=30
    )
    if done.stdout:
        assert done.stdout.strip() == _probe().DEFAULT_URL
    else:
        assert "no PostgreSQL" in done.stderr
