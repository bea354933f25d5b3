"""The dashboard package: its public names, and every file it serves ships in the wheel."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import ktrdr.api.dashboard

REPO = Path(__file__).resolve().parents[4]
PACKAGE = Path(ktrdr.api.dashboard.__file__).parent


def test_public_names_are_pinned() -> None:
    """ktrdr.api.dashboard exports exactly these names, and each one exists."""
    assert ktrdr.api.dashboard.__all__ == [
        "CSRF_HEADER",
        "FLEET_PATH",
        "LOGIN_PATH",
        "PAGES_PREFIX",
        "SESSION_COOKIE",
        "SESSION_MAX_AGE",
        "STATIC_PATH",
        "DashboardSessions",
        "OperatorGate",
        "dashboard_open",
        "dashboard_router",
        "mount_static",
    ]
    assert all(hasattr(ktrdr.api.dashboard, name) for name in ktrdr.api.dashboard.__all__)


def test_every_static_file_and_template_is_package_data() -> None:
    """A non-editable install carries the pages, scripts and styles (no CDN, no Node build)."""
    pyproject = (REPO / "pyproject.toml").read_text()
    found = re.search(r'^"ktrdr\.api\.dashboard" = \[(.*)\]$', pyproject, re.MULTILINE)
    assert found is not None
    patterns = re.findall(r'"([^"]+)"', found[1])
    served = [
        path.relative_to(PACKAGE).as_posix()
        for folder in ("static", "templates")
        for path in (PACKAGE / folder).rglob("*")
        if path.is_file()
    ]
    assert {"static/dashboard.js", "static/chart.js", "templates/login.html"} <= set(served)
    assert [f for f in served if not any(fnmatch.fnmatch(f, p) for p in patterns)] == []
