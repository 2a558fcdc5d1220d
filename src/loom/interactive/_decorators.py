"""``@vscode`` and ``@jupyter``: mark a task to run as an interactive session on the platform.

The decorators only record options on the task. Locally, or with ``enable=False``, nothing
changes: the body runs as usual, with no IDE, no hooks and no files. On the control plane the
runtime reads the options, opens the session, and runs the body when the user resumes.
Both work bare or with arguments, above or below ``@env.task``, on sync and async tasks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, overload

from .._task import TaskTemplate
from ..errors import TaskDefinitionError
from ._config import VscodeConfig

__all__ = ["Interactive", "interactive_of", "jupyter", "vscode"]

T = TypeVar("T")

#: The attribute under which a plain function carries its options until ``@env.task`` sees it.
_MARK = "__loom_interactive__"


@dataclass(frozen=True, slots=True)
class Interactive:
    """What ``@vscode``/``@jupyter`` recorded on a task."""

    kind: Literal["vscode", "jupyter"]
    max_idle_seconds: float | None = 36000
    port: int = 8080
    run_task_first: bool = False
    pre_execute: Callable[[], Any] | None = None
    post_execute: Callable[[], Any] | None = None
    config: VscodeConfig | None = None
    notebook_dir: str | None = None

    def __post_init__(self) -> None:
        if self.max_idle_seconds is not None and not self.max_idle_seconds > 0:
            raise TaskDefinitionError(
                f"max_idle_seconds must be positive or None (never time out), "
                f"got {self.max_idle_seconds!r}"
            )
        if not 0 < self.port < 65536:
            raise TaskDefinitionError(f"port must be between 1 and 65535, got {self.port!r}")
        for name in ("pre_execute", "post_execute"):
            hook = getattr(self, name)
            if hook is not None and not callable(hook):
                raise TaskDefinitionError(f"{name} must be a callable with no arguments")


def interactive_of(task: TaskTemplate[Any, Any]) -> Interactive | None:
    """The interactive options of ``task``, if it was decorated (and enabled)."""
    options = getattr(task, "interactive", None)
    return options if isinstance(options, Interactive) else None


def _apply(target: T, options: Interactive | None) -> T:
    if options is None:  # enable=False: the task stays exactly as it was
        return target
    if isinstance(target, TaskTemplate):
        target.interactive = options
    elif callable(target):
        setattr(target, _MARK, options)  # @env.task below picks it up
    else:
        raise TaskDefinitionError(f"@{options.kind} needs a task or a function, got {target!r}")
    return target


@overload
def vscode(fn: T, /) -> T: ...
@overload
def vscode(
    *,
    max_idle_seconds: float | None = 36000,
    port: int = 8080,
    enable: bool = True,
    run_task_first: bool = False,
    pre_execute: Callable[[], Any] | None = None,
    post_execute: Callable[[], Any] | None = None,
    config: VscodeConfig | None = None,
) -> Callable[[T], T]: ...
def vscode(
    fn: Any = None,
    /,
    *,
    max_idle_seconds: float | None = 36000,
    port: int = 8080,
    enable: bool = True,
    run_task_first: bool = False,
    pre_execute: Callable[[], Any] | None = None,
    post_execute: Callable[[], Any] | None = None,
    config: VscodeConfig | None = None,
) -> Any:
    """Run the task as a VS Code (code-server) session on the platform.

    The session opens in a workspace holding the task's code and its real inputs, with launch
    configurations "Interactive Debugging" (run the task under the debugger) and "Resume Task"
    (run it for real and let the run continue). ``max_idle_seconds=None`` never times out;
    ``run_task_first`` runs the body first and opens the session only if it raises;
    ``pre_execute``/``post_execute`` run once before the session opens and once when it ends
    (neither runs when ``run_task_first`` finds nothing to debug: no session opens).
    ``port`` is accepted for compatibility: loom binds the IDE to a private Unix socket and
    reaches it through the server's authenticated proxy, never through a port.
    """
    options = (
        Interactive(
            "vscode",
            max_idle_seconds,
            port,
            run_task_first,
            pre_execute,
            post_execute,
            config or VscodeConfig(),
        )
        if enable
        else None
    )
    if fn is not None:
        return _apply(fn, options)
    return lambda target: _apply(target, options)


@overload
def jupyter(fn: T, /) -> T: ...
@overload
def jupyter(
    *,
    max_idle_seconds: float | None = 36000,
    port: int = 8888,
    enable: bool = True,
    run_task_first: bool = False,
    notebook_dir: str | None = None,
    pre_execute: Callable[[], Any] | None = None,
    post_execute: Callable[[], Any] | None = None,
) -> Callable[[T], T]: ...
def jupyter(
    fn: Any = None,
    /,
    *,
    max_idle_seconds: float | None = 36000,
    port: int = 8888,
    enable: bool = True,
    run_task_first: bool = False,
    notebook_dir: str | None = None,
    pre_execute: Callable[[], Any] | None = None,
    post_execute: Callable[[], Any] | None = None,
) -> Any:
    """Run the task as a JupyterLab session on the platform.

    The session opens a generated notebook that imports the task, loads its real inputs, runs
    it, and ends with a ``resume()`` cell. ``notebook_dir`` (relative to the session's
    workspace, or absolute) is where the notebook goes and JupyterLab starts. Other arguments
    as for :func:`vscode`.
    """
    options = (
        Interactive(
            "jupyter",
            max_idle_seconds,
            port,
            run_task_first,
            pre_execute,
            post_execute,
            None,
            notebook_dir,
        )
        if enable
        else None
    )
    if fn is not None:
        return _apply(fn, options)
    return lambda target: _apply(target, options)
