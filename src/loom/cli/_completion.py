"""Shell completion: commands and options from click, run, action and task names from the
configured server (quickly, and silently nothing when it does not answer)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import click
from click.shell_completion import CompletionItem

from .._settings import Settings
from .._sync import run_sync
from ..remote import Client

_COMPLETION_TIMEOUT_S = 2.0
SHELLS = ("bash", "zsh", "fish")


def _ask(work: Callable[[Client], Awaitable[list[str]]]) -> list[str]:
    try:
        settings = Settings.load()
        if not settings.endpoint:
            return []

        async def go() -> list[str]:
            async with Client(
                settings.endpoint or "", settings.api_key, timeout=_COMPLETION_TIMEOUT_S
            ) as client:
                return await work(client)

        return run_sync(go())
    except Exception:  # a completion that fails must not print into the user's prompt
        return []


def _matching(names: list[str], incomplete: str) -> list[CompletionItem]:
    return [CompletionItem(n) for n in dict.fromkeys(names) if n.startswith(incomplete)]


def complete_run(ctx: click.Context, param: click.Parameter, incomplete: str) -> Any:
    """Recent runs' names."""

    async def names(c: Client) -> list[str]:
        return [r.name for r in await c.list_runs(limit=100)]

    return _matching(_ask(names), incomplete)


def complete_action(ctx: click.Context, param: click.Parameter, incomplete: str) -> Any:
    """The actions of the run named before."""
    run = ctx.params.get("run")
    if not run:
        return []

    async def names(c: Client) -> list[str]:
        return [a.name for a in await c.list_actions(run)]

    return _matching(_ask(names), incomplete)


def complete_task(ctx: click.Context, param: click.Parameter, incomplete: str) -> Any:
    """Task names of recent runs."""

    async def names(c: Client) -> list[str]:
        return [r.task for r in await c.list_runs(limit=100)]

    return _matching(_ask(names), incomplete)


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the script that completes loom's commands in SHELL, with run and task names
    from the configured server.

    \b
    bash:  eval "$(loom completion bash)"     (in ~/.bashrc)
    zsh:   eval "$(loom completion zsh)"      (in ~/.zshrc)
    fish:  loom completion fish > ~/.config/fish/completions/loom.fish
    """
    from click.shell_completion import get_completion_class

    root = click.get_current_context().find_root().command
    cls = get_completion_class(shell)
    assert cls is not None  # every shell in SHELLS has one
    click.echo(cls(root, {}, "loom", "_LOOM_COMPLETE").source())
