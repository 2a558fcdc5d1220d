"""``loom create|delete|abort``: managing what lives on the server."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel

from .. import wire
from ._common import call_server, settings_for, wire_pattern
from ._completion import complete_action, complete_run
from ._get import grants_words
from ._output import OutputFormat, emit, output_option


def _name_check(
    model: type[BaseModel], what: str, rule: str
) -> Callable[[click.Context, click.Parameter, str], str]:
    """A callback that refuses a malformed ``model.name`` in words, before any request."""

    def check(ctx: click.Context, param: click.Parameter, name: str) -> str:
        if not re.match(wire_pattern(model, "name"), name):
            raise click.BadParameter(f"{name!r} is not {what}: use {rule}") from None
        return name

    return check


_project_name = _name_check(
    wire.ProjectCreate,
    "a project name",
    "1 to 63 lowercase letters, digits and '-', starting with a letter or a digit "
    "(e.g. 'analytics', 'team-2')",
)
_key_name = _name_check(
    wire.ApiKeyCreate,
    "an API key name",
    "1 to 63 letters, digits, '_', '.' or '-', starting with a letter or a digit",
)


@click.group()
def create() -> None:
    """Create projects, API keys and secrets."""


@create.command("project")
@click.argument("name", callback=_project_name)
@click.option("--description", default="", help="What the project is for.")
@output_option
def create_project(name: str, description: str, output: OutputFormat) -> None:
    """Create a project (it gets the domains development, staging and production)."""
    info = call_server(settings_for(), lambda c: c.create_project(name, description))
    if output.for_scripts:
        emit(info, output)
    else:
        click.echo(f"created project {info.name} with domains {', '.join(info.domains)}")


@create.command("api-key")
@click.argument("name", callback=_key_name)
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
    name: str, admin: bool, projects: tuple[str, ...], role: str, output: OutputFormat
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
    if output.for_scripts:
        emit(created, output)
        return
    click.echo(created.key)
    click.echo(
        f"API key {created.name!r} created ({grants_words(created)}); store it now, it will "
        "not be shown again. Use it with LOOM_API_KEY=... or `api_key:` in the config file.",
        err=True,
    )


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
    output: OutputFormat,
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
    if output.for_scripts:
        emit(info, output)
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
@output_option
def delete_secret(key: str, project: str | None, domain: str | None, output: OutputFormat) -> None:
    """Delete the secret KEY of one scope (by default the one for every project and domain)."""
    call_server(settings_for(), lambda c: c.delete_secret(key, project, domain))
    if output.for_scripts:
        emit({"deleted": "secret", "key": key, "project": project, "domain": domain}, output)
    else:
        click.echo(f"deleted secret {key!r} of {_scope_words(project, domain)}")


@delete.command("api-key")
@click.argument("name")
@output_option
def delete_api_key(name: str, output: OutputFormat) -> None:
    """Delete an API key; requests using it are refused from now on."""
    call_server(settings_for(), lambda c: c.delete_api_key(name))
    if output.for_scripts:
        emit({"deleted": "api-key", "name": name}, output)
    else:
        click.echo(f"deleted API key {name!r}")


@click.group()
def abort() -> None:
    """Abort runs and actions."""


@abort.command("run")
@click.argument("name", shell_complete=complete_run)
@output_option
def abort_run(name: str, output: OutputFormat) -> None:
    """Abort a run: every unfinished action stops and is marked ABORTED."""
    info = call_server(settings_for(), lambda c: c.abort_run(name))
    if output.for_scripts:
        emit(info, output)
    else:
        click.echo(f"run {info.name} is {info.phase}")


@abort.command("action")
@click.argument("run", shell_complete=complete_run)
@click.argument("action", shell_complete=complete_action)
@output_option
def abort_action(run: str, action: str, output: OutputFormat) -> None:
    """Abort one action and its children (an open interactive session closes)."""
    info = call_server(settings_for(), lambda c: c.abort_action(run, action))
    if output.for_scripts:
        emit(info, output)
    else:
        click.echo(f"action {info.name} of run {info.run} is {info.phase}")
