"""The ``loom`` command line."""

from __future__ import annotations

import click

from .._version import __version__
from ._completion import completion
from ._get import get
from ._ide import ide
from ._image import delete_image, get_image, image
from ._logs import get_logs
from ._manage import abort, create, delete
from ._run import run
from ._server import server
from ._session import debug, open_, resume, session

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="loom")
def cli() -> None:
    """loom: a workflow runtime for Python with interactive, debuggable tasks."""


get.add_command(get_logs)
get.add_command(get_image)
delete.add_command(delete_image)
for command in (
    run, server, get, create, delete, abort, image, ide, open_, resume, debug, session,
    completion,
):  # fmt: skip
    cli.add_command(command)


def main() -> None:
    """Entry point of the ``loom`` executable."""
    cli(prog_name="loom")
