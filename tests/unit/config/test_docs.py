"""docs/configuration.md: generated from the declarations and committed up to date."""

from __future__ import annotations

import socket
from pathlib import Path

from ktrdr.config import ALL_SETTINGS, deprecated_names
from ktrdr.config.docs import DOCS_PATH, render_markdown
from ktrdr.config.fields import declared

REPO = Path(__file__).resolve().parents[3]


def test_committed_docs_match_a_fresh_render() -> None:
    """The committed page is exactly what `ktrdr config docs` writes (stale docs fail)."""
    committed = (REPO / DOCS_PATH).read_text(encoding="utf-8")
    assert committed == render_markdown(), "docs are stale: run `ktrdr config docs`"


def test_docs_list_every_variable_and_deprecated_name() -> None:
    """Every variable has a row and every old name appears with its replacement."""
    page = render_markdown()
    for cls in ALL_SETTINGS:
        for item in declared(cls):
            assert f"| `{item.env}` |" in page
    for old, new in deprecated_names().items():
        assert f"| `{old}` | `{new}` |" in page


def test_docs_do_not_depend_on_this_machine() -> None:
    """The page shows <hostname>, never this host's name, and no secret value."""
    page = render_markdown()
    assert "<type>-<hostname>-<port>" in page
    host = socket.gethostname()
    assert f"-{host}-" not in page
    assert f"//{host}:" not in page
    assert "local-dev-worker-token" not in page
    assert "localdev" not in page


def test_single_port_default_in_docs() -> None:
    """The docs give 5003 as the worker port default, and no other worker port."""
    page = render_markdown()
    assert "| `KTRDR_WORKER_PORT` | `5003` |" in page
    assert "5002" not in page
    assert "5004" not in page
