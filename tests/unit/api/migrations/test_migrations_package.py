"""The public surface of ktrdr.api.migrations, and that a wheel ships its revisions."""

from __future__ import annotations

import re
from pathlib import Path

import setuptools

import ktrdr.api.migrations
from ktrdr.api.migrations.runner import SCRIPT_LOCATION

REPO = Path(__file__).resolve().parents[4]


def test_public_names_are_pinned() -> None:
    """ktrdr.api.migrations exports exactly these names, and each one exists."""
    assert sorted(ktrdr.api.migrations.__all__) == [
        "BASELINE_REVISION",
        "SchemaState",
        "SchemaUpgrade",
        "head_revision",
        "schema_state",
        "target_schema",
        "upgrade_schema",
    ]
    assert all(hasattr(ktrdr.api.migrations, name) for name in ktrdr.api.migrations.__all__)


def test_a_non_editable_install_ships_env_and_every_revision() -> None:
    """env.py and versions/ are modules of packages the build finds (no package-data needed).

    Fails when versions/ loses its __init__.py or a non-Python file becomes necessary.
    """
    # tomllib is 3.11+; the one line is enough (the test fails if it moves).
    pyproject = (REPO / "pyproject.toml").read_text()
    found = re.search(r'\[tool\.setuptools\.packages\.find\]\ninclude = \["([^"]+)"\]', pyproject)
    assert found is not None
    include = [found.group(1)]
    packages = set(setuptools.find_packages(str(REPO), include=include))
    shipped = [
        path
        for path in SCRIPT_LOCATION.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    ]

    assert {"ktrdr.api.migrations", "ktrdr.api.migrations.versions"} <= packages
    assert sorted(p.name for p in shipped if p.suffix != ".py") == []
    assert (SCRIPT_LOCATION / "env.py") in shipped
    assert any(p.parent.name == "versions" and p.name[0].isdigit() for p in shipped)
