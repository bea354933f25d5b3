"""The configuration defects of the system this replaces (DESIGN.md, "Failure modes").

- the old and the new worker port defaults disagreed (5002 vs 5004);
- deprecation warnings never appeared because Python hides DeprecationWarning;
- every worker was checked for a backend-only secret and warned about it;
- validation ran at import time, so an auto-reloading server kept running.
Deprecation visibility on stderr is pinned in tests/unit/test_startup.py.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from config_helpers import load

from ktrdr.config import DEFAULT_WORKER_PORT, deprecated_names

REPO = Path(__file__).resolve().parents[3]
PACKAGE = REPO / "ktrdr"


def test_worker_port_default_is_written_once() -> None:
    """The literal 5003 appears once in ktrdr/ (the constant); 5002 and 5004 nowhere."""
    hits = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"\b500[234]\b", line):
                hits.append(f"{path.relative_to(REPO)}:{number}")
    assert hits == [f"ktrdr/config/settings.py:{_constant_line()}"]
    assert DEFAULT_WORKER_PORT == 5003


def _constant_line() -> int:
    source = (PACKAGE / "config" / "settings.py").read_text(encoding="utf-8")
    return next(
        n for n, line in enumerate(source.splitlines(), 1) if "DEFAULT_WORKER_PORT = " in line
    )


def test_worker_and_backend_agree_on_the_port() -> None:
    """The worker's own settings and the backend's view of workers use the same default."""
    assert load("worker", {}).worker.port == load("backend", {}).worker.port == 5003


def test_worker_is_not_warned_about_the_database_password() -> None:
    """A worker's report never mentions the backend-only database password."""
    config = load("worker", {"KTRDR_DB_ENGINE": "postgresql"})
    assert all("KTRDR_DB_PASSWORD" not in warning for warning in config.report.warnings)


def test_config_package_never_reads_os_environ() -> None:
    """No module of ktrdr/config mentions os.environ, os.getenv or os.putenv."""
    offenders = []
    for path in sorted((PACKAGE / "config").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in {"environ", "getenv", "putenv"}:
                offenders.append(f"{path.name}:{node.lineno}")
            if isinstance(node, ast.ImportFrom) and node.module == "os":
                offenders.extend(
                    f"{path.name}:{node.lineno}"
                    for a in node.names
                    if a.name in {"environ", "getenv"}
                )
    assert offenders == []


def test_config_imports_nothing_else_from_ktrdr() -> None:
    """ktrdr.config imports only errors and vocabulary; environs and cattrs one module each."""
    imports: dict[str, set[str]] = {}
    for path in sorted((PACKAGE / "config").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imports[path.name] = names
    ktrdr_imports = {m for names in imports.values() for m in names if m.startswith("ktrdr")}
    assert {m for m in ktrdr_imports if not m.startswith("ktrdr.config")} == {
        "ktrdr.errors",
        "ktrdr.vocabulary",
    }
    assert [f for f, names in imports.items() if "environs" in names] == ["loader.py"]
    assert [f for f, names in imports.items() if "cattrs" in names] == ["converter.py"]


_IMPORT_PROBE = textwrap.dedent(
    """
    import importlib, json, os, pkgutil, sys

    watched = set(json.loads(sys.argv[1]))
    read = []

    class Spy(dict):
        def __getitem__(self, key):
            if key in watched or key.startswith("KTRDR_"):
                read.append(key)
            return super().__getitem__(key)

        def get(self, key, default=None):
            if key in watched or key.startswith("KTRDR_"):
                read.append(key)
            return super().get(key, default)

        def __contains__(self, key):
            if key in watched or key.startswith("KTRDR_"):
                read.append(key)
            return super().__contains__(key)

    os.environ = Spy(os.environ)
    import ktrdr
    failed = []
    for module in pkgutil.walk_packages(ktrdr.__path__, "ktrdr."):
        if module.name.endswith(".__main__"):
            continue  # running the program is what importing __main__ means
        try:
            importlib.import_module(module.name)
        except Exception as exc:  # report, do not hide: the test shows the message
            failed.append(f"{module.name}: {type(exc).__name__}: {exc}")
    print(json.dumps({"read": sorted(set(read)), "failed": failed}))
    """
)


def test_importing_ktrdr_reads_no_configuration_and_validates_nothing() -> None:
    """Every ktrdr module imports cleanly with a broken configuration and reads no KTRDR_* name."""
    broken = {"KTRDR_WORKER_PORT": "abc", "WORKER_PORT": "x", "KTRDR_ENV": "nonsense", "PATH": ""}
    watched = json.dumps(sorted(deprecated_names()))
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE, watched],
        env={**broken, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    outcome = json.loads(result.stdout)
    assert outcome == {"read": [], "failed": []}
