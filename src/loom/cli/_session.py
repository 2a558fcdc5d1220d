"""Interactive sessions from the command line: open, resume, debug (an interactive re-run),
diff."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .. import wire
from .._controller import ROOT_ACTION
from ..interactive._commands import ResumeError, check_outcome
from ..interactive._workspace import diff_workspace
from ._common import call_server, settings_for
from ._completion import complete_action, complete_run
from ._output import OutputFormat, emit, output_option


@click.command()
@click.argument("run", shell_complete=complete_run)
@click.argument("action", default=ROOT_ACTION, shell_complete=complete_action)
@click.option("--fail", is_flag=True, help="Give up instead: fail the action, close the session.")
@output_option
def resume(run: str, action: str, fail: bool, output: OutputFormat) -> None:
    """Resume an interactive action: run its task as edited in the session, then close it.

    If the edited code does not import or raises, the error is printed and the session stays
    open: fix it and resume again (or give up with --fail).
    """
    outcome = call_server(settings_for(), lambda c: c.resume_session(run, action, fail=fail))
    try:
        check_outcome(outcome)
    except ResumeError as e:
        raise click.ClickException(str(e)) from e
    if output.for_scripts:
        emit({"run": run, "action": action, "outcome": outcome}, output)
        return
    click.echo(f"action {action} of run {run} " + ("failed as asked" if fail else "resumed"))


@click.command("open")
@click.argument("run", shell_complete=complete_run)
@click.argument("action", default=ROOT_ACTION, shell_complete=complete_action)
@click.option("--browser", is_flag=True, help="Also open it in this machine's web browser.")
@output_option
def open_(run: str, action: str, browser: bool, output: OutputFormat) -> None:
    """Print a link that opens an action's interactive session (VS Code or JupyterLab).

    The link signs one browser in to that session, once, within a few minutes: sessions are
    served from their own origin, apart from the UI's, and need a member of the run's project.
    """
    opened = call_server(settings_for(), lambda c: c.open_session(run, action))
    if output.for_scripts:
        emit(opened, output)
        return
    click.echo(opened.url)
    click.echo(
        f"opens the session of action {action} of run {run}, once, in the next "
        f"{opened.expires_in / 60:g} minutes; resume with `loom resume {run} {action}`",
        err=True,
    )
    if browser:
        import webbrowser

        webbrowser.open(opened.url)


@click.command()
@click.argument("run", shell_complete=complete_run)
@click.argument("action", default=ROOT_ACTION, shell_complete=complete_action)
@click.option("--jupyter", is_flag=True, help="Open JupyterLab instead of VS Code.")
@output_option
def debug(run: str, action: str, jupyter: bool, output: OutputFormat) -> None:
    """Re-run an action (e.g. a failed one) as an interactive session: a new run with the same
    code bundle, task and inputs, opened in VS Code (or JupyterLab)."""
    kind: wire.SessionKind = "jupyter" if jupyter else "vscode"
    info = call_server(settings_for(), lambda c: c.debug_action(run, action, kind))
    if output.for_scripts:
        emit(info, output)
        return
    click.echo(
        f"created run {info.name}: once its session is ready, open it with `loom open "
        f"{info.name}` or from the UI; resume with `loom resume {info.name}`"
    )


@click.group()
def session() -> None:
    """Interactive sessions."""


@session.command("diff")
@click.argument("run", shell_complete=complete_run)
@click.argument("action", default=ROOT_ACTION, shell_complete=complete_action)
@output_option
def session_diff(run: str, action: str, output: OutputFormat) -> None:
    """Print the edits made in an action's session, as a unified diff against its bundle."""
    info = call_server(settings_for(), lambda c: c.get_session(run, action))
    workspace = Path(info.workspace)
    manifest = workspace / ".loom" / "session.json"
    if not manifest.exists():
        raise click.ClickException(
            f"the session's workspace {workspace} is not on this machine; run this command "
            "where the action ran (its log also ends with the diff)"
        )
    bundle = Path(json.loads(manifest.read_text())["bundle"])
    diff = diff_workspace(bundle, workspace)
    if output.for_scripts:
        emit({"run": run, "action": action, "workspace": str(workspace), "diff": diff}, output)
    elif diff:
        sys.stdout.write(diff)
    else:
        click.echo(f"no edits in the session of action {action} of run {run}", err=True)
