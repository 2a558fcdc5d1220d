"""The ``loom`` command line."""

from __future__ import annotations

import click

from .._version import __version__
from ._run import run

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="loom")
def cli() -> None:
    """loom: a workflow runtime for Python with interactive, debuggable tasks."""


cli.add_command(run)


def main() -> None:
    """Entry point of the ``loom`` executable."""
    cli(prog_name="loom")
