"""``loom.map``: call a task once per item of some iterables, concurrently, results in order.

Every mapped call goes through the task's ordinary call path (``task.aio``), so each one is an
action of the run, locally and on a server, with retries, caching and timeouts as usual.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from ._context import current_action, group
from ._task import TaskTemplate

if TYPE_CHECKING:
    import asyncio

R = TypeVar("R")

__all__ = ["map"]

_Mappable = TaskTemplate[Any, R] | functools.partial[R]


class _Mapper:
    """``loom.map(task, *iterables, ...)`` and ``loom.map.aio(...)``."""

    @overload
    def __call__(
        self,
        func: _Mappable[R],
        *iterables: Iterable[Any],
        group_name: str | None = None,
        concurrency: int = 0,
        return_exceptions: Literal[False],
    ) -> Iterator[R]: ...

    @overload
    def __call__(
        self,
        func: _Mappable[R],
        *iterables: Iterable[Any],
        group_name: str | None = None,
        concurrency: int = 0,
        return_exceptions: bool = True,
    ) -> Iterator[R | Exception]: ...

    def __call__(
        self,
        func: _Mappable[R],
        *iterables: Iterable[Any],
        group_name: str | None = None,
        concurrency: int = 0,
        return_exceptions: bool = True,
    ) -> Iterator[Any]:
        """Call ``func`` on each tuple of items of ``iterables`` (zipped, like ``map``) and
        yield the results in order, from sync code.

        ``func`` is a task or a ``functools.partial`` of one: the bound arguments stay fixed
        and the mapped items fill the next positional inputs. ``concurrency`` bounds how many
        calls run at once (0: all of them). With ``return_exceptions`` (the default, as in
        Flyte) a failed call yields its exception in its place; without, the first failure
        (in order) is raised and the calls still running are cancelled. The calls run in
        the task's group ``"<task name>_<group_name or 'map'>"``.
        """
        plan = _plan(func, iterables, group_name, concurrency)
        return _sync_iterate(plan, return_exceptions)

    @overload
    def aio(
        self,
        func: _Mappable[R],
        *iterables: Iterable[Any],
        group_name: str | None = None,
        concurrency: int = 0,
        return_exceptions: Literal[False],
    ) -> AsyncGenerator[R, None]: ...

    @overload
    def aio(
        self,
        func: _Mappable[R],
        *iterables: Iterable[Any],
        group_name: str | None = None,
        concurrency: int = 0,
        return_exceptions: bool = True,
    ) -> AsyncGenerator[R | Exception, None]: ...

    def aio(
        self,
        func: _Mappable[R],
        *iterables: Iterable[Any],
        group_name: str | None = None,
        concurrency: int = 0,
        return_exceptions: bool = True,
    ) -> AsyncGenerator[Any, None]:
        """:meth:`__call__` for async code: ``async for r in loom.map.aio(task, xs): ...``.

        Sync tasks run in worker threads, so mapping a sync task from an async one runs the
        calls concurrently too.
        """
        plan = _plan(func, iterables, group_name, concurrency)
        return _iterate(plan, return_exceptions)

    def __repr__(self) -> str:
        return "loom.map"


class _Plan:
    """What to call for each item: the task, its bound arguments, the group, the bound."""

    __slots__ = ("args", "concurrency", "group", "items", "kwargs", "task")

    def __init__(
        self,
        task: TaskTemplate[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        items: Iterator[tuple[Any, ...]],
        group: str,
        concurrency: int,
    ) -> None:
        self.task = task
        self.args = args
        self.kwargs = kwargs
        self.items = items
        self.group = group
        self.concurrency = concurrency

    def call(self, item: tuple[Any, ...]) -> Awaitable[Any]:
        """Start the call for ``item`` (an action of the run, in the map's group)."""
        with group(self.group):  # read when the call is made: its action joins the group
            return self.task.aio(*self.args, *item, **self.kwargs)


def _plan(
    func: _Mappable[Any], iterables: tuple[Iterable[Any], ...], group_name: str | None, limit: int
) -> _Plan:
    """Check the arguments up front, so a mistake raises where ``map`` is called."""
    if isinstance(func, functools.partial):
        task, args, kwargs = func.func, tuple(func.args), dict(func.keywords or {})
    else:
        task, args, kwargs = func, (), {}
    if not isinstance(task, TaskTemplate):
        raise TypeError(
            f"loom.map maps a task (or a functools.partial of one), not {type(task).__name__}"
        )
    if not isinstance(limit, int) or limit < 0:
        raise ValueError(f"concurrency must be an int >= 0 (0: no bound), got {limit!r}")
    if iterables:
        _check_mapped_inputs(task, len(args), len(iterables), kwargs)
    name = f"{task.name}_{group_name or 'map'}"  # Flyte's group name for a map
    return _Plan(task, args, kwargs, zip(*iterables, strict=False), name, limit)


def _check_mapped_inputs(
    task: TaskTemplate[Any, Any], bound: int, mapped: int, kwargs: dict[str, Any]
) -> None:
    # Mapped items go to the positional inputs after the bound ones: one already bound by
    # keyword would get two values (Flyte raises TypeError here too).
    positional = task.interface.positional
    targets = positional[bound : bound + mapped]
    if len(targets) < mapped:
        raise TypeError(
            f"loom.map over {mapped} iterable(s): task {task.name!r} has only "
            f"{len(positional) - bound} positional input(s) left to map over ({list(positional)})"
        )
    clash = [name for name in targets if name in kwargs]
    if clash:
        raise TypeError(
            f"loom.map: the mapped items go to input(s) {list(targets)} of task {task.name!r}, "
            f"but the partial binds {clash} by keyword already; bind the other inputs by "
            "keyword so that the mapped one comes first"
        )


async def _iterate(plan: _Plan, return_exceptions: bool) -> AsyncGenerator[Any, None]:
    """Start the calls in item order, at most ``plan.concurrency`` at once, and yield each
    result in order as soon as it and those before it are in."""
    import asyncio

    # Calls start in item order (action names are given in call order) but may end in any:
    # the starter hands each call's task over in order, the results are awaited in order.
    started: asyncio.Queue[asyncio.Future[Any] | None] = asyncio.Queue()
    calls: list[asyncio.Future[Any]] = []
    slots = asyncio.Semaphore(plan.concurrency) if plan.concurrency else None

    async def one(item: tuple[Any, ...]) -> Any:
        try:
            return await plan.call(item)
        finally:
            if slots is not None:
                slots.release()

    async def start_all() -> None:
        try:
            for item in plan.items:
                if slots is not None:
                    await slots.acquire()
                call = asyncio.ensure_future(one(item))
                calls.append(call)
                started.put_nowait(call)
        except Exception as e:  # an iterable that fails: its error comes after the results
            failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            failed.set_exception(e)
            started.put_nowait(failed)
        started.put_nowait(None)

    starter = asyncio.ensure_future(start_all())
    try:
        while (call := await started.get()) is not None:
            try:
                result = await call
            except Exception as e:
                if not return_exceptions:
                    raise
                result = e
            yield result
    finally:
        await _cancel([starter, *calls])


async def _cancel(tasks: list[asyncio.Future[Any]]) -> None:
    """Cancel what is still running (a failure, or the caller stopped early) and reap it."""
    import asyncio

    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _sync_iterate(plan: _Plan, return_exceptions: bool) -> Iterator[Any]:
    """Drive :func:`_iterate` from sync code: on the run's own loop where it has one that
    is not this thread's (a remote action batches its calls there), else on a private
    loop in a helper thread. Results come back one at a time."""
    import asyncio

    loop = _runs_loop()
    own = None
    if loop is None:
        own = loop = asyncio.new_event_loop()
        import threading

        threading.Thread(target=loop.run_forever, name="loom-map", daemon=True).start()
    stream = _iterate(plan, return_exceptions)

    def step() -> Any:
        # run_coroutine_threadsafe runs the step in a copy of this thread's context, so the
        # calls see the calling task (``loom.ctx()``) as their parent
        return asyncio.run_coroutine_threadsafe(_next(stream), loop).result()

    def close() -> None:
        asyncio.run_coroutine_threadsafe(stream.aclose(), loop).result()

    def results() -> Iterator[Any]:
        try:
            while (item := step()) is not _DONE:
                yield item
        finally:
            try:
                close()
            finally:
                if own is not None:
                    own.call_soon_threadsafe(own.stop)

    return results()


_DONE = object()


async def _next(stream: AsyncIterator[Any]) -> Any:
    try:
        return await anext(stream)
    except StopAsyncIteration:
        return _DONE


def _runs_loop() -> asyncio.AbstractEventLoop | None:
    """The running loop of the run that hosts the calling task, if it is not this thread's."""
    import asyncio

    action = current_action.get()
    loop: asyncio.AbstractEventLoop | None = getattr(action.run, "loop", None) if action else None
    if loop is None or not loop.is_running():
        return None
    try:
        mine = asyncio.get_running_loop()
    except RuntimeError:
        return loop
    return None if mine is loop else loop


map = _Mapper()  # Flyte's name: it shadows the builtin only as ``loom.map``
