"""Flyte 2 programs on loom: loom's own scripts, written the way Flyte 2 users write theirs
(``import loom as flyte``, ``flyte.init_from_config()``, ``flyte.run(main)``), each run as a
plain ``python script.py`` locally and against a real server."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, start_server

MODES = ["local", "remote"]


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("flyte-compat")
    proc = start_server(root / "server-data", home=root / "home")
    try:
        yield proc
    finally:
        proc.stop()


def run_script(
    mode: str, server: ServerProcess, tmp_path: Path, source: str, *, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``source`` as ``python script.py``: against ``server`` when ``mode`` is remote."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOM_")}
    env["LOOM_IDE_DIR"] = os.environ.get("LOOM_IDE_DIR", "")
    if mode == "remote":
        env.update(server.env)
    else:
        env["LOOM_HOME"] = str(tmp_path / "home")
    return subprocess.run(
        [sys.executable, script.name],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def check(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    for line in expected:
        assert line in result.stdout, f"{line!r} not in:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


ERRORS = """
    import asyncio
    import loom as flyte
    import loom.errors

    env = flyte.TaskEnvironment(name="errs")
    tries = []

    class QuotaError(Exception):
        pass

    @env.task
    async def fails(x: int) -> int:
        raise ValueError(f"bad {x}")

    @env.task
    async def quota() -> int:
        raise QuotaError("over quota")

    @env.task(retries=3)
    async def hopeless() -> int:
        raise flyte.errors.NonRecoverableError(f"gave up in attempt {flyte.ctx().attempt}")

    @env.task
    async def main() -> str:
        seen = []
        try:
            await fails(1)
        except flyte.errors.RuntimeUserError as e:
            seen.append(f"code={e.code} msg={e}")
        try:
            await fails(2)
        except ValueError as e:  # loom's own style keeps working
            seen.append(f"value-error={e}")
        try:
            await quota()
        except QuotaError as e:
            seen.append(f"quota={e.code}")
        try:
            await hopeless()
        except flyte.errors.NonRecoverableError as e:
            seen.append(f"non-recoverable={e.code} {e}")
        return "|".join(seen)

    if __name__ == "__main__":
        flyte.init_from_config()
        run = flyte.run(main)
        run.wait()
        print("RESULT", run.outputs())
"""


def test_user_errors_are_runtime_user_errors_with_a_code(
    mode: str, shared_server: ServerProcess, tmp_path: Path
) -> None:
    check(
        run_script(mode, shared_server, tmp_path, ERRORS),
        "code=ValueError msg=bad 1",
        "value-error=bad 2",
        "quota=QuotaError",
        "non-recoverable=NonRecoverableError gave up in attempt 1\n",  # spent no retry
    )


CONTEXT = """
    import logging
    import pathlib
    import loom as flyte

    env = flyte.TaskEnvironment("ctx")

    @env.task
    async def leaf(x: int) -> str:
        c = flyte.ctx().custom_context
        return f"{x}:{c.get('trace_id')}:{c.get('inc', '-')}"

    @env.task
    async def middle() -> str:
        with flyte.custom_context(inc="m"):
            return await leaf(9)

    @env.task
    async def main() -> str:
        seen = [await leaf(0)]
        for i in range(2):
            with flyte.custom_context(inc=str(i)):
                seen.append(await leaf(i))
        seen.append(await middle())
        return ",".join(seen)

    if __name__ == "__main__":
        flyte.init_from_config(
            root_dir=pathlib.Path(__file__).parent, log_level=logging.INFO, org="acme",
            images=("python:3.11",),
        )
        run = flyte.with_runcontext(
            custom_context={"trace_id": "abc"}, version="v1", copy_style="none",
            labels={"team": "x"}, annotations={"a": "b"}, interruptible=True,
        ).run(main)
        run.wait()
        print("RESULT", run.outputs())
"""


def test_custom_context_reaches_every_task_and_init_takes_flytes_options(
    mode: str, shared_server: ServerProcess, tmp_path: Path
) -> None:
    check(
        run_script(mode, shared_server, tmp_path, CONTEXT),
        "RESULT 0:abc:-,0:abc:0,1:abc:1,9:abc:m\n",
    )


TYPES_AND_CONTEXT = """
    from __future__ import annotations

    import dataclasses
    import os
    from typing import TypedDict

    from pydantic import BaseModel
    from typing_extensions import NotRequired

    import loom as flyte

    env = flyte.TaskEnvironment("types")

    class Reply(TypedDict):
        content: str
        tools: NotRequired[list[str]]

    class Query(BaseModel):
        query: str
        limit: int = 10

    @dataclasses.dataclass
    class Window:
        start: int
        end: int = 5

    @env.task
    async def reply(with_tools: bool) -> Reply:
        return Reply(content="hi", tools=["search"]) if with_tools else Reply(content="hi")

    @env.task
    async def ask(q: Query, w: Window) -> str:
        return f"{q.query}/{q.limit}/{w.start}-{w.end}"

    @env.task
    async def where() -> str:
        c = flyte.ctx()
        scratch = c.raw_data_path.path
        assert os.path.isdir(scratch), scratch
        return f"{c.action.run_name == c.run_name}:{c.run_start_time.tzinfo is not None}"

    @env.task
    async def main() -> str:
        a, b = await reply(False), await reply(True)
        asked = await ask(q={"query": "select 1"}, w={"start": 1})
        return f"{sorted(a)}|{sorted(b)}|{asked}|{await where()}"

    if __name__ == "__main__":
        flyte.init_from_config()
        run = flyte.run(main)
        run.wait()
        print("RESULT", run.outputs())
