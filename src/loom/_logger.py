"""``loom.logger``: the logger task code writes to, as ``flyte.logger`` in Flyte 2."""

from __future__ import annotations

import logging
import sys

from ._context import current_action

#: Its name; loggers named below it (``logging.getLogger("loom.user.myapp")``) share its
#: handler and level, as children of ``flyte.user`` do in Flyte 2.
LOGGER_NAME = "loom.user"


class _TaskLogHandler(logging.Handler):
    """Writes each record to the task's log: the ``sys.stderr`` of the moment it is emitted,
    which a warm worker routes to the log of the attempt that logs (one fixed at creation
    would write every attempt's lines to the worker's own)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            stream = sys.stderr
            stream.write(line + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


class _TaskFormatter(logging.Formatter):
    """``LEVEL message``, after ``[run][action]`` when logged inside a task (lines of
    concurrent actions interleave in a local run's terminal)."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = current_action.get()
        if context is None:
            return line
        return f"[{context.run_name}][{context.action.name}] {line}"


def _make_logger() -> logging.Logger:
    logger = logging.getLogger(LOGGER_NAME)
    if not any(isinstance(h, _TaskLogHandler) for h in logger.handlers):
        handler = _TaskLogHandler()
        handler.setFormatter(_TaskFormatter("%(levelname)s %(message)s"))
        logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)  # user messages are visible by default, as in Flyte 2
    logger.propagate = False  # (the root logger's handlers would print them twice)
    return logger


logger: logging.Logger = _make_logger()
"""The logger for task code: ``loom.logger.info("loaded %d rows", n)``. INFO and above go
to the task's log (the terminal locally; the action's log on the control plane), prefixed
with ``[run][action]``; ``loom.logger.setLevel(logging.DEBUG)`` shows debug lines too."""
