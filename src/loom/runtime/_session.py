"""An interactive attempt: open an IDE on the task's workspace, wait, resume or end.

The sequence, for an action whose task spec is interactive (``@vscode``, ``@jupyter`` or
``--debug``):

1. with ``run_task_first``, the body runs first and the session opens only if it raised (the
   traceback goes to the log and to ``loom_error.txt`` in the workspace); if it succeeded,
   that is the attempt's result, and neither hook runs (no IDE opens); then ``pre_execute``;
2. a fresh workspace outside the user's source tree: a copy of the code bundle, the real
   inputs, a debug entrypoint, launch configurations, or a notebook;
3. the IDE starts on a private Unix socket, its output streaming into the log; once it answers
   there, and not before, the session is registered with the server (the action shows
   INTERACTIVE and the session's proxied URL, which works from that moment);
4. the runtime long-polls the server for what to do: **resume** re-imports the task from the
   workspace (so edits count) and runs it with the original inputs; if that fails to import or
   raises, the error goes back to whoever asked and the session stays open; **fail** ends the
   session and fails the action; **idle** (no proxied activity for ``max_idle_seconds``) and
   **abort** end it too; an IDE that exits by itself fails the action with its log;
5. ``post_execute`` runs exactly once whatever the ending, then the IDE and everything it
   started are stopped, and the server hears why the session ended. The edits made in the
   session are printed to the log as a diff, so no work is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import secrets
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import wire
from .._controller._remote import RemoteRun, error_info
from .._settings import Settings
from .._task import TaskTemplate
from ..errors import (
    ApiError,
    AuthenticationError,
    IdeInstallError,
    LoomError,
    TaskLoadError,
)
from ..interactive._decorators import Interactive, interactive_of
from ..interactive._ide import (
    IdeProcess,
    IdeStartError,
    ensure_extensions,
    start_jupyter,
    start_vscode,
)
from ..interactive._workspace import diff_workspace, prepare_workspace
from ..remote import Client

_ERROR_FILE = "loom_error.txt"


class InteractiveSessionError(LoomError):
    """An interactive session ended without the task succeeding (idle, given up, IDE died)."""


def _say(message: str) -> None:
    print(f"[loom] {message}", file=sys.stderr, flush=True)


class Session:
    """One interactive attempt of one action."""

    def __init__(
        self,
        client: Client,
        settings: Settings,
        spec: wire.ActionSpec,
        task: TaskTemplate[Any, Any],
        host: RemoteRun,
        bundle: Path,
    ) -> None:
        assert spec.task.interactive is not None
        self.client = client
        self.settings = settings
        self.spec = spec
        self.interactive: wire.InteractiveSpec = spec.task.interactive
        self.options: Interactive | None = interactive_of(task)
        self.task = task
        self.host = host
        self.bundle = bundle
        self.ide: IdeProcess | None = None
        self.workspace: Path | None = None
        self._post_done = False

    # -- the whole attempt ------------------------------------------------------------------

    async def run(self) -> wire.AttemptResult:
        first_error: BaseException | None = None
        if self.interactive.run_task_first:
            _say("running the task first (run_task_first): a session opens only if it fails")
            try:
                value = await self.host.execute(self.task, self._inputs(self.task))
                return await self._success(self.task, value)
            except Exception as e:
                first_error = e
                _say("the task failed; opening an interactive session to debug it:")
                traceback.print_exception(e, file=sys.stderr)
        # The hooks frame the IDE (the seeds: pre_execute "immediately before the VSCode server
        # setup begins", post_execute "just before the VSCode server terminates"), so a task
        # that succeeded on its first run, which opens no IDE, runs neither.
        pre = self.options.pre_execute if self.options else None
        if pre is not None:
            _say("running pre_execute")
            await _call_hook(pre)
        try:
            return await self._session(first_error)
        finally:
            await self._post_execute()
            self._log_diff()

    async def _post_execute(self) -> None:
        post = self.options.post_execute if self.options else None
        if post is not None and not self._post_done:
            self._post_done = True  # exactly once, whatever the ending
            _say("running post_execute")
            try:
                await _call_hook(post)
            except Exception as e:
                _say(f"post_execute failed: {type(e).__name__}: {e}")

    # -- the session --------------------------------------------------------------------------

    async def _session(self, first_error: BaseException | None) -> wire.AttemptResult:
        spec = self.spec
        workspace = self.settings.home / "sessions" / f"{spec.run}.{spec.action}.{spec.attempt}"
        shutil.rmtree(workspace, ignore_errors=True)
        # the server made one for this attempt (the proxy connects nowhere else); a temporary
        # one otherwise (short: it holds a socket)
        session_dir = self.settings.session_dir or Path(tempfile.mkdtemp(prefix="loom-ide-"))
        try:
            return await self._open(workspace, session_dir, first_error)
        except (IdeInstallError, IdeStartError) as e:
            # another attempt would fail the same way: a system error, which is not retried
            _say(f"cannot open the interactive session: {e}")
            await self._stopped(f"the IDE did not start: {e}")
            return wire.AttemptResult(error=error_info(e, "system"))
        finally:
            if self.ide is not None:
                await self.ide.stop()
            shutil.rmtree(session_dir, ignore_errors=True)

    async def _open(
        self, workspace: Path, session_dir: Path, first_error: BaseException | None
    ) -> wire.AttemptResult:
        spec, kind = self.spec, self.interactive.kind
        extensions: Path | None = None
        debug_type = "loom-python"
        if kind == "vscode":
            config = self.options.config if self.options else None
            extensions, debug_type = await asyncio.to_thread(
                ensure_extensions, config, self.settings.ide_dir, _say
            )
        ws = prepare_workspace(
            workspace,
            self.bundle,
            spec.task.module,
            spec.task.attr,
            spec.inputs,
            python=sys.executable,
            session={
                "endpoint": self.client.endpoint,
                "run": spec.run,
                "action": spec.action,
                "attempt": spec.attempt,
                "bundle": str(self.bundle),
                "workspace": str(workspace),
            },
            kind=kind,
            notebook_dir=self.interactive.notebook_dir,
            debug_type=debug_type,
        )
        self.workspace = ws.root
        if first_error is not None:
            _write_error(ws.root, first_error, "The task failed before the session opened")
        # Jupyter only answers requests with this; the proxy adds it, nobody else sees it
        token = secrets.token_urlsafe(32) if kind == "jupyter" else None
        # Jupyter must know its URL before it starts, and it starts before the server hears of
        # the session: so the id is ours (the server's proxy serves /sessions/<id>/)
        session_id = secrets.token_urlsafe(18) if kind == "jupyter" else None
        base_url = f"/sessions/{session_id}/"
        socket = session_dir / "ide.sock"
        env = dict(os.environ)
        env["LOOM_SESSION_FILE"] = str(ws.session)
        if kind == "vscode":
            assert extensions is not None
            self.ide = await start_vscode(
                ws.root,
                session_dir,
                config=self.options.config if self.options else None,
                ide_dir=self.settings.ide_dir,
                env=env,
                output=_say_raw,
                extensions_dir=extensions,
            )
        else:
            root_dir = ws.notebook.parent if ws.notebook is not None else ws.root
            self.ide = await start_jupyter(
                ws.root,
                session_dir,
                base_url=base_url,
                root_dir=root_dir,
                python=sys.executable,
                token=token or "",
                open_file=ws.notebook.name if ws.notebook is not None else None,
                ide_dir=self.settings.ide_dir,
                env=env,
                output=_say_raw,
            )
        # Registered only once the IDE answers on its socket: registering is what makes the
        # session ready (the action INTERACTIVE, its event, the printed link, the UI's Open
        # button), and a link that answers 502 while the IDE boots is not ready.
        await self.ide.wait_ready()
        info = await self.client.register_session(
            spec.run,
            spec.action,
            wire.SessionRegister(
                id=session_id,
                attempt=spec.attempt,
                kind=kind,
                socket=str(socket),
                token=token,
                max_idle_seconds=self.interactive.max_idle_seconds,
                workspace=str(ws.root),
            ),
        )
        if session_id is not None and info.url != base_url:
            raise IdeStartError(
                f"the server serves this session at {info.url}, but JupyterLab was started for "
                f"{base_url}; the server and this runtime disagree on session URLs (versions?)"
            )
        limit = self.interactive.max_idle_seconds
        _say(
            f"interactive {kind} session ready at {info.origin}{info.url}: open it from the UI "
            f"or with `loom open {spec.run} {spec.action}` (workspace {ws.root}; "
            + ("no idle limit)" if limit is None else f"ends after {limit:g} s idle)")
        )
        _say(f"resume with `loom resume {spec.run} {spec.action}` or from the IDE")
        return await self._wait(first_error)

    async def _wait(self, first_error: BaseException | None) -> wire.AttemptResult:
        assert self.ide is not None and self.workspace is not None
        spec = self.spec
        died = asyncio.create_task(self.ide.wait())
        try:
            while True:
                poll = asyncio.create_task(self.client.session_command(spec.run, spec.action))
                done, _ = await asyncio.wait({poll, died}, return_when=asyncio.FIRST_COMPLETED)
                if died in done:
                    poll.cancel()
                    return await self._ide_died(died.result())
                try:
                    command = poll.result()
                except AuthenticationError:
                    # the attempt's credential died with the attempt: the server ended it
                    command = wire.SessionCommand(command="abort")
                except ApiError as e:
                    _say(f"cannot reach the server for session commands ({e}); retrying")
                    await asyncio.sleep(1)
                    continue
                if command.command == "resume":
                    result = await self._resume(command.id)
                    if result is not None:
                        return result
                elif command.command == "fail":
                    await self._outcome(command.id, ok=True)
                    return await self._end(
                        "ended from the session without resuming",
                        first_error
                        or InteractiveSessionError(
                            "the interactive session was ended without resuming the task"
                        ),
                    )
                elif command.command == "idle":
                    limit = self.interactive.max_idle_seconds or 0
                    return await self._end(
                        f"idle for {limit:g} s",
                        InteractiveSessionError(f"interactive session idle for {limit:g} s"),
                    )
                elif command.command == "abort":
                    return await self._end(
                        "aborted", InteractiveSessionError("the action was aborted"), "aborted"
                    )
        finally:
            died.cancel()

    async def _resume(self, request: int) -> wire.AttemptResult | None:
        """Run the task as edited in the workspace; ``None`` if it failed (the session stays)."""
        assert self.workspace is not None
        _say("resuming: re-importing the task from the workspace")
        try:
            task = load_from_workspace(
                self.workspace, self.bundle, self.spec.task.module, self.spec.task.attr
            )
            value = await self.host.execute(task, self._inputs(task))
            result = await self._success(task, value)
        except Exception as e:
            _say("resume failed; the session stays open: fix the code and resume again")
            traceback.print_exception(e, file=sys.stderr)
            _write_error(self.workspace, e, "Resuming the task failed")
            await self._outcome(request, ok=False, error=error_info(e))
            return None
        await self._outcome(request, ok=True)
        await self._post_execute()  # before the IDE goes: a hook may still want it
        await self._stopped("resumed")
        _say("resumed task succeeded; session closed")
        return result

    async def _ide_died(self, code: int) -> wire.AttemptResult:
        name = "code-server" if self.interactive.kind == "vscode" else "JupyterLab"
        return await self._end(
            f"the IDE exited with code {code}",
            InteractiveSessionError(
                f"{name} exited by itself with code {code}; the task was not run "
                "(its output is in this action's log)"
            ),
        )

    async def _end(
        self, reason: str, error: BaseException, kind: str = "system"
    ) -> wire.AttemptResult:
        _say(f"interactive session ended: {reason}")
        await self._post_execute()
        await self._stopped(reason)
        return wire.AttemptResult(error=error_info(error, kind))

    async def _stopped(self, reason: str) -> None:
        if self.ide is not None:
            await self.ide.stop()
        with contextlib.suppress(ApiError):
            await self.client.session_ended(self.spec.run, self.spec.action, reason)

    async def _outcome(self, request: int, ok: bool, error: wire.ErrorInfo | None = None) -> None:
        with contextlib.suppress(ApiError):
            await self.client.session_outcome(
                self.spec.run, self.spec.action, wire.ResumeOutcome(id=request, ok=ok, error=error)
            )

    # -- helpers ------------------------------------------------------------------------------

    def _inputs(self, task: TaskTemplate[Any, Any]) -> dict[str, Any]:
        return task.interface.decode_inputs(self.spec.inputs, self.host.data)

    async def _success(self, task: TaskTemplate[Any, Any], value: Any) -> wire.AttemptResult:
        """The outputs, once the data they refer to (File, Dir) is in the object store."""
        encoded = task.interface.output.encode(value, self.host.data)
        await self.host.data.flush(self.client)
        return wire.AttemptResult(outputs=wire.Outputs(value=encoded))

    def _log_diff(self) -> None:
        if self.workspace is None:
            return
        try:
            diff = diff_workspace(self.bundle, self.workspace)
        except Exception as e:
            _say(f"cannot compute the session's edits: {e}")
            return
        if diff.strip():
            _say(
                f"edits made in the session (also: `loom session diff {self.spec.run} "
                f"{self.spec.action}`):\n{diff}"
            )


def _say_raw(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def _call_hook(hook: Callable[[], Any]) -> None:
    result = await asyncio.to_thread(hook)
    if asyncio.iscoroutine(result):
        await result


def _write_error(workspace: Path, error: BaseException, title: str) -> None:
    text = f"{title}:\n\n" + "".join(traceback.format_exception(error))
    (workspace / _ERROR_FILE).write_text(text)
    manifest = workspace / ".loom" / "workspace.json"
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(manifest.read_text())
        generated = list(data.get("generated", []))
        if _ERROR_FILE not in generated:  # not one of the user's edits
            data["generated"] = [*generated, _ERROR_FILE]
            manifest.write_text(json.dumps(data, indent=2))


def load_from_workspace(
    workspace: Path, bundle: Path, module: str, attr: str
) -> TaskTemplate[Any, Any]:
    """Import the task afresh from ``workspace``: every module loaded from the bundle or the
    workspace is forgotten first, so the edits (in any of them) take effect."""
    roots = [os.path.realpath(bundle), os.path.realpath(workspace)]

    def ours(path: str | None) -> bool:
        if not path:
            return False
        real = os.path.realpath(path)
        return any(real == r or real.startswith(r + os.sep) for r in roots)

    for name, mod in list(sys.modules.items()):
        if ours(getattr(mod, "__file__", None)):
            del sys.modules[name]
    sys.path[:] = [p for p in sys.path if not ours(p)]
    sys.path.insert(0, str(workspace))
    importlib.invalidate_caches()
    try:
        loaded = importlib.import_module(module)
    except Exception as e:
        raise TaskLoadError(
            f"cannot import {module!r} from the session's workspace: {type(e).__name__}: {e}"
        ) from e
    task = getattr(loaded, attr, None)
    if not isinstance(task, TaskTemplate):
        raise TaskLoadError(f"module {module!r} in the workspace has no task named {attr!r}")
    return task
