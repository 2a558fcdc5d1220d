"""Methods offered both ways, as Flyte 2's remote objects offer them: ``obj.method(...)``
blocks, ``await obj.method.aio(...)`` does not. Iterating methods give an iterator, or with
``.aio`` an async iterator."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, Concatenate, Generic, ParamSpec, Self, TypeVar, cast, overload

from .._sync import run_sync

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
S = TypeVar("S")


class Bound(Generic[P, R]):
    """A coroutine function bound to its object: call it to block, ``.aio`` to await it."""

    def __init__(self, fn: Callable[P, Coroutine[Any, Any, R]], doc: str | None) -> None:
        self._fn = fn
        self.__doc__ = doc

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return run_sync(self._fn(*args, **kwargs))

    def aio(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
        """The same call, to await."""
        return self._fn(*args, **kwargs)


class BoundIter(Generic[P, T]):
    """An async generator function bound to its object: call it for an iterator (of every
    item, gathered when it is first iterated, as Flyte 2's are lazy), ``.aio`` for an async
    iterator."""

    def __init__(self, fn: Callable[P, AsyncIterator[T]], doc: str | None) -> None:
        self._fn = fn
        self.__doc__ = doc

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
        async def gather() -> list[T]:
            return [item async for item in self._fn(*args, **kwargs)]

        def lazily() -> Iterator[T]:
            yield from run_sync(gather())

        return lazily()

    def aio(self, *args: P.args, **kwargs: P.kwargs) -> AsyncIterator[T]:
        """The same call, as an async iterator."""
        return self._fn(*args, **kwargs)


class syncmethod(Generic[S, P, R]):
    """Decorate an ``async def`` method to offer it sync and with ``.aio``."""

    def __init__(self, fn: Callable[Concatenate[S, P], Coroutine[Any, Any, R]]) -> None:
        self._fn = fn
        self.__doc__ = fn.__doc__

    @overload
    def __get__(self, obj: None, owner: type[Any] | None = None) -> Self: ...
    @overload
    def __get__(self, obj: S, owner: type[Any] | None = None) -> Bound[P, R]: ...
    def __get__(self, obj: S | None, owner: type[Any] | None = None) -> Self | Bound[P, R]:
        if obj is None:
            return self
        bound = cast(Callable[P, Coroutine[Any, Any, R]], functools.partial(self._fn, obj))
        return Bound(bound, self._fn.__doc__)


class syncclassmethod(Generic[S, P, R]):
    """Decorate an ``async def`` function of ``cls`` to offer it as a class method, sync and
    with ``.aio``."""

    def __init__(self, fn: Callable[Concatenate[type[S], P], Coroutine[Any, Any, R]]) -> None:
        self._fn = fn
        self.__doc__ = fn.__doc__

    def __get__(self, obj: object, owner: type[S]) -> Bound[P, R]:
        bound = cast(Callable[P, Coroutine[Any, Any, R]], functools.partial(self._fn, owner))
        return Bound(bound, self._fn.__doc__)


class synciter(Generic[S, P, T]):
    """Decorate an async generator method to offer it as an iterator and with ``.aio``."""

    def __init__(self, fn: Callable[Concatenate[S, P], AsyncIterator[T]]) -> None:
        self._fn = fn
        self.__doc__ = fn.__doc__

    @overload
    def __get__(self, obj: None, owner: type[Any] | None = None) -> Self: ...
    @overload
    def __get__(self, obj: S, owner: type[Any] | None = None) -> BoundIter[P, T]: ...
    def __get__(self, obj: S | None, owner: type[Any] | None = None) -> Self | BoundIter[P, T]:
        if obj is None:
            return self
        bound = cast(Callable[P, AsyncIterator[T]], functools.partial(self._fn, obj))
        return BoundIter(bound, self._fn.__doc__)


class synciterclassmethod(Generic[S, P, T]):
    """Decorate an async generator function of ``cls`` to offer it as a class method that
    gives an iterator, and with ``.aio`` an async iterator."""

    def __init__(self, fn: Callable[Concatenate[type[S], P], AsyncIterator[T]]) -> None:
        self._fn = fn
        self.__doc__ = fn.__doc__

    def __get__(self, obj: object, owner: type[S]) -> BoundIter[P, T]:
        bound = cast(Callable[P, AsyncIterator[T]], functools.partial(self._fn, owner))
        return BoundIter(bound, self._fn.__doc__)
