"""The executors' exceptions."""

from __future__ import annotations


class ExecutorError(Exception):
    """Root of the errors an executor raises itself (e.g. a job could not be started)."""


class JobStartError(ExecutorError):
    """The job's process could not be started."""