"""


def test_typeddicts_dicts_for_models_and_flytes_context_attributes(
    mode: str, shared_server: ServerProcess, tmp_path: Path
) -> None:
    check(
        run_script(mode, shared_server, tmp_path, TYPES_AND_CONTEXT),
        "RESULT ['content']|['content', 'tools']|select 1/10/1-5|True:True\n",
    )


DATAFRAMES = """
    import pandas as pd
    import pyarrow as pa

    import loom as flyte
    import loom.io

    env = flyte.TaskEnvironment("frames")

    @env.task
    async def make(n: int) -> flyte.io.DataFrame:
        return flyte.io.DataFrame.from_df(pd.DataFrame({"x": list(range(n))}))

    @env.task
    async def wrap() -> flyte.io.DataFrame:
        return flyte.io.DataFrame.wrap_df(pa.table({"y": [1.5, 2.5]}))

    @env.task
    async def arrow(t: pa.Table) -> pa.Table:
        return t.append_column("z", pa.array([t.num_rows] * t.num_rows))

    @env.task
    def total(df: flyte.io.DataFrame) -> float:
        return float(df.open(pd.DataFrame).all_sync().sum().sum())

    @env.task
    async def main() -> str:
        made = await make(4)
        frame = await made.open(pd.DataFrame).all()
        table = await (await wrap()).open(pa.Table).all()
        local = await flyte.io.DataFrame.from_local(pd.DataFrame({"x": [10]}))
        widened = (await arrow(table)).column_names
        return f"{list(frame.x)}|{table.column_names}|{widened}|{await total.aio(local)}"

    if __name__ == "__main__":
        flyte.init_from_config()
        run = flyte.run(main)
        run.wait()
        print("RESULT", run.outputs())
"""


def test_dataframes_open_as_pandas_and_arrow_as_flyte_code_reads_them(
    mode: str, shared_server: ServerProcess, tmp_path: Path
) -> None:
    check(
        run_script(mode, shared_server, tmp_path, DATAFRAMES),
        "RESULT [0, 1, 2, 3]|['y']|['y', 'z']|10.0\n",
    )


PASSED_AROUND = """
    import functools
    from typing import Callable

    import loom as flyte

    env = flyte.TaskEnvironment("passed")

    class Obj:  # defined in the script itself: __main__ here, the run's module remotely
        def __init__(self, v: int) -> None:
            self.v = v

    @env.task
    async def add_one(x: int) -> int:
        return x + 1

    @env.task
    async def apply(fn: Callable, x: int) -> int:
        return await fn(x)

    @env.task
    async def show(o: Obj) -> int:
        return o.v

    @env.task
    async def main(o: Obj) -> str:
        return f"{await apply(add_one, 1)} {await show(o)} {await show(Obj(3))}"

    if __name__ == "__main__":
        flyte.init_from_config()
        run = flyte.run(main, o=Obj(7))
        run.wait()
        print("RESULT", run.outputs())
"""


def test_tasks_and_script_classes_passed_as_inputs_reach_the_children(
    mode: str, shared_server: ServerProcess, tmp_path: Path
) -> None:
    # remotely, a task input named no module-level task and a script class was another class
    check(run_script(mode, shared_server, tmp_path, PASSED_AROUND), "RESULT 2 7 3\n")


DURABLE_AND_STORAGE = """
    import asyncio

    import loom as flyte
    import loom.durable
    import loom.storage

    env = flyte.TaskEnvironment("durable")

    @env.task
    async def waits() -> str:
        t = await flyte.durable.time.aio()
        await flyte.durable.sleep.aio(0.2)
        later = flyte.durable.now()
        return f"{flyte.durable.time() - t >= 0.2}:{later.year > 2000}"

    @env.task
    def waits_sync() -> bool:
        t = flyte.durable.time()
        flyte.durable.sleep(0.1)
        return flyte.durable.time() - t >= 0.1

    async def main() -> None:
        await flyte.init_from_config.aio(storage=flyte.storage.S3.auto(region="us-east-2"))
        run = await flyte.run.aio(waits)
        await asyncio.to_thread(run.wait)
        print("RESULT", run.outputs(), flyte.run(waits_sync).outputs())

    if __name__ == "__main__":
        asyncio.run(main())
"""


def test_durable_time_storage_settings_and_awaited_init(
    mode: str, shared_server: ServerProcess, tmp_path: Path
) -> None:
    check(run_script(mode, shared_server, tmp_path, DURABLE_AND_STORAGE), "RESULT True:True True\n")
