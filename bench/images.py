"""Image environments benchmark: what a task image costs on a real local loom server.

What it measures
----------------
It starts ``python -m loom.server`` (``bench/_server.py``) and, as whole ``loom run --remote``
processes:

* ``build_warm_cache_s``: the first run of a task whose image adds one small pure-Python
  package (``cowsay``): the environment's build with uv's cache as this machine has it (loom's
  own dependencies cached by its install), plus the run;
* ``build_cold_cache_s``: the same spec on a second server whose uv cache is empty
  (``UV_CACHE_DIR`` a fresh directory): every package is downloaded from the index;
* ``start_no_image_ms`` / ``start_image_ms``: inside a running task, the median of 40 trivial
  calls, one at a time, to a plain task without an image and to one whose environment is built
  (each a fresh action process, forked from the fork server of its environment);
* ``builds_for_100_actions``: 100 actions of one new image submitted at once, and how many
  builds of its environment there were (the build log's "building environment" lines).

There is no peer to compare with here: Flyte 2 builds container images (minutes), Prefect
runs in the worker's environment. Target from the issue: an action with a cached environment
starts <= 10 ms later than one without an image.

How to run
----------
    .venv/bin/python bench/images.py [--output json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from _server import PYTHON, Server

FLOW = """
import asyncio
import statistics
import time

import loom

cow = loom.TaskEnvironment(
    "cow", image=loom.Image.from_debian_base().with_pip_packages("cowsay==6.1")
)
fresh = loom.TaskEnvironment(
    "fresh", image=loom.Image.from_debian_base().with_pip_packages("cowsay==6.0")
)
plain = loom.TaskEnvironment("plain", depends_on=[cow, fresh])


@cow.task
async def in_image(i: int) -> int:
    return i


@fresh.task
async def in_fresh(i: int) -> int:
    return i


@plain.task
async def no_image(i: int) -> int:
    return i


@plain.task
async def first() -> int:
    return await in_image(0)


@plain.task
async def starts(n: int) -> list[float]:
    await in_image(0)
    await no_image(0)
    bare, imaged = [], []
    for i in range(n):
        started = time.perf_counter()
        await no_image(i)
        bare.append(time.perf_counter() - started)
        started = time.perf_counter()
        await in_image(i)
        imaged.append(time.perf_counter() - started)
    return [statistics.median(bare), statistics.median(imaged)]


@plain.task
async def crowd(n: int) -> int:
    return len(await asyncio.gather(*(in_fresh(i) for i in range(n))))
"""


def run(server: Server, flow: Path, *args: str) -> tuple[float, Any]:
    started = time.perf_counter()
    done = subprocess.run(
        [str(PYTHON), "-m", "loom.cli", "run", "--remote", "-o", "json", str(flow), *args],
        check=False, env=server.env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"loom run {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return took, json.loads(done.stdout)["outputs"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", choices=["text", "json"], default="text")
    options = parser.parse_args()
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="loom-bench-images-") as tmp:
        work = Path(tmp)
        flow = work / "flow" / "flow.py"
        flow.parent.mkdir()
        flow.write_text(textwrap.dedent(FLOW))
        server = Server(work / "warm")
        try:
            figures["build_warm_cache_s"], _ = run(server, flow, "first")
            _, (bare, imaged) = run(server, flow, "starts", "--n", "40")
            figures["start_no_image_ms"] = bare * 1000
            figures["start_image_ms"] = imaged * 1000
            run(server, flow, "crowd", "--n", "100")
            builds = 0
            for log in (server.data / "environments").glob("*.log"):
                if "cowsay==6.0" in (log.parent / log.stem / ".loom-ready").read_text():
                    builds = log.read_text().count("building environment")
            figures["builds_for_100_actions"] = builds
        finally:
            server.stop()
        cold = Server(work / "cold", env={"UV_CACHE_DIR": str(work / "empty-uv-cache")})
        try:
            figures["build_cold_cache_s"], _ = run(cold, flow, "first")
        finally:
            cold.stop()
    extra = figures["start_image_ms"] - figures["start_no_image_ms"]
    if options.output == "json":
        print(json.dumps(figures, indent=2))
        return
    print(f"image environments on {sys.platform}, one run each")
    for name, value in figures.items():
        print(f"  {name:32} {value:10.3f}" if isinstance(value, float) else f"  {name:32} {value}")
    verdict = "PASS" if extra <= 10 else "MISS"
    print(f"  start with a cached image: +{extra:.1f} ms (target <= 10 ms)  {verdict}")
    print(f"  builds for 100 concurrent actions: {figures['builds_for_100_actions']} (expected 1)")


if __name__ == "__main__":
    main()
