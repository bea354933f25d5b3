"""``ktrdr health``: probe the local server on the port its own settings name.

Used as the container HEALTHCHECK: it reads the same settings the server reads, so
the probed port and the listening port cannot drift apart.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import attrs
import click
import httpx

from ktrdr.config import ConfigurationError, WorkerSettings, env_name, validate_all
from ktrdr.web.http_client import describe_error

EXIT_UNHEALTHY = 1


def _probe_port(component: str, environ: Mapping[str, str]) -> int:
    """The port the local server listens on, from the same settings the server reads.

    ``auto``: a process whose worker type is set (``KTRDR_WORKER_TYPE`` or its old
    name, through the loader like every setting) is a worker; anything else is the
    backend.
    """
    if component in ("auto", "worker"):
        worker = validate_all("worker", environ).worker
        if component == "worker" or worker.type is not None:
            return worker.port
    return validate_all("backend", environ).api.port


@click.command("health")
@click.option(
    "--component",
    type=click.Choice(["auto", "worker", "backend"]),
    default="auto",
    show_default=True,
    help="which server to probe; auto: worker when "
    f"{env_name(attrs.fields(WorkerSettings).type)} is set",
)
@click.option("--timeout", type=click.FloatRange(min=0.1, max=60), default=3.0, show_default=True)
def health(component: str, timeout: float) -> None:
    """Exit 0 when the local backend or worker answers GET /health, 1 otherwise."""
    try:
        port = _probe_port(component, os.environ)
    except ConfigurationError as exc:
        click.echo(f"ktrdr health: {exc}", err=True)
        raise SystemExit(EXIT_UNHEALTHY) from None
    url = f"http://127.0.0.1:{port}/health"
    try:
        response = httpx.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        click.echo(f"ktrdr health: {url} did not answer ({type(exc).__name__})", err=True)
        raise SystemExit(EXIT_UNHEALTHY) from None
    if response.status_code != httpx.codes.OK:
        # e.g. "HTTP 503 store_unavailable: ..." while the backend's database is down
        click.echo(f"ktrdr health: {url} answered {describe_error(response)}", err=True)
        raise SystemExit(EXIT_UNHEALTHY)
    click.echo(f"healthy: {url}")


def register(group: click.Group) -> None:
    """Add ``health`` to the ``ktrdr`` command."""
    group.add_command(health)
