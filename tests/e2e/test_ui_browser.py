"""The web UI in a real browser (Debian's Chromium, driven by Playwright) against a real server,
real runs and real IDEs: sign in, watch runs progress live, read a failed action's error and
logs, abort a run, open an interactive session from its button and resume it, manage API keys.
Screenshots of each step go to ``artifacts/`` (gitignored)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO, ServerProcess, run_cli, write_module
from tests.e2e.test_interactive import flow as interactive_flow
from tests.e2e.test_interactive import start as start_interactive

pytestmark = pytest.mark.e2e

ARTIFACTS = REPO / "artifacts"

FLOW = """
import asyncio
from dataclasses import dataclass

import loom

env = loom.TaskEnvironment("ui")


@dataclass
class Point:
    x: float
    y: float


@env.task
async def step(i: int) -> int:
    print(f"step {i} working", flush=True)
    return i * i


@env.task
async def progress(n: int = 3, pause: float = 1.0) -> int:
    print("progress started", flush=True)
    await asyncio.sleep(pause)
    total = 0
    with loom.group("steps"):
        for i in range(n):  # one after another: the page sees them come
            total += await step(i)
    return total


@env.task
async def validate(p: Point) -> Point:
    print(f"validating {p}", flush=True)
    if p.x < 0:
        raise ValueError(f"x must not be negative, got {p.x}")
    return p


@env.task
async def pipeline(points: list[Point]) -> int:
    with loom.group("validation"):
        checked = await asyncio.gather(*(validate(p) for p in points), return_exceptions=True)
    bad = [c for c in checked if isinstance(c, Exception)]
    if bad:
        raise RuntimeError(f"{len(bad)} point(s) failed validation")
    return len(checked)


@env.task
async def forever(seconds: int = 600) -> int:
    for i in range(seconds):
        print(f"tick {i}", flush=True)
        await asyncio.sleep(1)
    return seconds
