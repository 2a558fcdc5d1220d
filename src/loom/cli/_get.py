"""``loom get``: runs, actions, projects, API keys and secrets on the server."""

from __future__ import annotations

import click
from rich.tree import Tree

from .. import wire
from ..remote import Client
from ._common import (
    PHASE_STYLE,
    call_server,
    domain_option,
    phase_markup,
    project_option,
    settings_for,
    took,
    when,
)
from ._completion import complete_action, complete_run, complete_task
from ._output import Column, OutputFormat, console, emit, output_option, print_table

RUN_COLUMNS = (
    Column("run", key=True),
    Column("task", key=True),
    Column("phase", key=True),
    Column("project/domain", drop_order=2, min_width=12),
    Column("started", drop_order=3, min_width=10),
    Column("duration", drop_order=1),
    Column("by", drop_order=0),
)
ACTION_COLUMNS = (
    Column("action", key=True),
    Column("task", key=True),
    Column("phase", key=True),
    Column("parent", drop_order=3),
    Column("group", drop_order=1),
    Column("attempts", drop_order=2),
    Column("duration", drop_order=4),
)


@click.group()
def get() -> None:
    """Show runs, actions, logs, projects, API keys and secrets."""


@get.command("run")
@click.argument("name", required=False, shell_complete=complete_run)
@project_option
@domain_option
@click.option("--phase", type=click.Choice(sorted(PHASE_STYLE)), help="Only runs in this phase.")
@click.option(
    "--task", help="Only runs of this task (its full name, env.function).",
    shell_complete=complete_task,
)  # fmt: skip
@click.option("--limit", default=20, show_default=True, help="How many recent runs.")
@output_option
def get_run(
    name: str | None,
    project: str | None,
    domain: str | None,
    phase: str | None,
    task: str | None,
    limit: int,
    output: OutputFormat,
) -> None:
    """List recent runs, or show one run with its action tree."""
    settings = settings_for(project, domain)
    if name is None:
        if settings.domain not in wire.DOMAINS:
            raise click.BadParameter(
                f"{settings.domain!r} is not a domain; domains are {', '.join(wire.DOMAINS)}",
                param_hint="--domain",
            )
        runs = call_server(
            settings,
            lambda c: c.list_runs(
                project=settings.project, domain=settings.domain, phase=phase, task=task,
                limit=limit,
            ),
        )  # fmt: skip
        if output.for_scripts:
            emit(runs, output)
        elif runs:
            print_table(
                RUN_COLUMNS,
                [
                    [
                        r.name, r.task, phase_markup(r.phase), f"{r.project}/{r.domain}",
                        when(r.started_at or r.created_at), took(r.started_at, r.ended_at),
                        r.created_by,
                    ]
                    for r in runs
                ],
            )  # fmt: skip
        else:
            click.echo(_no_runs(settings.project, settings.domain, phase, task), err=True)
        return

    async def fetch(c: Client) -> tuple[wire.RunInfo, list[wire.ActionInfo]]:
        return await c.get_run(name), await c.list_actions(name)

    run, actions = call_server(settings, fetch)
    if output.for_scripts:
        emit({"run": run, "actions": actions}, output)
        return
    out = console()
    out.print(
        f"run [bold]{run.name}[/] {phase_markup(run.phase)}  task {run.task}  "
        f"{run.project}/{run.domain}  {took(run.started_at, run.ended_at)}",
        highlight=False,
    )
    out.print(_tree(actions), highlight=False)
    if run.error is not None:
        out.print(f"[red]{run.error.type}: {run.error.message}[/]", highlight=False)


def _no_runs(project: str, domain: str, phase: str | None, task: str | None) -> str:
    """What matched nothing, and how to see more."""
    filters = [f"project {project}", f"domain {domain}"]
    widen = []
    if phase:
        filters.append(f"phase {phase}")
        widen.append("drop --phase")
    if task:
        filters.append(f"task {task}")
        widen.append("drop --task (or check the name: env.function)")
    others = [d for d in wire.DOMAINS if d != domain]
    widen.append(f"try --domain {' or '.join(others)}")
    widen.append("--project P for another project (`loom get project` lists them)")
    return f"no runs match {', '.join(filters)}; to see more: {'; '.join(widen)}"


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
            f"{a.name}  {a.task}  {phase_markup(a.phase)}  {took(a.started_at, a.ended_at)}"
            f"{attempts}{cache}{error}"
        )
    return tree


