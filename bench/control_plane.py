"""Control-plane benchmark: runs on a real local loom server, timed end to end.

What it measures
----------------
It starts ``python -m loom.server`` on a free loopback port with a throwaway data directory,
then times, as whole ``loom run --remote`` processes (submission, scheduling, every action's
process, results), with and without a ``ReusePolicy`` on the workers:

* fan-out of 100 and of 1,000 trivial async tasks (one action each, plus the parent);
* a chain of 100 trivial tasks awaited one after another.

From those it derives the dispatch cost per action, ``(T(fan-out 1,000) - T(fan-out 100)) /
900`` (what one more action costs the platform), and the sequential cost per action of the
chain, ``T(chain 100) / 100`` (cold process start plus round trips, with no parallelism to hide
it). ``cold_s_per_action_per_core`` is ``T(fan-out 100) * cores / 100`` without reuse. It samples
the server's resident memory (the server process only) after each workload.

Targets from the issue: 1,000-task fan-out with reuse <= 5 s end to end (Prefect 3 with its
server took 10-16 s on this machine class), warm dispatch overhead <= 5 ms per action, cold
process start <= 0.2 s per action per core. It reports PASS/MISS and never fails on timing.

How to run
----------
    .venv/bin/python bench/control_plane.py [--repeat 1] [--output json] [--skip-1000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
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

import loom

plain = loom.TaskEnvironment("bench-plain")
warm = loom.TaskEnvironment(
    "bench-warm", reusable=loom.ReusePolicy(replicas=2, concurrency=50, idle_ttl=60)
)


@plain.task
async def noop(i: int) -> int:
    return i


@warm.task
async def warm_noop(i: int) -> int:
    return i


@plain.task
async def fan_out(n: int) -> int:
    return sum(await asyncio.gather(*(noop(i) for i in range(n))))


@plain.task
async def fan_out_warm(n: int) -> int:
    return sum(await asyncio.gather(*(warm_noop(i) for i in range(n))))


@plain.task
async def chain(n: int) -> int:
    x = 0
    for _ in range(n):
        x = await noop(x) + 1
    return x


@plain.task
async def chain_warm(n: int) -> int:
    x = 0
    for _ in range(n):
        x = await warm_noop(x) + 1
    return x
"""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def time_run(server: Server, flow: Path, task: str, n: int, expect: int) -> float:
    started = time.perf_counter()
    result = subprocess.run(  # noqa: PLW1510 - the exit code is checked through the output
        [str(PYTHON), "-m", "loom.cli", "run", "--remote", "-o", "json", str(flow), task,
         "--n", str(n)],
        env=server.env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    took = time.perf_counter() - started
    try:
        doc = json.loads(result.stdout)
    except json.JSONDecodeError:
        raise SystemExit(f"{task} n={n} failed:\n{result.stderr}") from None
    if doc.get("outputs") != expect:
        raise SystemExit(f"{task} n={n}: expected {expect}, got {doc}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--output", choices=["table", "json"], default="table")
    parser.add_argument("--skip-1000", action="store_true", help="only the 100-action workloads")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="loom-bench-"))
    try:
        # the flow's own directory: its source root is what every run bundles, and the
        # server's data directory (which grows with every workload) must not be in it
        (workdir / "flow").mkdir()
        flow = workdir / "flow" / "flow.py"
        flow.write_text(textwrap.dedent(FLOW))
        server = Server(workdir)
        results: dict[str, Any] = {"server_start_s": server.start_s, "cpus": os.cpu_count()}
        try:
            workloads = [
                ("fan_out", 100),
                ("fan_out_warm", 100),
                ("chain", 100),
                ("chain_warm", 100),
            ]
            if not args.skip_1000:
                workloads += [("fan_out", 1000), ("fan_out_warm", 1000)]
            for task, n in workloads:
                expect = n if task.startswith("chain") else n * (n - 1) // 2
                times = [time_run(server, flow, task, n, expect) for _ in range(args.repeat)]
                results[f"{task}_{n}_s"] = min(times)
                results[f"{task}_{n}_median_s"] = statistics.median(times)
                results[f"server_rss_after_{task}_{n}_mb"] = rss_mb(server.process.pid)
                print(f"{task} n={n}: {min(times):.2f} s", file=sys.stderr)
        finally:
            server.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    for kind in ("", "_warm"):
        if f"fan_out{kind}_1000_s" in results:
            results[f"dispatch{kind}_ms_per_action"] = (
                (results[f"fan_out{kind}_1000_s"] - results[f"fan_out{kind}_100_s"]) / 900 * 1000
            )
        results[f"chain{kind}_s_per_action"] = results[f"chain{kind}_100_s"] / 100
    # 100 parallel cold actions on N cores: how long each core spends per action
    results["cold_s_per_action_per_core"] = results["fan_out_100_s"] * (results["cpus"] or 1) / 100
    if args.output == "json":
        print(json.dumps(results, indent=2))
        return
    print(f"loom control plane on {results['cpus']} CPUs, server ready in "
          f"{results['server_start_s']:.2f} s")  # fmt: skip
    for key, value in results.items():
        if key.endswith(("_s", "_mb", "_action")):
            print(f"  {key:40s} {value:10.3f}")
    checks = [
        ("fan-out 1,000 with reuse <= 5 s", results.get("fan_out_warm_1000_s"), 5.0),
        ("warm dispatch <= 5 ms/action", results.get("dispatch_warm_ms_per_action"), 5.0),
        (
            "cold start <= 0.2 s/action/core",
            results["chain_s_per_action"] / (results["cpus"] or 1),
            0.2,
        ),
    ]
    for label, value, limit in checks:
        verdict = "n/a" if value is None else ("PASS" if value <= limit else "MISS")
        shown = "-" if value is None else f"{value:.3f}"
        print(f"  {label:40s} {shown:>10s}  {verdict}")


if __name__ == "__main__":
    main()
