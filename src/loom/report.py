"""Reports: HTML a task produces alongside its outputs (``@env.task(report=True)``).

>>> loom.report.log("<h2>Summary</h2><p>42 rows</p>")
>>> loom.report.get_tab("Details").log("<table>...</table>")
>>> loom.report.flush()  # show the report so far, before the task ends

``log``/``replace`` write the main tab; :func:`get_tab` gives other tabs, and a report with
more than the main tab renders as a self-contained tabbed HTML document. ``log``, ``replace``
and ``flush`` have ``.aio`` variants for async code (as in Flyte 2).

In local mode the report is kept on the action (``Run.actions()[i].report``), as flushed so far
while the task runs. Remotely the runtime uploads it to the server (on ``flush`` and when the
task ends), which serves it sandboxed at ``GET /runs/<run>/actions/<action>/report``.
"""

from __future__ import annotations

import html as _html
from collections.abc import Awaitable, Callable
from typing import Any, Generic, ParamSpec, TypeVar

from ._context import current_action
from .errors import LoomError

__all__ = ["Report", "Tab", "current_report", "escape", "flush", "get_tab", "log", "replace"]

P = ParamSpec("P")
T = TypeVar("T")

MAIN_TAB = "main"


class Tab:
    """One tab of a report: HTML fragments shown one after another."""

    __slots__ = ("content", "name")

    def __init__(self, name: str, content: list[str] | None = None) -> None:
        self.name = name
        self.content: list[str] = [] if content is None else content

    def log(self, content: str) -> None:
        """Append an HTML fragment (not a whole document) to the tab."""
        self.content.append(content)

    def replace(self, content: str) -> None:
        """Replace the tab's content with ``content``."""
        self.content[:] = [content]  # in place: the main tab's list is the task's report

    def get_html(self) -> str:
        """The tab's HTML: its fragments joined."""
        return "\n".join(self.content)

    def __repr__(self) -> str:
        return f"Tab({self.name!r}, {len(self.content)} fragment(s))"


class Report(list[str]):
    """A task's report. As a list it is the main tab's fragments (what ``report_parts`` of
    the task's context always held); :attr:`tabs` has every tab, the main one first."""

    def __init__(self, main: list[str] | None = None) -> None:
        super().__init__(main or ())
        self.tabs: dict[str, Tab] = {MAIN_TAB: Tab(MAIN_TAB, self)}

    def get_tab(self, name: str, create_if_missing: bool = True) -> Tab:
        """The tab called ``name``, made on first use (else ``ValueError``)."""
        tab = self.tabs.get(name)
        if tab is None:
            if not create_if_missing:
                raise ValueError(f"the report has no tab {name!r}")
            tab = self.tabs[name] = Tab(name)
        return tab

    def has_content(self) -> bool:
        """Whether any tab has something in it."""
        return any(tab.content for tab in self.tabs.values())

    def get_final_report(self) -> str:
        """The report as HTML: the main tab's fragments when it has no other tab (as loom
        always stored reports), else a self-contained document with one tab per name."""
        return render(self)


def render(parts: list[str]) -> str:
    """The HTML of a report (a :class:`Report`, or the plain list of fragments)."""
    tabs = parts.tabs if isinstance(parts, Report) else {}
    shown = [t for t in tabs.values() if t.content or t.name != MAIN_TAB]
    if len(tabs) <= 1:
        return "\n".join(parts)
    return _tabbed(shown)


# Tabs without scripts (radio buttons and CSS), so they work whatever the viewer allows;
# the content's own scripts run as they would on a page of their own.
_STYLE = """
body{margin:0;font-family:system-ui,-apple-system,"Segoe UI",sans-serif;color:#1f2328}
.loom-tabs>input{position:absolute;opacity:0;pointer-events:none}
.loom-nav{display:flex;flex-wrap:wrap;gap:2px;border-bottom:1px solid #d0d7de;padding:0 8px;
background:#f6f8fa}
.loom-nav label{padding:8px 14px;cursor:pointer;border-bottom:2px solid transparent;color:#57606a}
.loom-nav label:hover{color:#1f2328}
.loom-panel{display:none;padding:16px}
"""


