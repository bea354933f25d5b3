"""``ktrdr backend`` and ``ktrdr worker``: registered commands without port options."""

from __future__ import annotations

import click
from click.testing import CliRunner

from ktrdr.cli import run_cmd


def _group() -> click.Group:
    @click.group()
    def root() -> None:
        """Test root."""

    run_cmd.register(root)
    return root


def test_register_adds_backend_and_worker() -> None:
    """register() adds exactly the backend and worker commands."""
    assert sorted(_group().commands) == ["backend", "worker"]


def test_commands_take_no_host_or_port_options() -> None:
    """Ports come from the settings only, so the commands have no --host/--port."""
    for command in (run_cmd.backend, run_cmd.worker):
        names = {opt for param in command.params for opt in getattr(param, "opts", [])}
        assert not names & {"--port", "--host", "-p"}


def test_worker_rejects_an_unknown_type() -> None:
    """``ktrdr worker gpu`` is a usage error naming the accepted types."""
    result = CliRunner().invoke(_group(), ["worker", "gpu"])

    assert result.exit_code == 2
    assert "'training'" in result.output
    assert "'backtest'" in result.output
