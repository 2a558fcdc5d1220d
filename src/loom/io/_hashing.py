"""``HashFunction``: a user-chosen hash for a file's content, used as its cache key."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

_CHUNK = 1 << 20


@runtime_checkable
class HashMethod(Protocol):
    """Anything that takes data with ``update`` and gives a hex string with ``result``
    (a :class:`HashFunction`, or an accumulator wrapping a ``hashlib`` object)."""

    def update(self, data: Any, /) -> None: ...

    def result(self) -> str: ...


class HashFunction:
    """A hash computed by a function of the whole content.

    ``File.from_local(path, hash_method=HashFunction.from_fn(fn))`` sets the file's ``hash`` to
    ``fn(content)``, and that hash (not the content) then keys cached calls the file is passed
    to. ``update`` replaces the value: the function sees all the data at once.
    """

    def __init__(self, fn: Callable[[Any], str]) -> None:
        self._fn = fn
        self._value: str | None = None

    @classmethod
    def from_fn(cls, fn: Callable[[Any], str]) -> HashFunction:
        """A :class:`HashFunction` that calls ``fn``."""
        return cls(fn)

    def update(self, data: Any, /) -> None:
        """Hash ``data`` (replacing any earlier value)."""
        self._value = self._fn(data)

    def result(self) -> str:
        """The hash of the data last given to :meth:`update`."""
        if self._value is None:
            raise ValueError("HashFunction.result() before any update(): nothing was hashed")
        return self._value


def split_hash_method(method: HashMethod | str | None) -> tuple[str | None, HashMethod | None]:
    """A precomputed hash (a string is one) or a method to compute it with."""
    if method is None or isinstance(method, str):
        return method, None
    if not isinstance(method, HashMethod):
        raise TypeError(
            f"hash_method must be a str or have update() and result(), not {type(method).__name__}"
        )
    return None, method


def hash_file_with(path: str | os.PathLike[str], method: HashMethod) -> str:
    """``method``'s hash of a file's content."""
    with open(path, "rb") as f:
        if isinstance(method, HashFunction):
            # a function of the whole content: fed in one piece, or only the last chunk counts
            method.update(f.read())
        else:
            while chunk := f.read(_CHUNK):
                method.update(chunk)
    return str(method.result())
