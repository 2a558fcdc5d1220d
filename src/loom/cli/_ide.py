"""``loom ide install``: provision the IDE servers behind interactive tasks."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from .._settings import Settings
from ..errors import ConfigError, IdeInstallError
from ._output import OutputFormat, emit, output_option

IDES = ("vscode", "jupyter")


@click.group()
def ide() -> None:
    """Install the IDE servers (code-server, JupyterLab) that interactive tasks open."""


@ide.command("install")
@click.argument("names", nargs=-1, type=click.Choice(IDES), metavar="[vscode|jupyter]...")
@click.option("--force", is_flag=True, help="Rebuild even if the pinned version is installed.")
@output_option
def install(names: tuple[str, ...], force: bool, output: OutputFormat) -> None:
    """Install code-server (vscode) and/or JupyterLab (jupyter) into the IDE cache
    ($LOOM_IDE_DIR, default ~/.loom/ide). Without arguments, both. An install that is already
    there is reused; the first code-server build takes about 2 minutes."""
    try:
        ide_dir = Settings.load().ide_dir
    except ConfigError as e:
        raise click.ClickException(str(e)) from e
    console = Console(stderr=True, highlight=False)
    results: list[dict[str, Any]] = []
    for name in dict.fromkeys(names or IDES):  # in the order given, once each
        start = time.monotonic()
        try:
            with _progress(console, name) as progress:
                result = _install_one(name, ide_dir, force, progress)
        except IdeInstallError as e:
            raise click.ClickException(f"installing {name} failed: {e}") from e
        result["seconds"] = round(time.monotonic() - start, 2)
        results.append(result)
        if not output.for_scripts:
            what = "installed" if result["fresh"] else "already installed"
            click.echo(
                f"{result['ide']} {result['version']} {what} at {result['root']} "
                f"in {result['seconds']:.2f} s"
            )
    if output.for_scripts:
        emit(results, output)


@contextlib.contextmanager
def _progress(console: Console, name: str) -> Iterator[Callable[[str], None]]:
    """A callback printing each install step; on a terminal also a spinner with the time."""
    if not console.is_terminal:
        yield lambda message: console.print(f"{name}: {message}", markup=False)
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("{task.description}", markup=False), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(f"{name}: starting", total=None)

        def progress(message: str) -> None:
            bar.update(task, description=f"{name}: {message}")
            bar.console.print(f"{name}: {message}", markup=False)

        yield progress


def _install_one(
    name: str, ide_dir: Path, force: bool, progress: Callable[[str], None]
) -> dict[str, Any]:
    from ..interactive import _install  # only paid for by this command

    if name == "vscode":
        vscode = _install.install_code_server(ide_dir=ide_dir, force=force, progress=progress)
        # loom's own extension (debugger, resume/abort, idle countdown), installed once into
        # the extensions directory sessions share, so a session starts without packaging
        from ..interactive._ide import ensure_extensions

        progress("packaging and installing loom's VS Code extension")
        ensure_extensions(None, ide_dir, progress)
        return {
            "ide": "code-server",
            "version": vscode.version,
            "root": str(vscode.root),
            "command": [str(vscode.code_server)],
            "fresh": vscode.fresh,
        }
    jupyter = _install.install_jupyter(ide_dir=ide_dir, force=force, progress=progress)
    return {
        "ide": "jupyterlab",
        "version": jupyter.version,
        "root": str(jupyter.root),
        "command": list(jupyter.jupyter_lab_argv),
        "fresh": jupyter.fresh,
    }
