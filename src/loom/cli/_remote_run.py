"""``loom run --remote``: submit a run to the server and follow it: the root action's output
(or every action's) as it is written, a progress line on a terminal, the outputs at the end.

Ctrl-C on a terminal asks whether to abort the run (a second Ctrl-C aborts); without one it
detaches, saying how to follow or abort the run. The exit status says how it ended
(:class:`RunExit`)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

import click
import pydantic
from rich.status import Status

from .. import wire
from .._controller import ROOT_ACTION
from .._run_remote import client_for, submit
from .._task import TaskTemplate
from ..errors import ApiError, ConfigError, LoomError
from ..remote import Client
from ..wire import Phase
from ._common import in_words, settings_for
from ._logs import LogLine, action_lines, clock
from ._output import OutputFormat, console, emit
from ._run import encode_outputs
from ._traceback import trim_traceback_text

#: How long the end of a log may trail the end of its action before the result is printed.
_LOG_DRAIN_S = 10.0


class RunExit(enum.IntEnum):
    """``loom run --remote``'s exit status (README: "Exit codes")."""

    SUCCEEDED = 0  # (or submitted, with --detach)
    FAILED = 1
    USAGE = 2  # click's, for a command line it refuses
    ABORTED = 3
    DETACHED = 4  # stopped following (Ctrl-C, SIGTERM): the run goes on
    NOT_FOLLOWED = 5  # the run could not be submitted or followed (server away, refused)


_EXIT_FOR_PHASE = {Phase.SUCCEEDED: RunExit.SUCCEEDED, Phase.ABORTED: RunExit.ABORTED}


def run_remote(task: TaskTemplate[Any, Any], inputs: dict[str, Any], opts: dict[str, Any]) -> None:
    settings = settings_for(opts["project"], opts["domain"])
    try:
        code = asyncio.run(_Follow(task, inputs, opts, settings).main())
    except (ApiError, ConfigError, pydantic.ValidationError) as e:
        click.secho(f"Error: {in_words(e)}", fg="red", err=True)
        raise SystemExit(RunExit.NOT_FOLLOWED) from e
    except LoomError as e:  # inputs the task refuses, a task that cannot be packaged
        click.secho(f"Error: {e}", fg="red", err=True)
        raise SystemExit(RunExit.USAGE) from e
    raise SystemExit(code)


