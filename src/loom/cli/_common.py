"""What the CLI's commands share: talking to the server, and words for what it says."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import click
import pydantic

from .._run_remote import client_for
from .._settings import Settings
from .._sync import run_sync
from ..errors import ApiError, ConfigError
from ..remote import Client
from ..wire import Phase

T = TypeVar("T")

project_option = click.option("--project", "-p", help="Project [default: from the config].")
domain_option = click.option("--domain", "-d", help="Domain [default: from the config].")

#: The server speaks API to every client; the CLI's users get the command instead.
_API_WORDS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"project '([^']+)' not found; create it with POST /projects"),
        r"project '\1' not found; create it with `loom create project \1` "
        "(`loom get project` lists those you can use)",
    ),
)


def wire_pattern(model: type[pydantic.BaseModel], field: str) -> str:
    """The regular expression the wire schema holds ``model.field`` to, to check it here first
    and say what is wrong in words."""
    for constraint in model.model_fields[field].metadata:
        if pattern := getattr(constraint, "pattern", None):
            return str(pattern)
    raise LookupError(f"{model.__name__}.{field} has no pattern")


def settings_for(project: str | None = None, domain: str | None = None) -> Settings:
    try:
        return Settings.load().with_overrides(project=project, domain=domain)
    except ConfigError as e:
        raise click.ClickException(str(e)) from e


def in_words(error: Exception) -> str:
    """What went wrong, as a sentence for a person at a terminal."""
    if isinstance(error, pydantic.ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in error.errors()
        )
        return f"invalid {error.title}: {problems}"
    text = str(error)
    for pattern, replacement in _API_WORDS:
        text = pattern.sub(replacement, text)
    return text


def call_server(settings: Settings, work: Callable[[Client], Awaitable[T]]) -> T:
    """Run ``work`` with a client for the configured server; errors become clean messages."""

    async def go() -> T:
        async with client_for(settings) as client:
            return await work(client)

    try:
        return run_sync(go())
    except (ApiError, ConfigError, pydantic.ValidationError) as e:
        raise click.ClickException(in_words(e)) from e


def when(value: datetime | None) -> str:
    return "" if value is None else value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def took(start: datetime | None, end: datetime | None) -> str:
    if start is None:
        return ""
    if end is None:
        return "…"
    return f"{(end - start).total_seconds():.2f} s"


PHASE_STYLE: dict[str, str] = {
    Phase.SUCCEEDED: "green",
    Phase.FAILED: "red",
    Phase.ABORTED: "yellow",
    Phase.RUNNING: "cyan",
    Phase.INTERACTIVE: "bold blue",
    Phase.RETRYING: "magenta",
    Phase.QUEUED: "dim",
}


def phase_markup(phase: str) -> str:
    return f"[{PHASE_STYLE.get(phase, 'white')}]{phase}[/]"


def describe(value: Any) -> str:
    """A value for a table cell."""
    return "" if value is None else str(value)
