"""The ``ktrdr`` command: configuration, backend, workers, fleet.

Subcommands live in modules named for what they do; this module only assembles
them. The CLI and the entrypoints are the only code that reads ``os.environ``.
"""

from __future__ import annotations

import click

from ktrdr.cli import config_cmd, db_cmd, fleet_cmd, health_cmd, run_cmd, up_cmd


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ktrdr")
def cli() -> None:
    """ktrdr: configure and run the research worker fleet."""


for _module in (config_cmd, run_cmd, health_cmd, fleet_cmd, up_cmd, db_cmd):
    _module.register(cli)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="ktrdr")


__all__ = ["cli", "main"]
