"""``loom get|create|delete|abort``: inspecting and managing what lives on the server."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from .. import wire
from .._controller import ROOT_ACTION
from ..remote import Client
from ._common import (
    PHASE_STYLE,
    call_server,
    domain_option,
    output_option,
    print_json,
    project_option,
    settings_for,
    took,
    when,
)

console = Console()
err_console = Console(stderr=True)


def _phase(phase: str) -> str:
    return f"[{PHASE_STYLE.get(phase, 'white')}]{phase}[/]"


@click.group()
def get() -> None:
    """Show runs, actions, logs, projects and API keys."""


@get.command("run")
@click.argument("name", required=False)
@project_option
@domain_option
@click.option("--phase", type=click.Choice(sorted(PHASE_STYLE)), help="Only runs in this phase.")
@click.option("--task", help="Only runs of this task (its full name, env.function).")
@click.option("--limit", default=20, show_default=True, help="How many recent runs.")
@output_option
def get_run(
    name: str | None,
    project: str | None,
    domain: str | None,
    phase: str | None,
    task: str | None,
    limit: int,
    output: str,
) -> None:
    """List recent runs, or show one run with its action tree."""
    settings = settings_for(project, domain)
    if name is None:
        runs = call_server(
            settings,
            lambda c: c.list_runs(
                project=settings.project,
                domain=settings.domain,
                phase=phase,
                task=task,
                limit=limit,
            ),
        )
        if output == "json":
            print_json(runs)
            return
        table = Table("run", "task", "phase", "project/domain", "started", "duration", "by")
        for r in runs:
            table.add_row(
                r.name, r.task, _phase(r.phase), f"{r.project}/{r.domain}",
                when(r.started_at or r.created_at), took(r.started_at, r.ended_at), r.created_by,
            )  # fmt: skip
        console.print(table if runs else "no runs yet")
        return

    async def fetch(c: Client) -> tuple[wire.RunInfo, list[wire.ActionInfo]]:
        return await c.get_run(name), await c.list_actions(name)

    run, actions = call_server(settings, fetch)
    if output == "json":
        print_json({"run": run, "actions": actions})
        return
    console.print(
        f"run [bold]{run.name}[/] {_phase(run.phase)}  task {run.task}  "
        f"{run.project}/{run.domain}  {took(run.started_at, run.ended_at)}"
    )
    console.print(_tree(actions))
    if run.error is not None:
        console.print(f"[red]{run.error.type}: {run.error.message}[/]")


def _tree(actions: list[wire.ActionInfo]) -> Tree:
    """Actions under their parents, with groups as intermediate nodes."""
    tree = Tree("actions")
    nodes: dict[str | None, Tree] = {None: tree}
    groups: dict[tuple[str | None, tuple[str, ...]], Tree] = {}
    for a in actions:  # the server lists parents before their children
        parent = nodes.get(a.parent, tree)
        for depth in range(1, len(a.group) + 1):
            key = (a.parent, tuple(a.group[:depth]))
            if key not in groups:
                groups[key] = parent.add(f"[bold blue]group {a.group[depth - 1]}[/]")
            parent = groups[key]
        attempts = f"  attempts {len(a.attempts)}" if len(a.attempts) > 1 else ""
        cache = f"  cache {a.cache}" if a.cache != "disabled" else ""
        error = f"  [red]{a.error.type}: {a.error.message}[/]" if a.error else ""
        nodes[a.name] = parent.add(
            f"{a.name}  {a.task}  {_phase(a.phase)}  {took(a.started_at, a.ended_at)}"
            f"{attempts}{cache}{error}"
        )
    return tree


@get.command("action")
@click.argument("run")
@click.argument("action", required=False)
@output_option
def get_action(run: str, action: str | None, output: str) -> None:
    """List a run's actions, or show one action with its attempts and error."""
    settings = settings_for()
    if action is None:
        actions = call_server(settings, lambda c: c.list_actions(run))
        if output == "json":
            print_json(actions)
            return
        table = Table("action", "task", "phase", "parent", "group", "attempts", "duration")
        for a in actions:
            table.add_row(
                a.name, a.task, _phase(a.phase), a.parent or "", "/".join(a.group),
                str(len(a.attempts)), took(a.started_at, a.ended_at),
            )  # fmt: skip
        console.print(table)
        return
    info = call_server(settings, lambda c: c.get_action(run, action))
    if output == "json":
        print_json(info)
        return
    console.print(
        f"action [bold]{info.name}[/] of run {info.run}: {info.task} {_phase(info.phase)}"
        f"  parent {info.parent or '-'}  cache {info.cache}"
    )
    for attempt in info.attempts:
        line = f"  attempt {attempt.number}: {_phase(attempt.phase)} {when(attempt.started_at)}"
        if attempt.error:
            line += f"  [red]{attempt.error.kind}: {attempt.error.type}: {attempt.error.message}[/]"
        console.print(line)
    session = info.session
    if session is not None:
        line = f"  session: {session.kind} {session.state}  {session.origin}{session.url}"
        if session.state != "ended":
            deadline = when(session.idle_deadline) if session.idle_deadline else "never"
            line += f"  idle limit: {deadline}"
        elif session.end_reason:
            line += f"  ({session.end_reason})"
        if session.state != "ended":
            line += f"  (open it: `loom open {info.run} {info.name}`)"
        console.print(line, highlight=False, soft_wrap=True)  # a link must not break
    if info.error and info.error.traceback:
        console.print(info.error.traceback, markup=False, highlight=False)


