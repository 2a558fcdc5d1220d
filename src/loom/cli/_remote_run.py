"""``loom run --remote``: submit a run to the server, follow it, print its outputs."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import sys
from typing import Any

import click
from rich.console import Console
from rich.status import Status

from .. import wire
from .._controller import ROOT_ACTION
from .._run_remote import submit
from .._task import TaskTemplate
from ..errors import ApiError
from ..remote import Client
from ..wire import Phase
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
        if root.phase == Phase.SUCCEEDED:
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
    """Wait for the root action (one long-poll at a time), showing live action counts on a
    terminal and the address of each interactive session as it opens."""
    status = err.status(f"run {run}: starting") if show else None
    if status is not None:
        status.start()
    watcher = asyncio.create_task(_watch(client, run, err, status))
    try:
        return await client.wait_action(run, ROOT_ACTION)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        if status is not None:
            status.stop()


async def _watch(client: Client, run: str, err: Console, status: Status | None) -> None:
    """Follow the run's events (from its first: a run that is already going is caught up)."""
    phases: dict[str, str] = {}
    announced: set[str] = set()
    after: int | None = None
    while True:
        try:
            async for event in client.events(run, after=after):
                after = event.seq
                if event.kind != "action" or event.action is None:
                    continue
                phases[event.action] = event.phase
                if event.phase == Phase.INTERACTIVE:
                    await _announce(client, run, event.action, err, announced)
                if status is not None:
                    counts = collections.Counter(phases.values())
                    summary = ", ".join(f"{n} {p.lower()}" for p, n in sorted(counts.items()))
                    status.update(f"run {run}: {summary}")
        except ApiError:
            pass  # the stream broke (a server restart?): the root's long-poll says if it is over
        await asyncio.sleep(1.0)  # and then pick up after the last event seen


async def _announce(client: Client, run: str, name: str, err: Console, announced: set[str]) -> None:
    action = await client.get_action(run, name)
    session = action.session
    if action.phase == Phase.INTERACTIVE and session and session.id not in announced:
        announced.add(session.id)
        try:  # a one-time link into it: sessions have their own origin and sign-in
            link = (await client.open_session(run, name)).url
        except ApiError as e:
            link = f"(cannot open it: {e}; try `loom open {run} {name}`)"
        err.print(
            f"interactive {session.kind} session for action {name}: {link}\n"
            f"  open it again with `loom open {run} {name}`; resume with "
            f"`loom resume {run} {name}`",
            highlight=False,
            soft_wrap=True,  # a link broken across lines cannot be clicked or copied
        )


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
        if root.phase == Phase.SUCCEEDED:
            doc["outputs"] = value
        elif root.error is not None:
            doc["error"] = root.error.model_dump(exclude={"pickled"})
        click.echo(json.dumps(doc, indent=2, default=str))
    elif root.phase == Phase.SUCCEEDED:
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
    if root.phase != Phase.SUCCEEDED:
        raise SystemExit(1)
