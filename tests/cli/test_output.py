"""Output for people and for scripts: every data command takes ``-o table|json|yaml``, tables
never cut a name, JSON carries no pickles, tracebacks keep only the user's frames."""

from __future__ import annotations

import io

import click
from rich.console import Console

from loom._tracebacks import trim_traceback_text
from loom.cli import cli
from loom.cli._output import Column, plain, print_table

#: Commands that print no data of their own (the script for a shell).
# they print a document for another program (a shell, a container builder), not data
PRINT_NO_DATA = {"loom completion", "loom image dockerfile"}


def _leaves(command: click.Command, path: str) -> list[tuple[str, click.Command]]:
    if isinstance(command, click.Group) and path != "loom run":  # run's subcommands are files
        found = []
        for name, sub in sorted(command.commands.items()):
            found += _leaves(sub, f"{path} {name}")
        return found
    return [(path, command)]


def test_every_data_command_offers_table_json_and_yaml() -> None:
    leaves = _leaves(cli, "loom")
    assert len(leaves) >= 20, [p for p, _ in leaves]  # the tree really was walked
    lacking = []
    for path, command in leaves:
        if path in PRINT_NO_DATA:
            continue
        options = [p for p in command.params if "--output" in getattr(p, "opts", ())]
        choices = list(getattr(options[0].type, "choices", [])) if options else []
        if not options or "-o" not in options[0].opts or choices != ["table", "json", "yaml"]:
            lacking.append(f"{path} ({choices or 'no -o'})")
    assert not lacking, f"data commands without -o table|json|yaml: {lacking}"


LONG = "extraordinarily-long-run-name-that-scripts-need-whole-0123456789"


def _render(width: int, terminal: bool) -> str:
    out = io.StringIO()
    target = Console(file=out, width=width, force_terminal=terminal, color_system=None)
    columns = (
        Column("run", key=True),
        Column("task", key=True),
        Column("project/domain", drop_order=2),
        Column("started", drop_order=3),
        Column("by", drop_order=0),
    )
    rows = [[LONG, "environment.a_task_with_a_long_name", "default/development",
             "2026-01-01 10:00:00", "ci-bot"]]  # fmt: skip
    print_table(columns, rows, target)
    return out.getvalue()


def test_a_table_at_80_columns_keeps_names_whole_and_drops_minor_columns() -> None:
    text = _render(80, terminal=True)
    assert LONG in text and "environment.a_task_with_a_long_name" in text
    assert "…" not in text
    assert "ci-bot" not in text  # the least important column made room


def test_a_table_keeps_every_column_when_it_fits() -> None:
    text = _render(400, terminal=False)
    assert LONG in text and "ci-bot" in text and "2026-01-01 10:00:00" in text


def test_json_never_carries_pickles() -> None:
    error = {"type": "E", "message": "m", "traceback": "", "kind": "user", "pickled": "gASV"}
    value = {"__loom__": "pickle", "data": "gASVAAAA"}
    cleaned = plain({"error": error, "outputs": [value], "kept": {"pickled": "a user's key"}})
    assert "pickled" not in cleaned["error"]
    assert "data" not in cleaned["outputs"][0] and cleaned["outputs"][0]["omitted"]
    assert cleaned["kept"] == {"pickled": "a user's key"}  # only loom's own blobs go


REMOTE_TRACEBACK = """\
Traceback (most recent call last):
  File "/work/main/src/loom/runtime/_process.py", line 200, in _execute
    value = await host.execute(task, inputs)
            ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/usr/lib/python3.11/asyncio/tasks.py", line 10, in run
    return x
  File "/home/me/.loom/bundles/BUNDLE/flow.py", line 21, in fails
    return await inner(n)
           ^^^^^^^^^^^^^^
ValueError: bad 1
[loom] raised by task demo.inner in action inner-1 of run r (attempt 1 of 1)
[loom] remote traceback of action inner-1:
Traceback (most recent call last):
  File "/work/main/src/loom/_execution/_engine.py", line 5, in call
    return await fn()
  File "/home/me/.loom/bundles/BUNDLE/flow.py", line 9, in inner
    raise ValueError(f"bad {x}")
ValueError: bad 1
[loom] raised by task demo.inner in action inner-1 of run r (attempt 1 of 1)
""".replace("BUNDLE", "a" * 64)


def test_a_remote_traceback_keeps_the_users_frames_once() -> None:
    trimmed = trim_traceback_text(REMOTE_TRACEBACK)
    assert (
        "/loom/" not in trimmed
        and "asyncio" not in trimmed
        and "^^^^^^^^^^^^^^^^^^^^" not in (trimmed.split("fails")[0])
    )
    assert trimmed.count('File "flow.py", line 21, in fails') == 1
    assert trimmed.count('File "flow.py", line 9, in inner') == 1
    assert trimmed.count("[loom] raised by task demo.inner") == 1
    assert trimmed.count("Traceback (most recent call last):") == 2  # the root's and the child's


def test_a_traceback_of_loom_frames_only_stays_whole() -> None:
    text = (
        "Traceback (most recent call last):\n"
        '  File "/x/site-packages/loom/runtime/_process.py", line 3, in f\n'
        "    g()\n"
        "loom.errors.TaskLoadError: cannot import module 'flow'\n"
    )
    assert trim_traceback_text(text) == text
