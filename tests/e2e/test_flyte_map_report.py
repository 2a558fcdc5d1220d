"""``flyte.map`` and ``flyte.report`` programs on loom, written as Flyte 2 users write them, run
as ``python script.py`` locally and against a real server: every mapped call is an action of
the run, and a report's tabs and flushes reach the action's record (locally) or the server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerProcess
from tests.e2e.test_flyte_compat import check, mode, run_script, shared_server

pytestmark = pytest.mark.e2e

__all__ = ["mode", "shared_server"]  # the fixtures, used by name

MAP = """
    import asyncio
    import functools
    import loom as flyte

    env = flyte.TaskEnvironment(name="mapper")

    @env.task
    async def square(x: int) -> int:
        await asyncio.sleep(0.2)
        if x == 3:
            raise ValueError(f"no {x}")
        return x * x

    @env.task
    def label(prefix: str, x: int, suffix: str) -> str:
        return f"{prefix}{x}{suffix}"

    @env.task
    def sync_main(n: int) -> list[str]:
        part = functools.partial(label, "<", suffix=">")
        return list(flyte.map(part, range(n), concurrency=2, return_exceptions=False))

    @env.task
    async def main(n: int) -> str:
        out = []
        async for r in flyte.map.aio(square, range(n), concurrency=2):
            out.append(f"err:{r}" if isinstance(r, Exception) else str(r))
        try:
            async for r in flyte.map.aio(square, range(n), return_exceptions=False):
                pass
        except ValueError as e:
            out.append(f"raised:{e}")
        out.append(",".join(await sync_main.aio(3)))
        return " ".join(out)

    if __name__ == "__main__":
        flyte.init_from_config()
        run = flyte.run(main, n=5)
        run.wait()
        print("RUN", run.name)
        print("RESULT", run.outputs())
        if flyte.ctx() is None and hasattr(run, "actions"):
            for a in run.actions():
                print("ACTION", a.task, "/".join(a.group), a.phase)
"""


def _actions(server: ServerProcess, run: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{server.endpoint}/api/v1/runs/{run}/actions", headers=server.headers)
    r.raise_for_status()
    return list(r.json())


def test_map_calls_are_actions_in_order(
    mode: str, shared_server: ServerProcess, tmp_path: Path
) -> None:
    out = check(
        run_script(mode, shared_server, tmp_path, MAP),
        "RESULT 0 1 4 err:no 3 16 raised:no 3 <0>,<1>,<2>",
    )
    run = out.split("RUN ", 1)[1].split()[0]
    if mode == "local":
        rows = [line.split()[1:] for line in out.splitlines() if line.startswith("ACTION")]
    else:
        rows = [
            [str(a["task"]), "/".join(a["group"]), str(a["phase"])]
            for a in _actions(shared_server, run)
        ]
    squares = [r for r in rows if r[0] == "mapper.square"]
    assert len(squares) == 10  # both maps: 5 calls each, every one an action
    assert {r[1] for r in squares} == {"mapper.square_map"}
    labels = [r for r in rows if r[0] == "mapper.label"]
    assert len(labels) == 3 and {r[1] for r in labels} == {"mapper.label_map"}
    assert sum(r[2] == "FAILED" for r in squares) >= 1


REPORT = """
    import asyncio
    import loom as flyte
    import loom.report

    env = flyte.TaskEnvironment(name="reports")

    @env.task(report=True)
    async def tabs() -> None:
        flyte.report.get_tab("Task 1").log("<p>in tab one</p>")
        await flyte.report.log.aio("<p>on main</p>", do_flush=True)
        await flyte.report.flush.aio()

    @env.task(report=True)
    def plain() -> None:
        flyte.report.replace("<p>old</p>")
        flyte.report.replace("<p>only this</p>", do_flush=True)
        flyte.report.log("<p>and this</p>")

    @env.task
    async def main() -> None:
        await tabs()
        await asyncio.to_thread(plain)

    if __name__ == "__main__":
        flyte.init_from_config()
        run = flyte.run(main)
        run.wait()
        print("RUN", run.name)
        if hasattr(run, "actions"):
            for a in run.actions():
                print("REPORT", a.task, repr(a.report))
"""


def test_report_tabs_and_flush(mode: str, shared_server: ServerProcess, tmp_path: Path) -> None:
    out = check(run_script(mode, shared_server, tmp_path, REPORT), "RUN ")
    run = out.split("RUN ", 1)[1].split()[0]
    if mode == "local":
        reports = {
            line.split()[1]: line.split(" ", 2)[2]
            for line in out.splitlines()
            if line.startswith("REPORT")
        }
    else:
        reports = {}
        for a in _actions(shared_server, run):
            r = httpx.get(
                f"{shared_server.endpoint}/api/v1/runs/{run}/actions/{a['name']}/report",
                headers=shared_server.headers,
            )
            if a["task"] == "reports.main":
                assert r.status_code == 404
                continue
            assert r.status_code == 200, r.text
            assert "sandbox" in r.headers["content-security-policy"]
            reports[str(a["task"])] = repr(r.text)
    tabbed = reports["reports.tabs"]
    assert "<!DOCTYPE html>" in tabbed and ">Task 1</label>" in tabbed and ">main</label>" in tabbed
    assert "in tab one" in tabbed and "on main" in tabbed
    assert reports["reports.plain"] == repr("<p>only this</p>\n<p>and this</p>")
