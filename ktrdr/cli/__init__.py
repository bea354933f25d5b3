"""The ``ktrdr`` command: configuration, backend, workers, fleet.

Subcommands live in modules named for what they do; this module only assembles
them. The CLI and the entrypoints are the only code that reads ``os.environ``.
"""

from __future__ import annotations

import importlib

import click

#: Modules that each define ``register(group)``; kept in one list so the surface is explicit.
_COMMAND_MODULES = (
    "ktrdr.cli.config_cmd",
    "ktrdr.cli.run_cmd",
    "ktrdr.cli.health_cmd",
    "ktrdr.cli.fleet_cmd",
    "ktrdr.cli.up_cmd",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ktrdr")
def cli() -> None:
    """ktrdr: configure and run the research worker fleet."""


def _register_all() -> None:
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue  # a command module not written yet
        module.register(cli)


def main() -> None:
    """Console-script entry point."""
    _register_all()
    cli(prog_name="ktrdr")


__all__ = ["cli", "main"]