"""


@pytest.fixture
def ui_flow(tmp_path: Path) -> Path:
    code = tmp_path / "code"  # its own source root: the bundle holds nothing else
    code.mkdir()
    return write_module(code / "ui_flow.py", FLOW)


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"ui-{name}.png"))


def new_page(browser: Any) -> Any:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.errors = errors  # checked at the end of each test: the app must not throw
    page.urls = []  # every request the page makes: only ever to the server
    page.on("request", lambda request: page.urls.append(request.url))
    return page


def sign_in(page: Any, server: ServerProcess, path: str = "/runs") -> None:
    """Sign in through the form with the admin key, landing on ``path``."""
    page.goto(server.endpoint + path)
    page.get_by_label("API key").fill(server.api_key)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_url(re.compile(re.escape(server.endpoint + path) + r"(\?.*)?$"))


def start(server: ServerProcess, flow: Path, *args: str, options: tuple[str, ...] = ()) -> str:
    result = run_cli("run", "--remote", "--detach", *options, str(flow), *args, env=server.env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def api_get(server: ServerProcess, path: str) -> Any:
    response = httpx.get(f"{server.endpoint}/api/v1{path}", headers=server.headers)
    response.raise_for_status()
    return response.json()


def run_badge(page: Any) -> Any:
    return page.locator("#run-head .badge")


def no_page_errors(page: Any, server: ServerProcess, expected: tuple[str, ...] = ()) -> None:
    """The app threw nothing and asked nothing of any other host (no CDN, no fonts...).
    Refused requests show as console errors: 401s (signed out) and the ``expected`` statuses
    (a test's deliberate bad request) do not count."""
    allowed = ("401", *expected)
    assert not [e for e in page.errors if not any(code in e for code in allowed)], page.errors
    elsewhere = [u for u in page.urls if not u.startswith((server.endpoint + "/", "data:"))]
    assert not elsewhere, elsewhere


def test_sign_in_and_watch_runs_progress_live(
    browser: Any, server: ServerProcess, ui_flow: Path
) -> None:
    from playwright.sync_api import expect

    page = new_page(browser)
    page.goto(server.endpoint + "/runs")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Fruns$"))  # nothing without a login
    expect(page.get_by_role("button", name="Sign in as the local admin")).to_be_visible()
    shot(page, "sign-in")
    page.get_by_label("API key").fill("loom_nope_wrong")
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("alert")).to_contain_text("not valid")
    sign_in(page, server)
    expect(page.get_by_role("heading", name="Runs")).to_be_visible()
    expect(page.get_by_text("No runs yet.")).to_be_visible()
    page.evaluate("window.loomTestMarker = 'same page'")  # gone if the page reloads

    # a run started elsewhere appears and progresses, without a reload
    run = start(server, ui_flow, "progress", "--n", "3", "--pause", "3")
    row = page.locator("tr", has=page.get_by_role("link", name=run))
    expect(row).to_be_visible(timeout=30_000)
    expect(row.locator(".badge")).to_have_text(re.compile("Running"), timeout=30_000)
    expect(row).to_contain_text("ui.progress")
    expect(row).to_contain_text("default / development")
    expect(row).to_contain_text("admin")
    shot(page, "runs-live")
    # the run page follows it too: the steps come one by one, then it succeeds
    page.get_by_role("link", name=run).click()
    expect(page).to_have_url(f"{server.endpoint}/runs/{run}")
    expect(page.locator("#log")).to_contain_text("progress started", timeout=30_000)
    steps = page.locator("#tree .row:not(.group)", has_text="step")
    expect(steps).to_have_count(3, timeout=60_000)
    expect(run_badge(page)).to_have_text(re.compile("Succeeded"), timeout=60_000)
    expect(page.locator("#tree .row.group")).to_contain_text("steps")
    shot(page, "run-live")
    page.go_back()
    expect(row.locator(".badge")).to_have_text(re.compile("Succeeded"))
    assert page.evaluate("window.loomTestMarker") == "same page"
    shot(page, "runs")
    # the project switcher, kept across visits
    created = httpx.post(
        f"{server.endpoint}/api/v1/projects", json={"name": "analytics"}, headers=server.headers
    )
    assert created.status_code == 201
    other = start(server, ui_flow, "step", "--i", "2", options=("--project", "analytics"))
    page.reload()
    page.get_by_label("Project").select_option("analytics")
    other_row = page.locator("tr", has=page.get_by_role("link", name=other))
    expect(other_row).to_contain_text("analytics / development", timeout=30_000)
    expect(row).to_have_count(0)
    page.reload()
    expect(page.get_by_label("Project")).to_have_value("analytics")
    expect(other_row).to_be_visible()
    expect(row).to_have_count(0)
    page.get_by_label("Project").select_option("")
    expect(row).to_be_visible()
    # filters: text, phase
    page.get_by_label("Search").fill("no-such-run")
    expect(page.get_by_text("No runs match these filters.")).to_be_visible()
    page.get_by_label("Search").fill("progress")
    expect(row).to_be_visible()
    page.get_by_label("Phase").select_option("FAILED")
    expect(page.get_by_text("No runs match these filters.")).to_be_visible()
    expect(page).to_have_url(re.compile(r"phase=FAILED"))
    # signing out ends the login
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile("/login"))
    page.goto(server.endpoint + "/runs")
    expect(page).to_have_url(re.compile("/login"))
    no_page_errors(page, server)
    page.context.close()