@get.command("logs")
@click.argument("run")
@click.argument("action", default=ROOT_ACTION)
@click.option("--attempt", type=int, help="Which attempt [default: the latest].")
@click.option(
    "--follow", "-f", is_flag=True,
    help="Keep printing as the action runs, through its retries, until it ends.",
)  # fmt: skip
def get_logs(run: str, action: str, attempt: int | None, follow: bool) -> None:
    """Print an action's log (stdout and stderr of its process)."""

    async def print_attempt(c: Client, number: int | None, live: bool) -> None:
        async for chunk in c.logs(run, action, number, live):
            sys.stdout.write(chunk)
            sys.stdout.flush()

    async def stream(c: Client) -> None:
        if not follow or attempt is not None:
            await print_attempt(c, attempt, follow)
            return
        shown: int | None = None
        while True:  # the latest attempt, then each retry as it starts, until the action ends
            info = await c.get_action(run, action)
            latest = info.attempts[-1].number if info.attempts else None
            if latest is None or latest == shown:
                if info.phase in wire.TERMINAL_PHASES:
                    return
                await asyncio.sleep(0.3)  # queued, or a retry's backoff
                continue
            if shown is not None:
                err_console.print(f"--- attempt {latest} ---", highlight=False)
            shown = latest
            await print_attempt(c, latest, True)

    call_server(settings_for(), stream)


@get.command("project")
@output_option
def get_project(output: str) -> None:
    """List projects."""
    projects = call_server(settings_for(), lambda c: c.list_projects())
    if output == "json":
        print_json(projects)
        return
    table = Table("project", "domains", "description", "created")
    for p in projects:
        table.add_row(p.name, ", ".join(p.domains), p.description, when(p.created_at))
    console.print(table)


@get.command("api-key")
@output_option
def get_api_key(output: str) -> None:
    """List API keys (names only; secrets are never shown again)."""
    keys = call_server(settings_for(), lambda c: c.list_api_keys())
    if output == "json":
        print_json(keys)
        return
    table = Table("name", "grants", "created")
    for k in keys:
        table.add_row(k.name, _grants(k), when(k.created_at))
    console.print(table)


@get.command("secret")
@click.option("--project", help="Only the secrets of exactly this project's scope.")
@click.option("--domain", help="Only the secrets of exactly this domain's scope.")
@output_option
def get_secret(project: str | None, domain: str | None, output: str) -> None:
    """List secrets: keys and scopes (values are never shown)."""
    found = call_server(settings_for(), lambda c: c.list_secrets(project, domain))
    if output == "json":
        print_json(found)
        return
    table = Table("key", "project", "domain", "updated")
    for secret in found:
        table.add_row(
            secret.key, secret.project or "(all)", secret.domain or "(all)", when(secret.updated_at)
        )
    console.print(table)


@click.group()
def create() -> None:
    """Create projects, API keys and secrets."""


@create.command("project")
@click.argument("name")
@click.option("--description", default="", help="What the project is for.")
@output_option
def create_project(name: str, description: str, output: str) -> None:
    """Create a project (it gets the domains development, staging and production)."""
    info = call_server(settings_for(), lambda c: c.create_project(name, description))
    if output == "json":
        print_json(info)
    else:
        click.echo(f"created project {info.name} with domains {', '.join(info.domains)}")


@create.command("api-key")
@click.argument("name")
@click.option("--admin", is_flag=True, help="May do anything: manage keys, secrets, projects.")
@click.option(
    "--project",
    "projects",
    multiple=True,
    metavar="P[=ROLE]",
    help="Grant a role in project P (repeatable; P=viewer or P=member sets its own role).",
)
@click.option(
    "--role",
    type=click.Choice([r.value for r in wire.Role]),
    default=wire.Role.MEMBER.value,
    show_default=True,
    help="The role in each --project without one: viewer reads runs, logs and values; "
    "member also starts, aborts and debugs runs and opens their sessions.",
)
@output_option
def create_api_key(
    name: str, admin: bool, projects: tuple[str, ...], role: str, output: str
) -> None:
    """Create an API key; its secret is printed once and never again.

    A key is either an admin key (--admin) or has a role in named projects (--project).
    """
    grants: dict[str, wire.Role] = {}
    for item in projects:
        project, _, own_role = item.partition("=")
        try:
            grants[project] = wire.Role(own_role or role)
        except ValueError:
            raise click.BadParameter(
                f"{own_role!r} is not a role: use viewer or member", param_hint="--project"
            ) from None
    if admin == bool(grants):
        raise click.UsageError(
            "give the key --admin, or a role in one or more projects with --project P "
            "[--role viewer|member]" + (" (not both)" if admin else "")
        )
    created = call_server(settings_for(), lambda c: c.create_api_key(name, admin, grants))
    if output == "json":
        print_json(created)
        return
    click.echo(created.key)
    click.echo(
        f"API key {created.name!r} created ({_grants(created)}); store it now, it will not be "
        "shown again. Use it with LOOM_API_KEY=... or `api_key:` in the config file.",
        err=True,
    )


