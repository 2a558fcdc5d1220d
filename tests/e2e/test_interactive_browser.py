"""A real browser (Debian's Chromium, driven by Playwright) opens sessions through the proxy.

Sessions are served from their own origin (``<label>.localhost``, which Chromium resolves to
loopback): the browser gets in with the one-time link `loom open` prints, and the test checks
the editor really works through the proxy: VS Code's file explorer (served over its
WebSocket) lists the task file and the file opens; JupyterLab lists the generated notebook.
Screenshots go to ``artifacts/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, ServerProcess
from tests.e2e.test_interactive import cli, flow, start, wait_for, wait_ready

pytestmark = pytest.mark.e2e

ARTIFACTS = REPO / "artifacts"


def signed_in(browser: Any, server: ServerProcess) -> Any:
    """A browser signed in to the UI (whose cookie is no way into a session)."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    response = context.request.post(
        f"{server.endpoint}/api/v1/login", data={"api_key": server.api_key}
    )
    assert response.status == 204, response.text()
    return context


def open_link(server: ServerProcess, run: str) -> str:
    """The one-time link into the run's session that `loom open` prints."""
    opened = cli(server, "open", run)
    assert opened.returncode == 0, opened.stderr
    link = opened.stdout.strip()
    assert "/_loom/enter?ticket=" in link and ".localhost:" in link
    return link


def close_and_resume(page: Any, screenshot: str, server: ServerProcess, run: str) -> None:
    """Save ``page`` as ``artifacts/<screenshot>.png``, close its browser context, then
    resume the session's action and check that it succeeds."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{screenshot}.png"))
    page.context.close()
    assert cli(server, "resume", run).returncode == 0
    assert wait_for(server, run, {"SUCCEEDED", "FAILED"})["phase"] == "SUCCEEDED"


def test_vscode_opens_in_the_browser(
    browser: Any, ide_server: ServerProcess, tmp_path: Path
) -> None:
    run = start(ide_server, tmp_path, flow(tmp_path), "edit_me", "--x", "5")
    session = wait_ready(ide_server, run)["session"]
    url = session["origin"] + session["url"]
    # signed in to the UI is not signed in to a session: its origin is another
    context = signed_in(browser, ide_server)
    assert context.new_page().goto(url).status == 401
    page = context.new_page()
    page.goto(open_link(ide_server, run))
    assert page.url.startswith(url)
    assert page.context.new_page().goto(open_link(ide_server, run)[:-4] + "xxxx").status == 401
    explorer_entry = page.get_by_role("treeitem", name="ide_flow.py")
    explorer_entry.wait_for(timeout=60_000)  # listed through the proxied WebSocket
    explorer_entry.dblclick()
    page.get_by_text("async def edit_me").first.wait_for(timeout=30_000)
    close_and_resume(page, "vscode-session", ide_server, run)


def test_jupyterlab_opens_in_the_browser(
    browser: Any, ide_server: ServerProcess, tmp_path: Path
) -> None:
    run = start(ide_server, tmp_path, flow(tmp_path), "in_notebook", "--x", "7")
    wait_ready(ide_server, run)
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto(open_link(ide_server, run))  # opens the generated notebook
    # the notebook itself, open and rendered (its file name may sit in a hidden side panel)
    page.get_by_text("from loom.interactive import resume").first.wait_for(timeout=60_000)
    page.get_by_text("decode_inputs").first.wait_for(timeout=10_000)
    close_and_resume(page, "jupyter-session", ide_server, run)
