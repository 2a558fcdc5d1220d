"""The runtime fork server: attempts forked from a warm process, with a fallback."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from loom.executors._zygote import Zygote

pytestmark = pytest.mark.e2e

RUNTIME = (sys.executable, "-m", "loom.runtime")


def test_forked_attempts_run_the_runtime(tmp_path: Path) -> None:
    async def scenario() -> None:
        zygote = Zygote(RUNTIME)
        await zygote.start()
        try:
            work = tmp_path / "work"
            work.mkdir()
            argv = ["--endpoint", "http://127.0.0.1:9", "--run", "r", "--action", "a"]
            logs, children = [], []
            for n in range(3):
                log = tmp_path / f"{n}.log"
                env = {
                    "LOOM_HOME": str(tmp_path / "home"),
                    "PATH": os.environ["PATH"],
                    "LOOM_SERVER_PATIENCE": "0",  # (else it waits for a server to come)
                }
                child = await zygote.spawn([*argv, "--attempt", str(n)], env, work, log)
                logs.append(log)
                children.append(child)
            assert len({c.pid for c in children}) == 3
            codes = await asyncio.gather(*(c.wait() for c in children))
            # nothing listens on port 9: the runtime says so and exits with its "no spec" code
            assert codes == [2, 2, 2]
            for log in logs:
                assert "cannot fetch the spec of r/a" in log.read_text()
        finally:
            await zygote.stop()

    asyncio.run(scenario())


def test_children_lead_their_own_process_group(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, int]:
        zygote = Zygote(RUNTIME)
        await zygote.start()
        try:
            # the zygote sets the group before it reports the pid, so it is there at once
            child = await zygote.spawn(["--help"], {"PATH": os.environ["PATH"]}, tmp_path,
                                       tmp_path / "help.log")  # fmt: skip
            pgid = os.getpgid(child.pid)
            await child.wait()
            return child.pid, pgid
        finally:
            await zygote.stop()

    try:
        pid, pgid = asyncio.run(scenario())
    except ProcessLookupError:
        pytest.skip("the child ended before its group could be read")
    assert pid == pgid


def test_a_zygote_that_cannot_start_is_reported(tmp_path: Path) -> None:
    async def scenario() -> None:
        zygote = Zygote((sys.executable, "-c", "print('nope')"))
        with pytest.raises(Exception, match="did not start"):
            await zygote.start()
        assert not zygote.alive

    asyncio.run(scenario())


def test_children_do_not_collect_what_the_zygote_imported(tmp_path: Path) -> None:
    """Garbage collection in a child walks only what the child made: the imported heap is
    frozen before forking (collecting it took tens of ms in every attempt, and copied the
    pages it touched)."""
    import json
    import subprocess

    probe = tmp_path / "probe.py"
    probe.write_text(
        "import gc, os, sys\n"
        "from loom.runtime import _zygote\n"
        "def child(request, fds):\n"
        "    with open(request['log'], 'w') as f:\n"
        "        f.write(str(gc.get_freeze_count()))\n"
        "    os._exit(0)\n"
        "_zygote._child = child\n"
        "sys.exit(_zygote.serve())\n"
    )
    log = tmp_path / "child.log"
    request = {"id": "1", "argv": [], "env": {}, "cwd": str(tmp_path), "log": str(log)}
    done = subprocess.run(
        [sys.executable, str(probe)],
        input=json.dumps(request) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert int(log.read_text()) > 10_000  # the runtime's imports: pydantic, httpx, loom...


def test_a_child_that_exits_before_spawn_returns_is_not_lost() -> None:
    # the zygote's "pid" line and the child's "exit" line can be read in one go, before the
    # spawn that waits for the pid resumes (a child that ends at once, on a loaded machine):
    # its exit must still reach whoever waits for it, and it must not count as running
    class Stdin:
        def write(self, data: bytes) -> None:
            pass

        async def drain(self) -> None:
            pass

    class Process:
        def __init__(self) -> None:
            self.stdin = Stdin()
            self.stdout = asyncio.StreamReader()

    async def scenario() -> tuple[int | None, int]:
        zygote = Zygote(RUNTIME)
        process = Process()
        zygote._process = process  # type: ignore[assignment]
        zygote.alive = True
        zygote._reader = asyncio.create_task(zygote._read())
        spawning = asyncio.create_task(zygote.spawn(["--help"], {}, Path("."), Path("log")))
        await asyncio.sleep(0)  # the request is sent
        process.stdout.feed_data(b'{"id": "0", "pid": 4242}\n{"exit": 4242, "code": 0}\n')
        child = await spawning
        code = await asyncio.wait_for(child.wait(), 5)
        children = zygote.children
        process.stdout.feed_eof()
        await zygote._reader
        return code, children

    assert asyncio.run(scenario()) == (0, 0)