def _grants(key: wire.ApiKeyInfo) -> str:
    """``admin``, or each project's role: ``analytics: member, web: viewer``."""
    if key.admin:
        return "admin"
    return ", ".join(f"{project}: {role.value}" for project, role in key.projects.items())


_SECRET_SCOPE = [
    click.option("--project", help="Only for this project [default: every project]."),
    click.option(
        "--domain",
        type=click.Choice(list(wire.DOMAINS)),
        help="Only for this domain [default: every domain].",
    ),
]


def _secret_scope(f: Any) -> Any:
    for option in reversed(_SECRET_SCOPE):
        f = option(f)
    return f


def _secret_key(ctx: click.Context, param: click.Parameter, key: str) -> str:
    """Refuse a malformed key before asking for the value."""
    if not re.match(wire.SECRET_KEY_PATTERN, key):
        raise click.BadParameter(
            f"{key!r} is not a secret key: use 1 to 255 letters, digits, '_', '.' or '-', "
            "not starting with '.' or '-'"
        )
    return key


@create.command("secret")
@click.argument("key", callback=_secret_key)
@click.option("--value", help="The value (it stays in your shell history: prefer the prompt).")
@click.option(
    "--from-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Read the value from this file, as it is.",
)
@_secret_scope
@click.option("--overwrite", is_flag=True, help="Replace the value if the secret exists.")
@output_option
def create_secret(
    key: str,
    value: str | None,
    from_file: Path | None,
    project: str | None,
    domain: str | None,
    overwrite: bool,
    output: str,
) -> None:
    """Store a secret on the server, encrypted; tasks that declare Secret(KEY) get it.

    Without --value or --from-file the value is read from a hidden prompt, or from standard
    input when it is not a terminal (one trailing newline is dropped). The most specific scope
    wins: project and domain, then project, then domain, then every project and domain."""
    if value is not None and from_file is not None:
        raise click.UsageError("give the value once: --value or --from-file, not both")
    if from_file is not None:
        value = from_file.read_text()
    elif value is None:
        if sys.stdin.isatty():
            value = click.prompt(f"value of {key}", hide_input=True)
        else:
            value = sys.stdin.read().removesuffix("\n")
    if len(value or "") > wire.MAX_SECRET_BYTES:
        raise click.UsageError(
            f"the value of {key!r} is {len(value or '')} characters long; a secret holds at "
            f"most {wire.MAX_SECRET_BYTES} (keep larger data in a file the task reads)"
        )
    spec = wire.SecretCreate(
        key=key, value=value or "", project=project, domain=domain, overwrite=overwrite
    )
    info = call_server(settings_for(), lambda c: c.create_secret(spec))
    if output == "json":
        print_json(info)
    else:
        click.echo(f"stored secret {info.key!r} for {_scope_words(info.project, info.domain)}")


def _scope_words(project: str | None, domain: str | None) -> str:
    return f"project {project or '(all)'}, domain {domain or '(all)'}"


@click.group()
def delete() -> None:
    """Delete API keys and secrets."""


@delete.command("secret")
@click.argument("key")
@_secret_scope
def delete_secret(key: str, project: str | None, domain: str | None) -> None:
    """Delete the secret KEY of one scope (by default the one for every project and domain)."""
    call_server(settings_for(), lambda c: c.delete_secret(key, project, domain))
    click.echo(f"deleted secret {key!r} of {_scope_words(project, domain)}")


@delete.command("api-key")
@click.argument("name")
def delete_api_key(name: str) -> None:
    """Delete an API key; requests using it are refused from now on."""
    call_server(settings_for(), lambda c: c.delete_api_key(name))
    click.echo(f"deleted API key {name!r}")


@click.group()
def abort() -> None:
    """Abort runs and actions."""


@abort.command("run")
@click.argument("name")
def abort_run(name: str) -> None:
    """Abort a run: every unfinished action stops and is marked ABORTED."""
    info = call_server(settings_for(), lambda c: c.abort_run(name))
    click.echo(f"run {info.name} is {info.phase}")


@abort.command("action")
@click.argument("run")
@click.argument("action")
def abort_action(run: str, action: str) -> None:
    """Abort one action and its children (an open interactive session closes)."""
    info = call_server(settings_for(), lambda c: c.abort_action(run, action))
    click.echo(f"action {info.name} of run {info.run} is {info.phase}")
