"""Commands for inside a session: resume the task, give up, abort, or ask for the status.

They find their session through ``LOOM_SESSION_FILE`` (set for everything the IDE starts:
terminals, kernels, debug sessions) or a ``.loom/session.json`` above the working directory,
and talk to the control plane with the action's own endpoint and key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import wire
from .._settings import Settings
from .._sync import run_sync
from ..errors import ConfigError, LoomError
from ..remote import Client

__all__ = ["ResumeError", "SessionTarget", "abort", "find_session", "resume", "status"]


class ResumeError(LoomError):
    """The resumed task could not be imported or raised; the session is still open."""


@dataclass(frozen=True)
class SessionTarget:
    endpoint: str
    api_key: str | None
    run: str
    action: str
    workspace: Path
    bundle: Path | None


def find_session(settings: Settings | None = None) -> SessionTarget:
    """The session this process runs in."""
    settings = settings or Settings.load()
    path = settings.session_file
    if path is None:
        here = Path.cwd().resolve()
        for directory in (here, *here.parents):
            candidate = directory / ".loom" / "session.json"
            if candidate.is_file():
                path = candidate
                break
    if path is None:
        raise ConfigError(
            "not inside an interactive session: no LOOM_SESSION_FILE and no .loom/session.json "
            "here or above; from elsewhere use `loom resume RUN ACTION`"
        )
    try:
        data: dict[str, Any] = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read the session file {path}: {e}") from e
    return SessionTarget(
        endpoint=settings.endpoint or data["endpoint"],
        api_key=settings.api_key,
        run=data["run"],
        action=data["action"],
        workspace=Path(data.get("workspace") or Path(path).parent.parent),
        bundle=Path(data["bundle"]) if data.get("bundle") else None,
    )


async def _resume(target: SessionTarget, fail: bool) -> wire.ResumeOutcome:
    async with Client(target.endpoint, target.api_key) as client:
        return await client.resume_session(target.run, target.action, fail=fail)


def check_outcome(outcome: wire.ResumeOutcome) -> None:
    """Raise :class:`ResumeError` with the task's own traceback if the resume failed."""
    if outcome.ok:
        return
    error = outcome.error
    detail = (
        f"{error.type}: {error.message}\n{error.traceback}".rstrip() if error else "unknown error"
    )
    raise ResumeError(f"resuming the task failed; the session stays open.\n{detail}")


def resume(fail: bool = False) -> None:
    """Resume the task of the session this code runs in: re-import it from the workspace, run
    it with the original inputs, record its outputs and close the session.

    If the edited code does not import or raises, :class:`ResumeError` says why and the
    session stays open, so you can fix it and resume again. ``fail=True`` gives up instead:
    the action fails and the session closes.
    """
    check_outcome(run_sync(_resume(find_session(), fail)))


def abort() -> None:
    """Abort the session's action (and its children); the session closes."""
    target = find_session()

    async def go() -> None:
        async with Client(target.endpoint, target.api_key) as client:
            await client.abort_action(target.run, target.action)

    run_sync(go())


def status() -> wire.SessionInfo:
    """The session's state, URL and idle deadline."""
    target = find_session()

    async def go() -> wire.SessionInfo:
        async with Client(target.endpoint, target.api_key) as client:
            return await client.get_session(target.run, target.action)

    return run_sync(go())
