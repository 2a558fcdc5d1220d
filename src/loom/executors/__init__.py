"""Executors: where the control plane runs actions (DESIGN §4, rule 4).

The scheduler talks to an executor only through :class:`Executor` (``submit``, ``cancel``,
``status``, ``capacity``, plus ``reclaim`` for what a crashed server left behind). The local
process executor runs each attempt as ``python -m loom.runtime ...`` in its own process group;
a Ray executor will follow the same protocol.

Exceptions::

    ExecutorError       root of every error an executor raises itself
    └── JobStartError   a job's process could not be started

This package imports nothing from loom but :mod:`loom.wire`.
"""

from ._errors import ExecutorError, JobStartError
from ._process import DEFAULT_COMMAND, LocalProcessExecutor, machine_capacity, process_identity
from ._protocol import (
    Capacity,
    Executor,
    ExitCallback,
    Job,
    JobExit,
    JobStatus,
    ReportCallback,
    job_id,
)

__all__ = [
    "DEFAULT_COMMAND",
    "Capacity",
    "Executor",
    "ExecutorError",
    "ExitCallback",
    "Job",
    "JobExit",
    "JobStartError",
    "JobStatus",
    "LocalProcessExecutor",
    "ReportCallback",
    "job_id",
    "machine_capacity",
    "process_identity",
]
