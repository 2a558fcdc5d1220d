"""The execution engine: running a task action in this process, with attempts, retries,
timeouts, caching and its environment.

The local controller uses it for every action of a local run; in remote mode the action
process (``loom.runtime``) uses it for the one action it was given.
"""

from ._environ import install_environ_overlay
from ._execute import (
    ActionExecution,
    ActionHost,
    ActionRecord,
    cache_key,
    check_inline_size,
    execute_async,
    execute_sync,
)

__all__ = [
    "ActionExecution",
    "ActionHost",
    "ActionRecord",
    "cache_key",
    "check_inline_size",
    "execute_async",
    "execute_sync",
    "install_environ_overlay",
]
