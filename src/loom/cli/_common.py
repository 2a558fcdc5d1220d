"""What the CLI's commands share: talking to the server, and printing for people or scripts."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import click
from pydantic import BaseModel

from .._run_remote import client_for
from .._settings import Settings
from .._sync import run_sync
from ..errors import ApiError, ConfigError
from ..remote import Client
from ..wire import Phase

T = TypeVar("T")

output_option = click.option(
    "--output", "-o", type=click.Choice(["table", "json"]), default="table", show_default=True,
    help="Print for people (table) or for scripts (json).",
)  # fmt: skip
project_option = click.option("--project", "-p", help="Project [default: from the config].")
domain_option = click.option("--domain", "-d", help="Domain [default: from the config].")


def settings_for(project: str | None = None, domain: str | None = None) -> Settings:
    return Settings.load().with_overrides(project=project, domain=domain)


def call_server(settings: Settings, work: Callable[[Client], Awaitable[T]]) -> T:
    """Run ``work`` with a client for the configured server; errors become clean messages."""

    async def go() -> T:
        async with client_for(settings) as client:
            return await work(client)

    try:
        return run_sync(go())
    except (ApiError, ConfigError) as e:
        raise click.ClickException(str(e)) from e


def print_json(value: Any) -> None:
    def plain(v: Any) -> Any:
        if isinstance(v, BaseModel):
            return v.model_dump(mode="json")
        if isinstance(v, list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    click.echo(json.dumps(plain(value), indent=2, default=str))


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
