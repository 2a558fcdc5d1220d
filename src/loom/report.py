"""Reports: HTML a task produces alongside its outputs (``@env.task(report=True)``).

>>> loom.report.log("<h2>Summary</h2><p>42 rows</p>")

In local mode the report is kept on the action (``Run.actions()[i].report``).
"""

from __future__ import annotations

from ._context import current_action
from .errors import LoomError

__all__ = ["escape", "log", "replace"]


def _parts() -> list[str]:
    action = current_action.get()
    if action is None or action.report_parts is None:
        raise LoomError(
            "loom.report needs to be called inside a task declared with @env.task(report=True)"
        )
    return action.report_parts


def log(content: str) -> None:
    """Append an HTML fragment to the running task's report."""
    _parts().append(content)


def replace(content: str) -> None:
    """Replace the running task's report with ``content``."""
    parts = _parts()
    parts.clear()
    parts.append(content)


def escape(text: str) -> str:
    """Escape text for safe inclusion in a report."""
    import html

    return html.escape(text)
