"""The handle ``async with file.open()`` gives: the file methods, awaitable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import IO, Any

#: Below this many bytes a call runs on the event loop: a thread costs more than the I/O.
_INLINE = 1 << 16


class AsyncFile:
    """An open local file whose I/O methods are coroutines (``await fh.read()``).

    Large reads and writes run in a worker thread so they do not hold up the event loop.
    ``async for line in fh`` iterates over lines; ``fh.raw`` is the underlying file object for
    libraries that want a synchronous one (``df.to_csv(fh.raw)``).
    """

    __slots__ = ("raw",)

    def __init__(self, raw: IO[Any]) -> None:
        self.raw = raw

    @property
    def name(self) -> Any:
        """The path the file was opened with."""
        return self.raw.name

    @property
    def mode(self) -> str:
        """The mode the file was opened in."""
        return self.raw.mode

    @property
    def closed(self) -> bool:
        """Whether the file is closed."""
        return self.raw.closed

    async def read(self, size: int = -1) -> Any:
        """Read up to ``size`` bytes (or characters); all that is left by default."""
        if 0 <= size < _INLINE:
            return self.raw.read(size)
        return await asyncio.to_thread(self.raw.read, size)

    async def readline(self, size: int = -1) -> Any:
        """Read one line."""
        return self.raw.readline(size)

    async def readlines(self, hint: int = -1) -> list[Any]:
        """Read the remaining lines."""
        return await asyncio.to_thread(self.raw.readlines, hint)

    async def write(self, data: Any) -> int:
        """Write ``data``; the number of bytes (or characters) written."""
        if len(data) < _INLINE:
            return int(self.raw.write(data))
        return int(await asyncio.to_thread(self.raw.write, data))

    async def writelines(self, lines: Iterable[Any]) -> None:
        """Write each of ``lines``."""
        await asyncio.to_thread(self.raw.writelines, lines)

    async def seek(self, offset: int, whence: int = 0) -> int:
        """Move to ``offset``; the new position."""
        return int(self.raw.seek(offset, whence))

    async def tell(self) -> int:
        """The current position."""
        return int(self.raw.tell())

    async def flush(self) -> None:
        """Flush buffered writes."""
        self.raw.flush()

    async def close(self) -> None:
        """Close the file (``async with`` does it on leaving)."""
        self.raw.close()

    async def __aiter__(self) -> AsyncIterator[Any]:
        while line := self.raw.readline():
            yield line

    def __repr__(self) -> str:
        return f"<AsyncFile {self.raw.name!r} mode={self.raw.mode!r}>"
