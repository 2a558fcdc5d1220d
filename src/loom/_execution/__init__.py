"""Running task actions in this process: attempts, retries, timeouts, caching, environment.

The local controller uses it for every action of a local run; in remote mode the action
process uses it for the one action it was given.
"""

from ._environ import install_environ_overlay
from ._execute import ActionExecution, ActionHost, ActionRecord, execute_async, execute_sync

__all__ = [
    "ActionExecution",
    "ActionHost",
    "ActionRecord",
    "execute_async",
    "execute_sync",
    "install_environ_overlay",
]
