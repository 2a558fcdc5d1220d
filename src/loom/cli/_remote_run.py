"""``loom run --remote``: submit a run to the server, follow it, print its outputs."""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import sys
from typing import Any

import click
from rich.console import Console

from .. import wire
from .._controller import ROOT_ACTION
from .._run_remote import submit
from .._task import TaskTemplate
from ..remote import Client
from ._common import call_server, settings_for


def run_remote(task: TaskTemplate[Any, Any], inputs: dict[str, Any], opts: dict[str, Any]) -> None:
    settings = settings_for(opts["project"], opts["domain"])
    err = Console(stderr=True)
    as_json = opts["output"] == "json"

    async def go(client: Client) -> tuple[wire.RunInfo, wire.ActionInfo | None, Any]:
        handle = await submit(
            task, (), inputs, settings, name=opts["name"], env_vars=opts["env_vars"],
            overwrite_cache=opts["overwrite_cache"], debug=opts.get("debug", False),
        )  # fmt: skip
        if not as_json:
            err.print(f"created run [bold]{handle.name}[/] — {handle.url}")
        if opts["detach"]:
            return handle.info, None, None
        root = await _follow(client, handle.name, err, show=not as_json and sys.stderr.isatty())
        value = None
        if root.phase == "SUCCEEDED":
            value = (await client.get_outputs(handle.name, ROOT_ACTION)).value
        return await client.get_run(handle.name), root, value

    run, root, value = call_server(settings, go)
    if root is None:  # detached
        if as_json:
            click.echo(json.dumps({"run": run.name, "phase": run.phase}))
        else:
            click.echo(run.name)
        return
    _print_result(task, run, root, value, as_json, err)


async def _follow(client: Client, run: str, err: Console, show: bool) -> wire.ActionInfo:
    """Wait for the root action, showing live action counts on a terminal."""
    status = err.status(f"run {run}: starting") if show else None
    if status is not None:
        status.start()
    announced: set[str] = set()
    tick = itertools.count()
    try:
        while True:
            root = await client.get_action(run, ROOT_ACTION)
            if root.phase in wire.TERMINAL_PHASES:
                return root
            if next(tick) % 5:  # the whole action list once a second is plenty
                await asyncio.sleep(0.2)
                continue
            actions = await client.list_actions(run)
            for action in actions:
                session = action.session
                if action.phase == "INTERACTIVE" and session and session.id not in announced:
                    announced.add(session.id)
                    err.print(
                        f"interactive {session.kind} session for action {action.name}: "
                        f"{client.endpoint}{session.url}\n  resume with "
                        f"`loom resume {run} {action.name}`",
                        highlight=False,
                    )
            if status is not None:
                counts = collections.Counter(a.phase for a in actions)
                summary = ", ".join(f"{n} {p.lower()}" for p, n in sorted(counts.items()))
                status.update(f"run {run}: {summary}")
            await asyncio.sleep(0.2)
    finally:
        if status is not None:
            status.stop()


def _print_result(
    task: TaskTemplate[Any, Any],
    run: wire.RunInfo,
    root: wire.ActionInfo,
    value: Any,
    as_json: bool,
    err: Console,
) -> None:
    if as_json:
        doc: dict[str, Any] = {"run": run.name, "task": task.name, "phase": root.phase}
        if root.phase == "SUCCEEDED":
            doc["outputs"] = value
        elif root.error is not None:
            doc["error"] = root.error.model_dump(exclude={"pickled"})
        click.echo(json.dumps(doc, indent=2, default=str))
    elif root.phase == "SUCCEEDED":
        decoded = task.interface.output.decode(value, None)
        if decoded is not None:
            click.echo(decoded if isinstance(decoded, str) else repr(decoded))
        err.print(f"[green]run {run.name} succeeded[/] ({run.actions} action(s))")
    else:
        if root.error is not None and root.error.traceback:
            err.print(root.error.traceback.rstrip(), markup=False, highlight=False)
        message = f"{root.error.type}: {root.error.message}" if root.error else root.phase
        err.print(f"[red]run {run.name} {root.phase.lower()}: {message}[/]", highlight=False)
        err.print(f"see the logs with `loom get logs {run.name}`")
    if root.phase != "SUCCEEDED":
        raise SystemExit(1)