class _Follow:
    """One ``loom run --remote``, from submission to exit status."""

    def __init__(
        self, task: TaskTemplate[Any, Any], inputs: dict[str, Any], opts: dict[str, Any],
        settings: Any,
    ) -> None:  # fmt: skip
        self.task, self.inputs, self.opts, self.settings = task, inputs, opts, settings
        self.output: OutputFormat = opts["output"]
        self.err = console(stderr=True)
        self.terminal = self.err.is_terminal
        # stdout holds the result alone (`x=$(loom run --remote ...)`), the log goes beside it
        self.out: TextIO = sys.stderr
        self.status: Status | None = None
        self.signals: asyncio.Queue[int] = asyncio.Queue()
        self.run = ""
        self.started = time.monotonic()
        #: the root's log went by with its traceback (a failed attempt's log ends with it):
        #: the end need not show it again
        self.root_log_shown = False

    # -- the whole command ------------------------------------------------------------------

    async def main(self) -> RunExit:
        opts = self.opts
        handle = await submit(
            self.task, (), self.inputs, self.settings, name=opts["name"],
            env_vars=opts["env_vars"], overwrite_cache=opts["overwrite_cache"],
            debug=opts.get("debug", False),
        )  # fmt: skip
        self.run = handle.name
        if opts["detach"]:
            if self.output.for_scripts:
                doc = {"run": handle.name, "phase": handle.info.phase, "url": handle.url}
                emit(doc, self.output)
            else:
                click.echo(handle.name)
            return RunExit.SUCCEEDED
        self.err.print(f"created run [bold]{handle.name}[/] — {handle.url}", soft_wrap=True)
        async with client_for(self.settings) as client:
            return await self._follow(client)

    async def _follow(self, client: Client) -> RunExit:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.signals.put_nowait, sig)
        if self.terminal:
            self.status = self.err.status(f"run {self.run}: starting")
            self.status.start()
        root = asyncio.create_task(client.wait_action(self.run, ROOT_ACTION))
        logs = asyncio.create_task(self._logs(client, ROOT_ACTION))
        followed: dict[str, asyncio.Task[None]] = {ROOT_ACTION: logs}
        watcher = asyncio.create_task(self._watch(client, followed))
        interrupted = asyncio.create_task(self.signals.get())
        try:
            await asyncio.wait({root, interrupted}, return_when=asyncio.FIRST_COMPLETED)
            if not root.done():
                watcher.cancel()
                for follower in followed.values():
                    follower.cancel()
                return await self._interrupted(client, interrupted.result(), root)
            # the log ends shortly after the action: print all of it before the result
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*followed.values(), return_exceptions=True), _LOG_DRAIN_S
                )
            return await self._finished(client, root.result())
        finally:
            for pending in (root, watcher, interrupted, *followed.values()):
                pending.cancel()
            await asyncio.gather(root, watcher, interrupted, *followed.values(),
                                 return_exceptions=True)  # fmt: skip
            self._stop_status()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    # -- output as it is written --------------------------------------------------------------

    async def _logs(self, client: Client, action: str) -> None:
        """Print one action's lines as they come, through its retries, until it ends."""

        def retry(number: int) -> None:
            self._print_note(f"--- {action} attempt {number} ---")

        try:
            async for line in action_lines(
                client, self.run, action, follow=True, live=True, on_attempt=retry
            ):
                self._print_line(line)
                if action == ROOT_ACTION and line.line.startswith("Traceback (most recent"):
                    self.root_log_shown = True
        except ApiError as e:  # the log is a view: its failure does not end the run's follow
            self._print_note(f"(the log of {action} broke off: {e})")
            self.root_log_shown = False

    def _print_line(self, line: LogLine) -> None:
        prefix = f"{line.action} | " if self.opts["follow_all"] or not self.terminal else ""
        stamp = "" if self.terminal else f"{clock(line.at)} "
        self.out.write(f"{stamp}{prefix}{line.line}\n")
        self.out.flush()

    def _print_note(self, text: str) -> None:
        stamp = "" if self.terminal else f"{clock(datetime.now(UTC))} "
        self.err.print(f"{stamp}{text}", markup=False, soft_wrap=True)

    async def _watch(self, client: Client, followed: dict[str, asyncio.Task[None]]) -> None:
        """Follow the run's events (from its first, so a run already going is caught up):
        counts on the progress line, interactive sessions' links, every action's log with
        --follow-all, and (without a terminal) the root's phase changes and failures."""
        phases: dict[str, str] = {}
        announced: set[str] = set()
        after: int | None = None
        while True:
            try:
                async for event in client.events(self.run, after=after):
                    after = event.seq
                    if event.kind != "action" or event.action is None:
                        continue
                    name = event.action
                    changed = phases.get(name) != event.phase
                    notable = name == ROOT_ACTION or event.phase == Phase.FAILED
                    if changed and notable and not self.terminal:
                        self._print_note(f"action {name} {event.phase}")
                    phases[name] = event.phase
                    if self.opts["follow_all"] and name not in followed:
                        followed[name] = asyncio.create_task(self._logs(client, name))
                    if event.phase == Phase.INTERACTIVE:
                        await self._announce(client, name, announced)
                    if self.status is not None:
                        counts = collections.Counter(phases.values())
                        summary = ", ".join(f"{n} {p.lower()}" for p, n in sorted(counts.items()))
                        self.status.update(f"run {self.run}: {summary}  (Ctrl-C to stop)")
            except ApiError:
                pass  # the stream broke (a server restart?): the root's long-poll says if over
            await asyncio.sleep(1.0)  # and then pick up after the last event seen

    async def _announce(self, client: Client, name: str, announced: set[str]) -> None:
        action = await client.get_action(self.run, name)
        session = action.session
        if action.phase == Phase.INTERACTIVE and session and session.id not in announced:
            announced.add(session.id)
            try:  # a one-time link into it: sessions have their own origin and sign-in
                link = (await client.open_session(self.run, name)).url
            except ApiError as e:
                link = f"(cannot open it: {e}; try `loom open {self.run} {name}`)"
            self.err.print(
                f"interactive {session.kind} session for action {name}: {link}\n"
                f"  open it again with `loom open {self.run} {name}`; resume with "
                f"`loom resume {self.run} {name}`",
                markup=False,
                soft_wrap=True,  # a link broken across lines cannot be clicked or copied
            )

    def _stop_status(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None

    # -- Ctrl-C -------------------------------------------------------------------------------

    async def _interrupted(
        self, client: Client, sig: int, root: asyncio.Task[wire.ActionInfo]
    ) -> RunExit:
        self._stop_status()
        ask = self.terminal and sig == signal.SIGINT and sys.stdin.isatty()
        if ask and await self._wants_abort():
            await client.abort_run(self.run)
            self.err.print(f"aborting run {self.run} …")
            with contextlib.suppress(TimeoutError):
                ended = await asyncio.wait_for(root, 30)
                return await self._finished(client, ended)
            return RunExit.ABORTED
        self.err.print(
            f"\ndetached from run {self.run}: it goes on on the server.\n"
            f"  follow it:  loom get logs {self.run} --follow   (or loom get run {self.run})\n"
            f"  abort it:   loom abort run {self.run}",
            markup=False,
        )
        if self.output.for_scripts:
            emit({"run": self.run, "phase": "DETACHED"}, self.output)
        return RunExit.DETACHED

    async def _wants_abort(self) -> bool:
        """Ask on the terminal; a second Ctrl-C is a yes."""
        self.err.print(f"\nabort the run {self.run}? [y/N] ", end="", markup=False)
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[str] = loop.create_future()

        def read() -> None:  # a daemon thread: an unanswered prompt must not hold up the exit
            line = sys.stdin.readline()
            loop.call_soon_threadsafe(_settle(answer), line)

        threading.Thread(target=read, daemon=True).start()
        again: asyncio.Future[Any] = asyncio.ensure_future(self.signals.get())
        waiting: list[asyncio.Future[Any]] = [answer, again]
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            again.cancel()
        if not answer.done():
            self.err.print("(Ctrl-C again: aborting)")
            return True
        return answer.result().strip().lower() in ("y", "yes")

    # -- the end --------------------------------------------------------------------------------

    async def _finished(self, client: Client, root: wire.ActionInfo) -> RunExit:
        self._stop_status()
        run = await client.get_run(self.run)
        value = None
        if root.phase == Phase.SUCCEEDED:
            value = (await client.get_outputs(self.run, ROOT_ACTION)).value
        self._print_result(run, root, value)
        return _EXIT_FOR_PHASE.get(root.phase, RunExit.FAILED)

    def _print_result(self, run: wire.RunInfo, root: wire.ActionInfo, value: Any) -> None:
        took = f" in {time.monotonic() - self.started:.1f} s"
        if self.output.for_scripts:
            doc: dict[str, Any] = {
                "run": run.name, "task": self.task.name, "phase": root.phase, "url": self._url(),
                "actions": run.actions,
            }  # fmt: skip
            if root.phase == Phase.SUCCEEDED:
                decoded = self.task.interface.output.decode(value, None)
                doc["outputs"] = encode_outputs(self.task, decoded)
            elif root.error is not None:
                doc["error"] = root.error.model_dump(exclude={"pickled"})
                doc["error"]["traceback"] = trim_traceback_text(root.error.traceback)
            emit(doc, self.output)
            return
        if root.phase == Phase.SUCCEEDED:
            decoded = self.task.interface.output.decode(value, None)
            if decoded is not None:
                click.echo(decoded if isinstance(decoded, str) else repr(decoded))
            self.err.print(f"[green]run {run.name} succeeded[/]{took} ({run.actions} action(s))")
            return
        if root.error is not None and root.error.traceback and not self.root_log_shown:
            self.err.print(trim_traceback_text(root.error.traceback).rstrip(), markup=False)
        message = f"{root.error.type}: {root.error.message}" if root.error else root.phase
        self.err.print(f"[red]run {run.name} {root.phase.lower()}{took}: {message}[/]")
        self.err.print(f"see the logs with `loom get logs {run.name}`", markup=False)

    def _url(self) -> str:
        from ..remote._common import run_url

        return run_url(self.settings, self.run)


def _settle(future: asyncio.Future[str]) -> Callable[[str], None]:
    def settle(value: str) -> None:
        if not future.done():
            future.set_result(value)

    return settle
