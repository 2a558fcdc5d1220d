"""Runs, actions and attempts: the state machine's storage side, the only writer of their state.

Runtimes and clients *propose* (create an action, an attempt started or finished); the service
accepts or rejects, idempotently where a retried request must be safe. Each write happens in
one transaction under the database's writer lock; what must happen after it commits (wake the
scheduler, kill processes, notify waiters) is collected as :class:`Effects` and handed to the
dispatcher the control plane installs.

One module per concept:

- ``_transitions``: the transition engine. Every phase change of an action, its attempts and
  its run is made there, one at a time or in batches, with the rules that follow from it.
- ``_commands``: what clients ask: create runs and actions, abort them.
- ``_queries``: what clients read.
- ``_reports``: what runtimes and the executor report about attempts: started, beating,
  finished, exited, lost.
- ``_common``: the records and statements they share.

A fan-out goes through here a thousand actions at a time, so the paths every action takes
(creating children, claiming attempts, runtimes' reports, process exits) take batches: one
transaction for many items, each item accepted or refused on its own as its one-item
counterpart would.
"""

from __future__ import annotations

from ._commands import Commands
from ._common import (
    Effects,
    Launch,
    LogSource,
    ProcessExit,
    RunningAttempt,
    Tx,
    action_info,
    attempt_info,
    encode_value,
    log_key,
    log_path,
    normalize_digest,
    run_info,
    runs_in_worker,
    session_info,
    session_url,
    task_spec,
)
from ._reports import Reports

__all__ = [
    "Effects",
    "Launch",
    "LogSource",
    "ProcessExit",
    "RunService",
    "RunningAttempt",
    "Tx",
    "action_info",
    "attempt_info",
    "encode_value",
    "log_key",
    "log_path",
    "normalize_digest",
    "run_info",
    "runs_in_worker",
    "session_info",
    "session_url",
    "task_spec",
]


class RunService(Commands, Reports):
    """Everything about runs, actions and attempts: one object, its parts by concept."""