def test_a_failed_action_shows_its_error_trace_and_logs(
    browser: Any, server: ServerProcess, ui_flow: Path
) -> None:
    from playwright.sync_api import expect

    points = '[{"x": 1, "y": 2}, {"x": -1, "y": 0}, {"x": 3, "y": 4}]'
    result = run_cli(
        "run", "--remote", str(ui_flow), "pipeline", "--points", points, env=server.env
    )
    assert result.returncode == 1, result.stderr
    run = api_get(server, "/runs?limit=1")[0]["name"]

    page = new_page(browser)
    page.goto(f"{server.endpoint}/runs/{run}")
    # on the server's own machine: one click, no key
    page.get_by_role("button", name="Sign in as the local admin").click()
    expect(page).to_have_url(f"{server.endpoint}/runs/{run}")
    expect(run_badge(page)).to_have_text(re.compile("Failed"))
    expect(page.locator("#run-head")).to_contain_text("1 point(s) failed validation")
    group = page.locator("#tree .row.group", has_text="validation")
    expect(group).to_contain_text("2")  # two succeeded...
    failed = page.locator("#tree .row:not(.group)", has=page.locator(".picon.ph-FAILED"))
    failed = failed.filter(has_text="validate")
    expect(failed).to_have_count(1)
    failed.click()
    expect(page).to_have_url(re.compile(rf"/runs/{run}/validate-[0-9a-f]+$"))
    error = page.locator(".error-box").first
    expect(error.locator(".err-type")).to_have_text("ValueError")
    expect(error.locator(".err-msg")).to_have_text("x must not be negative, got -1.0")
    trace = error.locator("pre.trace").first  # the user's own frames
    expect(trace).to_contain_text("raise ValueError(")
    expect(trace).to_contain_text("ui_flow.py")
    expect(trace).not_to_contain_text("_process.py")
    expect(error.locator(".full-trace summary")).to_contain_text("frame(s) of loom")
    expect(page.locator("#log")).to_contain_text("validating Point(x=-1.0, y=0.0)")
    expect(page.locator("#log-status")).to_have_text("End of log.")
    # the dataclass input as a table of its fields
    inputs = page.locator("table.inputs")
    expect(inputs.locator("th", has_text="x")).to_be_visible()
    expect(inputs.locator("td td", has_text="-1")).to_be_visible()
    expect(page.locator("#rerun-command")).to_contain_text(
        'ui_flow.py validate --p \'{"x":-1.0,"y":0.0}\''
    )
    shot(page, "failed-action")
    # keyboard: the tree is navigable, selection follows focus
    failed.focus()
    page.keyboard.press("Home")
    expect(page.locator("#detail-title")).to_contain_text("pipeline", timeout=5_000)
    expect(page.locator("#tree [aria-selected=true]")).to_contain_text("pipeline")
    page.keyboard.press("ArrowDown")  # the group
    page.keyboard.press("ArrowLeft")  # collapses it
    expect(page.locator("#tree .row:not(.group)")).to_have_count(1)
    page.keyboard.press("ArrowRight")
    expect(page.locator("#tree .row:not(.group)")).to_have_count(4)
    # the timeline
    page.get_by_role("button", name="Timeline").click()
    expect(page.locator("#tree .bar.ph-FAILED").first).to_be_visible()
    shot(page, "timeline")
    # "Debug" re-runs the failed action interactively, as a new run
    page.get_by_role("button", name="List").click()
    failed.click()
    expect(page.locator(".error-box .err-type").first).to_have_text("ValueError")
    page.get_by_role("button", name="Debug in VS Code").click()
    expect(page).not_to_have_url(re.compile(rf"/runs/{run}"))
    debug_run = page.url.rsplit("/", 1)[-1]
    expect(page.locator("#run-head")).to_contain_text("ui.validate")
    spec = api_get(server, f"/runs/{debug_run}/actions/a0/spec")
    assert spec["task"]["interactive"]["kind"] == "vscode"
    assert spec["inputs"] == {"p": {"x": -1.0, "y": 0.0}}
    httpx.post(f"{server.endpoint}/api/v1/runs/{debug_run}/abort", headers=server.headers)
    no_page_errors(page, server)
    page.context.close()


def test_abort_a_run(browser: Any, server: ServerProcess, ui_flow: Path) -> None:
    from playwright.sync_api import expect

    run = start(server, ui_flow, "forever")
    page = new_page(browser)
    sign_in(page, server, f"/runs/{run}")
    expect(run_badge(page)).to_have_text(re.compile("Running"), timeout=30_000)
    expect(page.locator("#log")).to_contain_text("tick 1", timeout=30_000)  # live tail
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Abort run").click()
    expect(run_badge(page)).to_have_text(re.compile("Aborted"), timeout=30_000)
    expect(page.get_by_role("button", name="Abort run")).to_have_count(0)
    expect(page.locator(".error-box .err-type").first).to_have_text("RunAborted", timeout=10_000)
    shot(page, "aborted")
    assert api_get(server, f"/runs/{run}")["phase"] == "ABORTED"
    no_page_errors(page, server)
    page.context.close()


