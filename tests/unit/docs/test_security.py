"""docs/security.md: the threat model, TLS and rotation, in step with the backend's routes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from support.backend import make_backend, open_store

SECURITY = Path(__file__).resolve().parents[3] / "docs" / "security.md"
#: The backend's worker routes, as the document names them ({id} for any path parameter).
WORKER_ROUTES = (
    "POST /api/v1/workers/register",
    "POST /api/v1/workers/{id}/heartbeat",
    "DELETE /api/v1/workers/{id}",
    "POST /api/v1/operations/{id}/report",
)


def test_the_sections_an_operator_looks_for_are_there() -> None:
    """Threat model (tokens, ports), TLS by a reverse proxy, rotation, the read-only choice."""
    text = SECURITY.read_text()
    for heading in ("## Threat model", "## TLS through a reverse proxy", "## Rotating tokens"):
        assert heading in text
    for name in ("KTRDR_AUTH_OPERATOR_TOKEN", "KTRDR_AUTH_WORKER_TOKEN", "KTRDR_API_DOCS"):
        assert f"`{name}" in text
    assert "no read-only variant" in text


def test_every_route_of_the_backend_is_placed_in_the_ports_table(tmp_path: Path) -> None:
    """Each described route is a worker route named in the table, or under an operator prefix."""
    text = SECURITY.read_text()
    store = open_store(tmp_path)
    try:
        schema = make_backend(store).app.openapi()
    finally:
        store.close()
    routes = {
        f"{method.upper()} {re.sub(r'{[^}]+}', '{id}', path)}"
        for path, operations in schema["paths"].items()
        for method in operations
    }
    for route in WORKER_ROUTES:
        assert route in routes
        assert f"`{route}`" in text
    for route in sorted(routes - set(WORKER_ROUTES)):
        path = route.split(" ", 1)[1]
        assert path in ("/health", "/metrics") or path.startswith(
            ("/api/v1/operations", "/api/v1/workers")
        )
    assert "`GET /health`" in text
    assert "`/api/v1/operations...`, `GET /api/v1/workers...`, `GET /metrics`" in text


@pytest.mark.parametrize("command", ["openssl rand -hex 24"])
def test_the_token_recipe_matches_the_readme(command: str) -> None:
    """The document and the README make tokens the same way."""
    readme = (SECURITY.parents[1] / "README.md").read_text()
    assert command in SECURITY.read_text()
    assert command in readme
