"""Printing for people (tables that never cut a name) or for scripts (JSON, YAML).

Every command that prints data takes ``-o table|json|yaml``. JSON and YAML are the wire
models as the API serves them, minus what only a Python process could read: an error's
pickled exception, and pickled values (replaced by a note saying how to read them).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import click
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

F = TypeVar("F", bound=Callable[..., Any])

#: Without a terminal nothing limits a line: a table is as wide as its widest row.
_UNLIMITED_WIDTH = 100_000
_PICKLE_TAG = "pickle"
_PICKLE_NOTE = "a pickled Python object: read it from Python with loom.remote"


class OutputFormat(enum.StrEnum):
    """How a command prints what it found."""

    TABLE = "table"
    JSON = "json"
    YAML = "yaml"

    @property
    def for_scripts(self) -> bool:
        return self is not OutputFormat.TABLE


def output_option(f: F) -> F:
    """``-o/--output table|json|yaml``, passed to the command as an :class:`OutputFormat`."""
    return click.option(
        "--output", "-o",
        type=click.Choice([o.value for o in OutputFormat]),
        default=OutputFormat.TABLE.value,
        show_default=True,
        callback=lambda ctx, param, value: OutputFormat(value),
        help="Print for people (table), or for scripts (json, yaml: stable, documented).",
    )(f)  # fmt: skip


def plain(value: Any) -> Any:
    """``value`` as JSON-ready data: models dumped, pickles left out."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [plain(x) for x in value]
    if isinstance(value, dict):
        if value.get("__loom__") == _PICKLE_TAG and "data" in value:  # only Python reads it
            return {"__loom__": _PICKLE_TAG, "omitted": _PICKLE_NOTE}
        if {"type", "message", "kind", "pickled"} <= value.keys():  # a wire.ErrorInfo
            value = {k: v for k, v in value.items() if k != "pickled"}
        return {k: plain(x) for k, x in value.items()}
    return value


def emit(value: Any, output: OutputFormat) -> None:
    """Print ``value`` as JSON or YAML on standard output."""
    data = _json_ready(value)
    if output is OutputFormat.YAML:
        import yaml

        click.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), nl=False)
    else:
        click.echo(json.dumps(data, indent=2, default=str))


def emit_line(value: Any, output: OutputFormat) -> None:
    """One item of a stream: a JSON line, or an item of a YAML sequence (both parse as the
    whole stream is read, and can be read line by line while it lasts)."""
    data = plain(value)
    if output is OutputFormat.YAML:
        import yaml

        text = yaml.safe_dump([data], sort_keys=False, allow_unicode=True, width=_UNLIMITED_WIDTH)
        click.echo(text, nl=False)
    else:
        click.echo(json.dumps(data, default=str))


def _json_ready(value: Any) -> Any:
    """Plain JSON types only (enums, times and the like as JSON writes them), for YAML too."""
    return json.loads(json.dumps(plain(value), default=str))


def console(*, stderr: bool = False) -> Console:
    """A console whose lines a missing terminal does not cut at 80 columns."""
    probe = Console(stderr=stderr, highlight=False)
    if probe.is_terminal:
        return probe
    return Console(stderr=stderr, width=_UNLIMITED_WIDTH, soft_wrap=True, highlight=False)


@dataclass(frozen=True)
class Column:
    """A table column. ``key`` columns hold names other commands take (never cut, never
    dropped); the others wrap and, when even that does not fit, go in ``drop_order``."""

    header: str
    key: bool = False
    drop_order: int = 0  # the lower, the sooner it goes on a narrow terminal
    min_width: int = 8


def print_table(
    columns: Sequence[Column], rows: Sequence[Sequence[str]], out: Console | None = None
) -> None:
    """A table that fits the terminal by wrapping and dropping minor columns, never by
    cutting a name; without a terminal, as wide as it needs."""
    out = out or console()
    shown = list(range(len(columns)))
    droppable = sorted(
        (i for i, c in enumerate(columns) if not c.key), key=lambda i: columns[i].drop_order
    )

    def needed(indices: list[int]) -> int:
        total = 1  # the left border
        for i in indices:
            if columns[i].key:
                widest = max([len(columns[i].header), *(_longest_line(r[i]) for r in rows)])
            else:
                widest = min(columns[i].min_width, max([1, *(len(r[i]) for r in rows)]))
                widest = max(widest, min(len(columns[i].header), columns[i].min_width))
            total += widest + 3  # padding either side, and a border
        return total

    while droppable and needed(shown) > out.width:
        shown.remove(droppable.pop(0))
    table = Table(*(_column(columns[i], rows, i) for i in shown))
    for row in rows:
        table.add_row(*(row[i] for i in shown))
    if needed(shown) > out.width:  # the names alone are wider: let the terminal wrap lines
        out = Console(file=out.file, width=needed(shown), force_terminal=out.is_terminal)
    out.print(table)
    hidden = [columns[i].header for i in range(len(columns)) if i not in shown]
    if hidden:
        Console(stderr=True).print(
            f"({', '.join(hidden)} left out to fit {out.width} columns: -o json has everything)",
            style="dim",
            highlight=False,
        )


def _longest_line(text: str) -> int:
    from rich.text import Text

    return max((len(line) for line in Text.from_markup(text).plain.splitlines()), default=0)


def _column(column: Column, rows: Sequence[Sequence[str]], index: int) -> Any:
    from rich.table import Column as RichColumn

    if column.key:
        width = max([len(column.header), *(_longest_line(r[index]) for r in rows)])
        return RichColumn(column.header, no_wrap=True, min_width=width)
    return RichColumn(column.header, overflow="fold")