def test_open_an_interactive_session_from_its_button_and_resume(
    browser: Any, ide_server: ServerProcess, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    run = start_interactive(ide_server, tmp_path, interactive_flow(tmp_path), "edit_me", "--x", "5")
    page = new_page(browser)
    sign_in(page, ide_server, f"/runs/{run}")
    open_link = page.get_by_role("button", name=re.compile("Open VS Code"))
    expect(open_link).to_be_visible(timeout=120_000)
    session = page.locator(".session")
    expect(session.locator(".session-state")).to_have_text("ready")
    expect(session).to_contain_text(re.compile(r"Closes after \d+ m \d+ s more without use"))
    expect(run_badge(page)).to_have_text(re.compile("Interactive"))
    shot(page, "interactive")
    # the editor, through the proxy, in a new tab
    with page.context.expect_page() as opened:
        open_link.click()
    ide = opened.value
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    explorer_entry = ide.get_by_role("treeitem", name="ide_flow.py")
    try:
        explorer_entry.wait_for(timeout=60_000)
    except PlaywrightTimeout:  # a loaded machine can drop the editor's first connection
        ide.reload()  # as a user would: the session itself must still be there
        explorer_entry.wait_for(timeout=90_000)
    # on the session's own origin, not the UI's
    opened_session = api_get(ide_server, f"/runs/{run}/actions/a0")["session"]
    assert ide.url.startswith(opened_session["origin"] + "/sessions/")
    assert not ide.url.startswith(ide_server.endpoint)
    explorer_entry.dblclick()
    ide.get_by_text("async def edit_me").first.wait_for(timeout=30_000)
    shot(ide, "vscode")
    ide.close()
    # Resume: the task runs (its child too) and the action succeeds
    page.bring_to_front()
    page.get_by_role("button", name="Resume").click()
    expect(session.locator(".resume-status")).to_contain_text("Resumed", timeout=120_000)
    expect(run_badge(page)).to_have_text(re.compile("Succeeded"), timeout=60_000)
    expect(page.locator("#d-values")).to_contain_text("Outputs")
    expect(page.locator("#d-values .value")).to_have_text("11")
    expect(page.locator("#tree .row:not(.group)", has_text="double")).to_have_count(1)
    expect(session.locator(".session-state")).to_have_text("ended")
    shot(page, "resumed")
    assert api_get(ide_server, f"/runs/{run}/actions/a0/outputs")["value"] == 11
    no_page_errors(page, ide_server)
    page.context.close()


def test_a_viewer_sees_runs_and_is_offered_nothing_it_may_not_do(
    browser: Any, server: ServerProcess, ui_flow: Path
) -> None:
    from playwright.sync_api import expect

    result = run_cli("run", "--remote", str(ui_flow), "pipeline", "--points", "[]", env=server.env)
    assert result.returncode in (0, 1), result.stderr
    run = api_get(server, "/runs?limit=1")[0]["name"]
    r = httpx.post(
        f"{server.endpoint}/api/v1/api-keys",
        json={"name": "auditor", "projects": {"default": "viewer"}},
        headers=server.headers,
    )
    assert r.status_code == 201, r.text
    page = new_page(browser)
    page.goto(f"{server.endpoint}/runs/{run}")
    page.get_by_label("API key").fill(r.json()["key"])
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page).to_have_url(f"{server.endpoint}/runs/{run}")
    expect(run_badge(page)).to_have_text(re.compile("Succeeded|Failed"))
    expect(page.locator("#tree .row").first).to_be_visible()
    page.locator("#tree .row:not(.group)").first.click()
    expect(page.locator("#d-values")).to_be_visible()
    # reads, yes; abort, debug, keys and secrets are not offered
    expect(page.get_by_role("button", name="Debug in VS Code")).to_have_count(0)
    expect(page.get_by_role("button", name="Abort run")).to_have_count(0)
    expect(page.get_by_role("link", name="API keys")).to_be_hidden()
    expect(page.get_by_role("link", name="Secrets")).to_be_hidden()
    no_page_errors(page, server)
    page.context.close()


