"""``loom run FILE TASK --input value``: run a task locally from the command line."""

from __future__ import annotations

import re
import sys
import threading
from typing import Any

import click

from .. import wire
from .._run import Run, RunContext
from .._task import TaskTemplate
from ..errors import LoomError, TaskLoadError, raised_by_user_code
from ._common import wire_pattern
from ._loader import load_module, tasks_in
from ._output import OutputFormat, emit, output_option
from ._params import option_for
from ._traceback import format_user_traceback


def _parse_env(values: tuple[str, ...]) -> dict[str, str]:
    env = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--env")
        env[key] = value
    return env


def encode_outputs(task: TaskTemplate[Any, Any], value: Any) -> Any:
    """The outputs as JSON; a value only a pickle holds as its ``repr`` (scripts read JSON)."""
    try:
        encoded = task.interface.output.encode(value, None)
    except Exception:
        return repr(value)
    return _without_pickles(encoded, value)


def _without_pickles(encoded: Any, value: Any) -> Any:
    if isinstance(encoded, dict) and encoded.get("__loom__") == "pickle":
        return {"__loom__": "pickle", "repr": repr(value)}
    if isinstance(encoded, list) and isinstance(value, list | tuple) and len(value) == len(encoded):
        return [_without_pickles(e, v) for e, v in zip(encoded, value, strict=True)]
    if isinstance(encoded, dict) and isinstance(value, dict) and encoded.keys() == value.keys():
        return {k: _without_pickles(e, value[k]) for k, e in encoded.items()}
    return encoded


def _report(task: TaskTemplate[Any, Any], handle: Run, output: OutputFormat) -> None:
    """Print a finished run: result on stdout, summary and errors on stderr."""
    actions = len(handle.actions())
    took = f"{handle.duration:.2f} s" if handle.duration is not None else ""
    if output.for_scripts:
        doc: dict[str, Any] = {
            "run": handle.name,
            "task": task.name,
            "phase": handle.phase,
            "duration_s": handle.duration,
            "actions": actions,
        }
        if handle.error is None:
            doc["outputs"] = encode_outputs(task, handle.outputs())
        else:
            doc["error"] = {
                "type": type(handle.error).__qualname__,
                "message": str(handle.error),
                "traceback": format_user_traceback(handle.error),
            }
        emit(doc, output)
    elif handle.error is None:
        value = handle.outputs()
        if value is not None:
            click.echo(value if isinstance(value, str) else repr(value))
        click.secho(
            f"run {handle.name} succeeded in {took} ({actions} action(s))", fg="green", err=True
        )
    else:
        if raised_by_user_code(handle.error):  # loom's own errors say all in one line
            click.echo(format_user_traceback(handle.error), err=True, nl=False)
        click.secho(
            f"run {handle.name} failed in {took}: {type(handle.error).__qualname__}: "
            f"{handle.error}",
            fg="red",
            err=True,
        )
    if handle.error is not None:
        raise SystemExit(1)


def _execute(task: TaskTemplate[Any, Any], inputs: dict[str, Any], opts: dict[str, Any]) -> Run:
    """Run with a live action count on stderr when it is a terminal and the run is long."""
    from .._sync import run_sync

    runner = RunContext(
        "local", name=opts["name"], overwrite_cache=opts["overwrite_cache"],
        env_vars=opts["env_vars"],
    )  # fmt: skip
    if not sys.stderr.isatty() or opts["output"].for_scripts:
        return run_sync(runner.execute(task, **inputs))
    from rich.console import Console

    done = threading.Event()
    result: dict[str, Run] = {}

    def work() -> None:
        try:
            result["run"] = run_sync(runner.execute(task, **inputs))
        finally:
            done.set()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    if not done.wait(0.5):  # only show progress for runs that take a while
        with Console(stderr=True).status(f"running {task.name}") as status:
            while not done.wait(0.1):
                status.update(f"running {task.name}: {runner.started_actions()} action(s) so far")
    thread.join()
    return result["run"]


class TaskCommand(click.Command):
    """One task of a file, with an option per input."""

    def __init__(self, attr: str, task: TaskTemplate[Any, Any]) -> None:
        self.task = task
        try:
            params: list[click.Parameter] = [option_for(p) for p in task.interface.parameters]
        except LoomError as e:
            raise click.ClickException(str(e)) from e
        doc = (task.func.__doc__ or "").strip()
        kind = "async task" if task.is_async else "task"
        super().__init__(
            attr,
            params=params,
            help=f"{doc}\n\n\b\n{kind} {task.name}" if doc else f"{kind} {task.name}",
            short_help=(doc.splitlines()[0] if doc else task.name),
            callback=self._run,
            no_args_is_help=False,
        )

    def _run(self, **values: Any) -> None:
        ctx = click.get_current_context()
        inputs = {
            name: value
            for name, value in values.items()
            if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
        }
        opts = ctx.find_object(dict) or {}
        if opts["remote"]:
            from ._remote_run import run_remote

            run_remote(self.task, inputs, opts)
            return
        handle = _execute(self.task, inputs, opts)
        _report(self.task, handle, opts["output"])