def _tabbed(tabs: list[Tab]) -> str:
    inputs, labels, panels, rules = [], [], [], []
    for i, tab in enumerate(tabs):
        checked = " checked" if i == 0 else ""
        inputs.append(f'<input type="radio" name="loom-tab" id="loom-tab-{i}"{checked}>')
        labels.append(f'<label for="loom-tab-{i}">{_html.escape(tab.name)}</label>')
        panels.append(f'<div class="loom-panel" id="loom-panel-{i}">\n{tab.get_html()}\n</div>')
        rules.append(
            f"#loom-tab-{i}:checked~.loom-nav label[for=loom-tab-{i}]"
            "{color:#1f2328;border-bottom-color:#fd8c73;font-weight:600}"
            f"#loom-tab-{i}:checked~#loom-panel-{i}{{display:block}}"
        )
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>Report</title>\n'
        f'<style>{_STYLE}{"".join(rules)}</style></head>\n<body><div class="loom-tabs">\n'
        + "\n".join(inputs)
        + '\n<nav class="loom-nav">'
        + "".join(labels)
        + "</nav>\n"
        + "\n".join(panels)
        + "\n</div></body></html>\n"
    )


class _WithAio(Generic[P, T]):
    """A sync function with an ``.aio`` variant, as Flyte 2's report functions have."""

    def __init__(self, func: Callable[P, T], aio: Callable[P, Awaitable[T]]) -> None:
        self._func = func
        self.aio = aio
        self.__doc__ = func.__doc__
        self.__name__ = func.__name__

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._func(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<function loom.report.{self.__name__}>"


def current_report() -> Report:
    """The running task's report (the task must be declared with ``report=True``)."""
    action = current_action.get()
    if action is None or action.report_parts is None:
        raise LoomError(
            "loom.report needs to be called inside a task declared with @env.task(report=True)"
        )
    parts = action.report_parts
    if not isinstance(parts, Report):
        parts = action.report_parts = Report(parts)  # once per task: tabs need a Report
    return parts


def get_tab(name: str, /, create_if_missing: bool = True) -> Tab:
    """The running task's report tab called ``name``, made on first use."""
    return current_report().get_tab(name, create_if_missing)


def _log(content: str, do_flush: bool = False) -> None:
    """Append an HTML fragment to the running task's report (its main tab); ``do_flush``
    also :func:`flush` es it."""
    current_report().append(content)
    if do_flush:
        _flush()


def _replace(content: str, do_flush: bool = False) -> None:
    """Replace the main tab of the running task's report with ``content``."""
    current_report().get_tab(MAIN_TAB).replace(content)
    if do_flush:
        _flush()


def _flush() -> None:
    """Make the report so far visible before the task ends: kept on the local action
    record, uploaded by a remote action (in the background; the last one before the task
    ends is always delivered)."""
    action = current_action.get()
    if action is None or action.report_parts is None:
        return  # nothing to show, as in Flyte
    flushed: Callable[[str, str], Any] | None = getattr(action.run, "report_flushed", None)
    if flushed is not None:
        flushed(action.action, render(action.report_parts))


async def _log_aio(content: str, do_flush: bool = False) -> None:
    _log(content, do_flush)


async def _replace_aio(content: str, do_flush: bool = False) -> None:
    _replace(content, do_flush)


async def _flush_aio() -> None:
    _flush()


log = _WithAio(_log, _log_aio)
replace = _WithAio(_replace, _replace_aio)
flush = _WithAio(_flush, _flush_aio)


def escape(text: str) -> str:
    """Escape text for safe inclusion in a report."""
    return _html.escape(text)