def test_api_keys_are_created_once_shown_and_deleted(browser: Any, server: ServerProcess) -> None:
    from playwright.sync_api import expect

    page = new_page(browser)
    # after signing in, only this server's pages: no open redirect
    page.goto(server.endpoint + "/login?next=%2F%5Cevil.example%2F")
    page.get_by_label("API key").fill(server.api_key)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page).to_have_url(server.endpoint + "/runs")
    page.get_by_role("link", name="API keys").click()
    expect(page).to_have_url(server.endpoint + "/keys")
    expect(page.get_by_role("heading", name="API keys")).to_be_visible()
    page.get_by_label("Name").fill("ci-bot")
    page.get_by_role("button", name="Create key").click()  # with no role anywhere: refused
    expect(page.locator("#key-error")).to_contain_text("a role in at least one project")
    page.get_by_label("Role in project default").select_option("viewer")
    page.get_by_role("button", name="Create key").click()
    key = page.locator("#new-key")
    expect(key).to_have_text(re.compile(r"^loom_"))
    secret = key.inner_text()
    row = page.locator("#key-list tr", has_text="ci-bot")
    expect(row).to_contain_text("default: viewer")
    shot(page, "api-keys")
    response = httpx.get(
        f"{server.endpoint}/api/v1/whoami", headers={"Authorization": f"Bearer {secret}"}
    )
    assert response.json()["name"] == "ci-bot"
    assert response.json()["projects"] == {"default": "viewer"}
    page.reload()
    expect(row).to_be_visible()
    expect(page.locator("#new-key")).to_have_count(0)  # shown once
    assert secret not in page.content()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete key ci-bot").click()
    expect(row).to_have_count(0)
    no_page_errors(page, server)
    page.context.close()


def test_secrets_are_stored_listed_without_their_values_and_deleted(
    browser: Any, server: ServerProcess
) -> None:
    from playwright.sync_api import expect

    page = new_page(browser)
    sign_in(page, server)
    page.get_by_role("link", name="Secrets").click()
    expect(page).to_have_url(server.endpoint + "/secrets")
    expect(page.get_by_text("No secrets yet.")).to_be_visible()
    page.get_by_label("Key", exact=True).fill("db-password")
    page.get_by_label("Value", exact=True).fill("hunter2-from-the-ui")
    page.get_by_label("Only for domain").select_option("staging")
    page.get_by_role("button", name="Store secret").click()
    row = page.locator("#secret-list tr", has_text="db-password")
    expect(row).to_contain_text("staging")
    expect(row).to_contain_text("every project")
    # the value leaves the page once stored
    expect(page.get_by_label("Value", exact=True)).to_have_value("")
    stored = api_get(server, "/secrets")
    assert [(s["key"], s["project"], s["domain"]) for s in stored] == [
        ("db-password", None, "staging")
    ]
    # storing it again needs the overwrite box
    page.get_by_label("Key", exact=True).fill("db-password")
    page.get_by_label("Value", exact=True).fill("another")
    page.get_by_label("Only for domain").select_option("staging")
    page.get_by_role("button", name="Store secret").click()
    expect(page.locator("#secret-error")).to_contain_text("already exists")
    shot(page, "secrets")
    page.reload()
    expect(row).to_be_visible()
    assert "hunter2" not in page.content()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name=re.compile("Delete secret db-password")).click()
    expect(row).to_have_count(0)
    assert api_get(server, "/secrets") == []
    no_page_errors(page, server, expected=("409",))
    page.context.close()
