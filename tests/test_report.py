"""loom.report as Flyte 2 users write reports: tabs, log/replace (sync and .aio), flush."""

from __future__ import annotations

import pytest

import loom
import loom.report
from loom.errors import LoomError

env = loom.TaskEnvironment("reporting")


def _report(run: loom.Run, task: str) -> str | None:
    (action,) = [a for a in run.actions() if a.task == f"reporting.{task}"]
    return action.report


def test_the_main_tab_alone_stays_plain_html() -> None:
    @env.task(report=True)
    async def main() -> None:
        loom.report.log("<p>a</p>")
        await loom.report.log.aio("<p>b</p>")
        loom.report.get_tab("main").log("<p>c</p>")

    assert _report(loom.run(main), "main") == "<p>a</p>\n<p>b</p>\n<p>c</p>"


def test_tabs_render_as_a_tabbed_document() -> None:
    @env.task(report=True)
    def main() -> None:
        loom.report.log("<p>summary</p>")
        details = loom.report.get_tab("Details <1>")
        details.log("<p>old</p>")
        details.replace("<table>rows</table>")
        assert loom.report.get_tab("Details <1>") is details

    html = _report(loom.run(main), "main")
    assert html is not None
    assert html.startswith("<!DOCTYPE html>")
    assert ">main</label>" in html and ">Details &lt;1&gt;</label>" in html  # names escaped
    assert "<p>summary</p>" in html and "<table>rows</table>" in html and "old" not in html
    assert html.index("<p>summary</p>") < html.index("<table>rows</table>")  # main first
    assert html.count('type="radio"') == 2 and html.count(" checked") == 1


def test_an_empty_main_tab_is_left_out() -> None:
    @env.task(report=True)
    async def main() -> None:
        loom.report.get_tab("Only").log("<p>x</p>")

    html = _report(loom.run(main), "main")
    assert html is not None and ">Only</label>" in html and ">main</label>" not in html


def test_replace_and_its_aio_form_replace_the_main_tab_only() -> None:
    @env.task(report=True)
    async def main() -> None:
        loom.report.get_tab("Other").log("<p>kept</p>")
        loom.report.log("<p>gone</p>")
        await loom.report.replace.aio("<p>new</p>")
        loom.report.replace("<p>newer</p>")

    html = _report(loom.run(main), "main")
    assert html is not None and "gone" not in html and "<p>newer</p>" in html
    assert "<p>kept</p>" in html


def test_flush_keeps_the_report_so_far_on_the_record() -> None:
    @env.task(report=True)
    async def fails() -> None:
        loom.report.get_tab("Progress").log("<p>step 1</p>")
        await loom.report.flush.aio()
        loom.report.log("<p>not flushed</p>")
        raise ValueError("boom")

    @env.task(report=True)
    def sync_fails() -> None:
        loom.report.log("<p>flushed</p>", do_flush=True)
        raise ValueError("boom")

    @env.task
    async def main() -> None:
        for call in (fails, sync_fails):
            try:
                await call.aio()
            except ValueError:
                pass

    run = loom.run(main)
    flushed = _report(run, "fails")
    assert flushed is not None and "step 1" in flushed and "not flushed" not in flushed
    assert _report(run, "sync_fails") == "<p>flushed</p>"


def test_get_tab_without_creating() -> None:
    @env.task(report=True)
    async def main() -> None:
        with pytest.raises(ValueError, match="no tab"):
            loom.report.get_tab("missing", create_if_missing=False)
        assert loom.report.current_report().has_content() is False

    loom.run(main)


def test_reports_need_report_true() -> None:
    @env.task
    async def main() -> None:
        loom.report.get_tab("x")

    with pytest.raises(LoomError, match="report=True"):
        loom.run(main)
    loom.report.flush()  # outside a task: nothing to show, as in Flyte
