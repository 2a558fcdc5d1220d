"""loom: a self-hostable workflow runtime for Python.

Write tasks as plain (sync or async) functions in a :class:`TaskEnvironment`, compose them with
plain Python, and run them with :func:`run`::

    import asyncio
    import loom

    env = loom.TaskEnvironment("hello")

    @env.task
    async def square(x: int) -> int:
        return x * x

    @env.task
    async def main(n: int = 3) -> list[int]:
        return await asyncio.gather(*(square(i) for i in range(n)))

    print(loom.run(main, n=4).outputs())
"""

from typing import TYPE_CHECKING, Any

from ._cache import Cache
from ._checkpoint import BaseCheckpoint, Checkpoint, latest_checkpoint
from ._context import TaskContext, ctx, custom_context, group
from ._environment import TaskEnvironment
from ._image import Image
from ._map import map
from ._resources import Resources
from ._reuse import ReusePolicy
from ._run import (
    Run,
    RunContext,
    init,
    init_from_api_key,
    init_from_config,
    init_in_cluster,
    init_passthrough,
    run,
    with_runcontext,
)
from ._secret import Secret
from ._task import TaskTemplate
from ._timeout import Backoff, RetryStrategy, Timeout
from ._trace import trace
from ._version import __version__

if TYPE_CHECKING:
    import logging

    from . import durable, io, report, storage

    logger: logging.Logger

# imported on first use to keep ``import loom`` cheap
_LAZY_MODULES = {"durable", "io", "report", "storage"}


def __getattr__(name: str) -> Any:
    if name in _LAZY_MODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    if name == "logger":  # (imports ``logging``: not on ``import loom``'s path)
        from ._logger import logger

        return logger
    raise AttributeError(f"module 'loom' has no attribute {name!r}")


__all__ = [
    "Backoff",
    "BaseCheckpoint",
    "Cache",
    "Checkpoint",
    "Image",
    "Resources",
    "RetryStrategy",
    "ReusePolicy",
    "Run",
    "RunContext",
    "Secret",
    "TaskContext",
    "TaskEnvironment",
    "TaskTemplate",
    "Timeout",
    "__version__",
    "ctx",
    "custom_context",
    "durable",
    "group",
    "init",
    "init_from_api_key",
    "init_from_config",
    "init_in_cluster",
    "init_passthrough",
    "io",
    "latest_checkpoint",
    "logger",
    "map",
    "report",
    "run",
    "storage",
    "trace",
    "with_runcontext",
]
