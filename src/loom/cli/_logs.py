"""``loom get logs``: an action's output, filtered, stamped, followed; and the line stream
that ``loom run --remote`` shows as its run goes."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import click

from .. import wire
from .._controller import ROOT_ACTION
from ..remote import Client
from ._common import call_server, settings_for
from ._completion import complete_action, complete_run
from ._output import OutputFormat, emit_line, output_option

_POLL_S = 0.3
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class LogLine:
    """One line of an attempt's output. ``at`` is when loom's reader received it: exact (to
    a fraction of a second) for a live attempt; ``None`` for what was written before the
    reader came (loom keeps no per-line times)."""

    run: str
    action: str
    attempt: int
    at: datetime | None
    line: str

    def as_dict(self) -> dict[str, object]:
        return {
            "run": self.run, "action": self.action, "attempt": self.attempt,
            "at": None if self.at is None else self.at.isoformat(), "line": self.line,
        }  # fmt: skip


def parse_since(text: str, option: str = "--since") -> datetime:
    """``90s``, ``5m``, ``1h30m``, ``2d`` ago, or an ISO 8601 time (``option``: the one
    that gave it, for the error)."""
    compact = text.replace(" ", "")
    parts = _DURATION.findall(compact)
    if parts and "".join(n + u for n, u in parts) == compact:
        seconds = sum(float(n) * _UNIT_S[u] for n, u in parts)
        return datetime.now(UTC) - timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither a duration (30s, 5m, 1h30m, 2d) nor a time (2026-01-31T12:00:00)",
            param_hint=option,
        ) from None
    return moment if moment.tzinfo else moment.astimezone()


async def attempt_lines(
    client: Client, run: str, action: str, attempt: int, follow: bool
) -> AsyncIterator[LogLine]:
    """The lines of one attempt; with ``follow`` until it ends. What the server had before
    the first chunk arrived is the backlog (no time); later chunks are stamped as they come."""
    pending = ""
    first = True
    async for chunk in client.logs(run, action, attempt, follow):
        at = None if first else datetime.now(UTC)
        first = False
        pending += chunk
        *complete, pending = pending.split("\n")
        for text in complete:
            yield LogLine(run, action, attempt, at, text)
    if pending:  # the last line, without its newline
        yield LogLine(run, action, attempt, None if first else datetime.now(UTC), pending)


async def action_lines(
    client: Client,
    run: str,
    action: str,
    *,
    attempt: int | None = None,
    follow: bool = False,
    since: datetime | None = None,
    live: bool = False,
    on_attempt: Callable[[int], None] | None = None,
) -> AsyncIterator[LogLine]:
    """An action's lines: one attempt, or (``follow``) the latest and then each retry as it
    starts, until the action ends. ``since`` skips attempts that ended before it; ``live``
    stamps every line with the time it came (for a reader that was there from the start)."""
    if attempt is not None:
        async for line in attempt_lines(client, run, action, attempt, follow):
            yield _stamped(line, live)
        return
    shown: int | None = None
    while True:
        info = await client.get_action(run, action)
        latest = info.attempts[-1] if info.attempts else None
        if latest is None or latest.number == shown:
            if info.phase in wire.TERMINAL_PHASES or (not follow and shown is not None):
                return
            if not follow and latest is None:
                return
            await asyncio.sleep(_POLL_S)  # queued, or a retry's backoff
            continue
        if since is not None and latest.ended_at is not None and latest.ended_at < since:
            return  # its last attempt ended before the window: nothing in it
        if shown is not None and on_attempt is not None:
            on_attempt(latest.number)
        shown = latest.number
        async for line in attempt_lines(client, run, action, latest.number, follow):
            yield _stamped(line, live)
        if not follow:
            return


def _stamped(line: LogLine, live: bool) -> LogLine:
    if live and line.at is None:
        return LogLine(line.run, line.action, line.attempt, datetime.now(UTC), line.line)
    return line


def clock(at: datetime | None) -> str:
    """A line's time for people: local, to the millisecond; blanks where it is not known."""
    if at is None:
        return " " * 23
    return at.astimezone().strftime("%Y-%m-%d %H:%M:%S.%f")[:23]


@click.command("logs")
@click.argument("run", shell_complete=complete_run)
@click.argument("action", default=ROOT_ACTION, shell_complete=complete_action)
@click.option("--attempt", type=click.IntRange(min=1), help="Which attempt [default: the latest].")
@click.option(
    "--follow", "-f", is_flag=True,
    help="Keep printing as the action runs, through its retries, until it ends.",
)  # fmt: skip
@click.option(
    "--since", metavar="DURATION|TIME",
    help="Only what was written since: 30s, 5m, 1h30m, 2d ago, or an ISO time. loom keeps no "
    "per-line times, so this skips attempts that ended before; while following, new lines count.",
)  # fmt: skip
@click.option("--grep", "pattern", metavar="PATTERN", help="Only lines matching this regex.")
@click.option(
    "--timestamps", "-t", is_flag=True,
    help="Start each line with the time it reached loom (blank for what an attempt wrote "
    "before you asked: loom keeps no per-line times).",
)  # fmt: skip
@output_option
def get_logs(
    run: str,
    action: str,
    attempt: int | None,
    follow: bool,
    since: str | None,
    pattern: str | None,
    timestamps: bool,
    output: OutputFormat,
) -> None:
    """Print an action's log (stdout and stderr of its process); a failed attempt's log ends
    with its traceback. -o json prints one JSON object a line: run, action, attempt, at, line."""
    try:
        matcher = re.compile(pattern) if pattern is not None else None
    except re.error as e:
        raise click.BadParameter(f"{pattern!r} is not a regular expression: {e}") from None
    cutoff = parse_since(since) if since else None

    def announce(number: int) -> None:
        if not output.for_scripts:
            click.echo(f"--- attempt {number} ---", err=True)

    async def stream(c: Client) -> int:
        printed = 0
        async for line in action_lines(
            c, run, action, attempt=attempt, follow=follow, since=cutoff, on_attempt=announce
        ):
            if matcher is not None and not matcher.search(line.line):
                continue
            if cutoff is not None and line.at is not None and line.at < cutoff:
                continue
            printed += 1
            if output.for_scripts:
                emit_line(line.as_dict(), output)
            elif timestamps:
                click.echo(f"{clock(line.at)} {line.line}")
            else:
                click.echo(line.line)
            sys.stdout.flush()
        return printed

    printed = call_server(settings_for(), stream)
    if printed == 0 and not output.for_scripts:
        filters = [f"matching {pattern!r}" if pattern else "", f"since {since}" if since else ""]
        said = " ".join(f for f in filters if f)
        click.echo(
            f"no log lines{' ' + said if said else ''} for action {action} of run {run}"
            + (
                "; drop --grep/--since to see all of it"
                if said
                else f" (it printed nothing yet; `loom get action {run} {action}` shows its "
                "attempts)"
            ),
            err=True,
        )