@get.command("action")
@click.argument("run", shell_complete=complete_run)
@click.argument("action", required=False, shell_complete=complete_action)
@output_option
def get_action(run: str, action: str | None, output: OutputFormat) -> None:
    """List a run's actions, or show one action with its attempts and error."""
    settings = settings_for()
    if action is None:
        actions = call_server(settings, lambda c: c.list_actions(run))
        if output.for_scripts:
            emit(actions, output)
            return
        print_table(
            ACTION_COLUMNS,
            [
                [
                    a.name, a.task, phase_markup(a.phase), a.parent or "", "/".join(a.group),
                    str(len(a.attempts)), took(a.started_at, a.ended_at),
                ]
                for a in actions
            ],
        )  # fmt: skip
        return
    info = call_server(settings, lambda c: c.get_action(run, action))
    if output.for_scripts:
        emit(info, output)
        return
    out = console()
    out.print(
        f"action [bold]{info.name}[/] of run {info.run}: {info.task} {phase_markup(info.phase)}"
        f"  parent {info.parent or '-'}  cache {info.cache}",
        highlight=False,
    )
    for attempt in info.attempts:
        started = when(attempt.started_at)
        line = f"  attempt {attempt.number}: {phase_markup(attempt.phase)} {started}"
        if attempt.error:
            line += f"  [red]{attempt.error.kind}: {attempt.error.type}: {attempt.error.message}[/]"
        out.print(line, highlight=False)
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
        out.print(line, highlight=False, soft_wrap=True)  # a link must not break
    if info.error and info.error.traceback:
        from .._tracebacks import trim_traceback_text

        out.print(trim_traceback_text(info.error.traceback), markup=False, highlight=False)


@get.command("project")
@output_option
def get_project(output: OutputFormat) -> None:
    """List projects."""
    projects = call_server(settings_for(), lambda c: c.list_projects())
    if output.for_scripts:
        emit(projects, output)
    elif projects:
        print_table(
            (
                Column("project", key=True),
                Column("domains", drop_order=2),
                Column("description", drop_order=1),
                Column("created", drop_order=0),
            ),
            [[p.name, ", ".join(p.domains), p.description, when(p.created_at)] for p in projects],
        )
    else:
        click.echo(
            "no projects this API key has a role in; an admin adds one with "
            "`loom create project NAME` and `loom create api-key NAME --project NAME`",
            err=True,
        )


@get.command("api-key")
@output_option
def get_api_key(output: OutputFormat) -> None:
    """List API keys (names only; secrets are never shown again)."""
    keys = call_server(settings_for(), lambda c: c.list_api_keys())
    if output.for_scripts:
        emit(keys, output)
        return
    print_table(
        (Column("name", key=True), Column("grants", drop_order=1), Column("created")),
        [[k.name, grants_words(k), when(k.created_at)] for k in keys],
    )


def grants_words(key: wire.ApiKeyInfo) -> str:
    """``admin``, or each project's role: ``analytics: member, web: viewer``."""
    if key.admin:
        return "admin"
    return ", ".join(f"{project}: {role.value}" for project, role in key.projects.items())


@get.command("secret")
@click.option("--project", help="Only the secrets of exactly this project's scope.")
@click.option("--domain", help="Only the secrets of exactly this domain's scope.")
@output_option
def get_secret(project: str | None, domain: str | None, output: OutputFormat) -> None:
    """List secrets: keys and scopes (values are never shown)."""
    found = call_server(settings_for(), lambda c: c.list_secrets(project, domain))
    if output.for_scripts:
        emit(found, output)
    elif found:
        print_table(
            (Column("key", key=True), Column("project", key=True), Column("domain", key=True),
             Column("updated", drop_order=0)),
            [[s.key, s.project or "(all)", s.domain or "(all)", when(s.updated_at)] for s in found],
        )  # fmt: skip
    else:
        scope = " and ".join(f"{k} {v}" for k, v in (("project", project), ("domain", domain)) if v)
        click.echo(
            f"no secrets{' scoped to ' + scope if scope else ''}; "
            + ("drop --project/--domain to list every scope, or " if scope else "")
            + "store one with `loom create secret KEY`",
            err=True,
        )