class FileGroup(click.Group):
    """The tasks of one file, as subcommands."""

    def __init__(self, file: str) -> None:
        super().__init__(
            file,
            help=f"Tasks defined in {file}.",
            invoke_without_command=True,
            callback=self._list_tasks,
        )
        self.file = file
        self._tasks: dict[str, TaskTemplate[Any, Any]] | None = None

    @property
    def tasks(self) -> dict[str, TaskTemplate[Any, Any]]:
        if self._tasks is None:
            try:
                self._tasks = tasks_in(load_module(self.file))
            except TaskLoadError as e:
                raise click.ClickException(str(e)) from e
        return self._tasks

    def _list_tasks(self) -> None:
        ctx = click.get_current_context()
        if ctx.invoked_subcommand is None:  # `loom run FILE` lists what FILE offers
            click.echo(ctx.get_help())

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self.tasks)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        task = self.tasks.get(cmd_name) or self.tasks.get(cmd_name.replace("-", "_"))
        return None if task is None else TaskCommand(cmd_name, task)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0]
        command = self.get_command(ctx, name)
        if command is None:
            known = ", ".join(sorted(self.tasks)) or "none"
            raise click.UsageError(
                f"no task named {name!r} in {self.file}; tasks in this file: {known}", ctx
            )
        return name, command, args[1:]

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name, task in sorted(self.tasks.items()):
            kind = "async" if task.is_async else "sync"
            inputs = ", ".join(f"{p.name}: {p.codec.describe()}" for p in task.interface.parameters)
            rows.append((name, f"[{kind}] ({inputs}) -> {task.interface.output.describe()}"))
        with formatter.section("Tasks"):
            formatter.write_dl(rows or [("(none)", "this file defines no tasks")])

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage("loom run", f"{self.file} TASK [--INPUT VALUE]...")


class RunGroup(click.Group):
    """``loom run``: its first argument is a file, not a subcommand name."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return FileGroup(cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return []

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        pass

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage("loom run", "[OPTIONS] FILE [TASK] [--INPUT VALUE]...")


@click.group(cls=RunGroup, no_args_is_help=True)
@click.option("--name", help="Name the run (default: a generated unique name).")
@click.option(
    "--overwrite-cache", is_flag=True, help="Recompute cached tasks and replace their entries."
)
@click.option(
    "--env", "env", multiple=True, metavar="KEY=VALUE", help="Environment variable for every task."
)
@output_option
@click.option("--remote", is_flag=True, help="Run on the configured loom server.")
@click.option("--project", "-p", help="Project of a remote run [default: from the config].")
@click.option("--domain", "-d", help="Domain of a remote run [default: from the config].")
@click.option("--detach", is_flag=True, help="With --remote: print the run name and return.")
@click.option(
    "--follow-all", is_flag=True,
    help="With --remote: stream every action's output, each line prefixed by its action.",
)  # fmt: skip
@click.option(
    "--debug", is_flag=True,
    help="With --remote: open the task as an interactive VS Code session instead of running it.",
)  # fmt: skip
@click.pass_context
def run(
    ctx: click.Context,
    name: str | None,
    overwrite_cache: bool,
    env: tuple[str, ...],
    output: OutputFormat,
    remote: bool,
    project: str | None,
    domain: str | None,
    detach: bool,
    follow_all: bool,
    debug: bool,
) -> None:
    """Run a task from FILE locally and print its result.

    \b
    loom run FILE               list the tasks in FILE
    loom run FILE TASK --help   show a task's inputs, types and defaults
    loom run FILE TASK --x 1    run TASK with input x=1 (lists, dicts and
                                dataclasses are given as JSON)
    loom run --remote FILE TASK run it on the loom server instead, streaming
                                its output (Ctrl-C: abort the run, or detach)
    loom run --remote --debug FILE TASK
                                open it as a VS Code session on the server

    \b
    Exit status with --remote:
      0  succeeded (with --detach: submitted)
      1  the run failed
      2  bad command line or inputs
      3  the run was aborted
      4  detached (Ctrl-C or SIGTERM): the run goes on on the server
      5  the run could not be submitted or followed (server away, key refused)
    """
    if (project or domain or detach or debug or follow_all) and not remote:
        raise click.UsageError(
            "--project, --domain, --detach, --follow-all and --debug need --remote"
        )
    if remote and name is not None and not re.match(wire_pattern(wire.RunCreate, "name"), name):
        raise click.BadParameter(
            f"{name!r} is not a run name: use 1 to 63 lowercase letters, digits and '-', "
            "starting with a letter or a digit",
            param_hint="--name",
        )
    ctx.obj = {
        "name": name,
        "overwrite_cache": overwrite_cache,
        "env_vars": _parse_env(env),
        "output": output,
        "remote": remote,
        "project": project,
        "domain": domain,
        "detach": detach,
        "follow_all": follow_all,
        "debug": debug,
    }
