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

It also times ``one_task_warm``: inside a running task, the median latency of one trivial call
to a warm worker awaited on its own (submission, dispatch, the call, its result), over 200 calls.

Raw Ray as a peer
-----------------
With ``bench/.ray-venv`` (``bash bench/setup_peers.sh``), once the loom server is stopped, it
runs the same workloads on raw Ray: ``--repeat`` fresh processes of ``bench/.ray-venv/bin/python``,
each ``ray.init(num_cpus=<cpus>, include_dashboard=False)`` (a local instance addressed as
127.0.0.1, its files in the throwaway directory), then, in the driver:

* start-up: from spawning the process until ``ray.init`` returned (loom: the server's start,
  from spawning ``python -m loom.server`` until it is ready);
* fan-out 1,000, cold: the first 1,000 remote tasks gathered right after ``ray.init``, while its
  workers still start (loom: ``fan_out`` 1,000, a fresh process per action);
* fan-out 1,000, warm: the same after an untimed round, every worker up (loom: ``fan_out_warm``);
* chain of 100, warm: 100 remote calls, each awaited before the next (loom: ``chain_warm``);
* one warm task end to end: the median of 200 single calls (loom: ``one_task_warm``).

loom's fan-outs and chains are whole ``loom run --remote`` processes (client start-up, bundle,
submission and a root action included) while Ray's are timed in a driver already connected: the
ratios count loom's fixed costs against it. Targets from the issue: warm fan-out 1,000
<= 1x Ray, warm chain of 100 <= 2x Ray, cold fan-out 1,000 <= 5x Ray (judged on min values) and
one warm task end to end <= 10 ms (loom's own value). Without ``bench/.ray-venv`` (or with
``--no-peers``) the Ray columns are empty and the report says why.

How to run
----------
    .venv/bin/python bench/control_plane.py [--repeat 1] [--output json] [--skip-1000]
        [--no-peers]

``--skip-1000`` runs the 100-task fan-outs only, on both sides (a quick check; no targets).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from _server import PYTHON, Server

RAY_PYTHON = Path(__file__).resolve().parent / ".ray-venv" / "bin" / "python"
ONE_TASK_CALLS = 200

FLOW = """
import asyncio
import statistics
import time

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


@plain.task
async def one_task_warm(n: int) -> float:
    # the replicas may have gone idle since the last workload: bring them back, untimed
    await asyncio.gather(*(warm_noop(i) for i in range(10)))
    times = []
    for i in range(n):
        started = time.perf_counter()
        await warm_noop(i)
        times.append(time.perf_counter() - started)
    return statistics.median(times)
"""

# Run by bench/.ray-venv/bin/python: argv is the temp dir, the fan-out size, the chain length
# and the number of single calls. Prints "ray ready" once ray.init returned, then its figures.
RAY_SCRIPT = """
import json
import os
import statistics
import sys
import time

import ray

temp_dir, fan, chain_n, calls = sys.argv[1], *map(int, sys.argv[2:])
ray.init(num_cpus=os.cpu_count(), include_dashboard=False, _temp_dir=temp_dir)
print("ray ready", flush=True)


@ray.remote
def noop(i: int) -> int:
    return i


def fan_out(n: int) -> float:
    started = time.perf_counter()
    total = sum(ray.get([noop.remote(i) for i in range(n)]))
    took = time.perf_counter() - started
    if total != n * (n - 1) // 2:
        raise SystemExit(f"fan-out {n}: expected {n * (n - 1) // 2}, got {total}")
    return took


def chain(n: int) -> float:
    started = time.perf_counter()
    x = 0
    for _ in range(n):
        x = ray.get(noop.remote(x)) + 1
    took = time.perf_counter() - started
    if x != n:
        raise SystemExit(f"chain {n}: expected {n}, got {x}")
    return took


def one_task(calls: int) -> float:
    times = []
    for i in range(calls):
        started = time.perf_counter()
        ray.get(noop.remote(i))
        times.append(time.perf_counter() - started)
    return statistics.median(times)


figures = {"fan_out_cold_s": fan_out(fan)}  # the instance's first tasks: workers still start
fan_out(fan)  # untimed: every worker up, the function imported in each
figures["fan_out_warm_s"] = fan_out(fan)
figures["chain_warm_s"] = chain(chain_n)
figures["one_task_s"] = one_task(calls)
ray.shutdown()
print(json.dumps(figures))
"""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def time_run(server: Server, flow: Path, task: str, n: int) -> tuple[float, Any]:
    """Run ``task --n n`` as a whole ``loom run --remote`` process; its seconds and outputs."""
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
    if "outputs" not in doc:
        raise SystemExit(f"{task} n={n} failed: {doc}")
    return took, doc["outputs"]


def time_loom(workdir: Path, repeat: int, fan: int) -> dict[str, Any]:
    """loom's figures, on a server started (and stopped) here."""
    # the flow's own directory: its source root is what every run bundles, and the
    # server's data directory (which grows with every workload) must not be in it
    (workdir / "flow").mkdir()
    flow = workdir / "flow" / "flow.py"
    flow.write_text(textwrap.dedent(FLOW))
    server = Server(workdir)
    results: dict[str, Any] = {"server_start_s": server.start_s, "cpus": os.cpu_count()}
    try:
        workloads = [("fan_out", 100), ("fan_out_warm", 100), ("chain", 100), ("chain_warm", 100)]
        if fan != 100:
            workloads += [("fan_out", fan), ("fan_out_warm", fan)]
        for task, n in workloads:
            expect = n if task.startswith("chain") else n * (n - 1) // 2
            times = []
            for _ in range(repeat):
                took, got = time_run(server, flow, task, n)
                if got != expect:
                    raise SystemExit(f"{task} n={n}: expected {expect}, got {got}")
                times.append(took)
            results[f"{task}_{n}_s"] = min(times)
            results[f"{task}_{n}_median_s"] = statistics.median(times)
            results[f"server_rss_after_{task}_{n}_mb"] = rss_mb(server.process.pid)
            print(f"{task} n={n}: {min(times):.2f} s", file=sys.stderr)
        medians = [
            time_run(server, flow, "one_task_warm", ONE_TASK_CALLS)[1] for _ in range(repeat)
        ]
        if not all(isinstance(m, float) and m > 0 for m in medians):
            raise SystemExit(f"one_task_warm: expected seconds, got {medians}")
        results["one_task_warm_s"] = min(medians)
        print(f"one_task_warm: {min(medians) * 1000:.1f} ms", file=sys.stderr)
    finally:
        server.stop()
    return results


def ray_env() -> dict[str, str]:
    """The Ray processes' environment: none of the caller's loom, Ray or Python path settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOM_", "RAY_"))}
    env.pop("PYTHONPATH", None)
    return env | {
        # a single node addressed as 127.0.0.1, so every connection stays on loopback (on Linux
        # Ray otherwise takes the machine's address, as the first node of a would-be cluster)
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        # token auth stays on (Ray's default) with a token of ours: Ray's would go to ~/.ray
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
    }


def ray_version(env: dict[str, str]) -> str | None:
    """Ray's version in bench/.ray-venv, or None if it cannot import ray. Also warms the file
    cache, so the first timed start-up does not pay for reading Ray from disk."""
    try:
        result = subprocess.run(
            [str(RAY_PYTHON), "-c", "import ray; print(ray.__version__)"],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def run_ray_once(workdir: Path, env: dict[str, str], fan: int) -> dict[str, float]:
    """One fresh Ray instance: its start-up (spawn to ``ray.init`` returned, as ``Server``
    times loom's) and the figures RAY_SCRIPT prints. Raises RuntimeError on a failure."""
    script = workdir / "ray_bench.py"
    script.write_text(textwrap.dedent(RAY_SCRIPT))
    temp = Path(tempfile.mkdtemp(prefix="ray-", dir=workdir))  # Ray's sockets, logs, spills
    log = workdir / "ray-stderr.log"
    with log.open("w") as stderr:
        started = time.perf_counter()
        # its own session: if it hangs, its whole group (driver, raylet, GCS, workers) is killed
        proc = subprocess.Popen(
            [str(RAY_PYTHON), str(script), str(temp), str(fan), "100", str(ONE_TASK_CALLS)],
            env=env, stdout=subprocess.PIPE, stderr=stderr, text=True, start_new_session=True,
        )  # fmt: skip
        assert proc.stdout is not None
        start_s = None
        for line in proc.stdout:
            if line.strip() == "ray ready":
                start_s = time.perf_counter() - started
                break
        try:
            out, _ = proc.communicate(timeout=900)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise RuntimeError("timed out after 900 s") from None
    if start_s is None or proc.returncode != 0:
        tail = "\n".join(log.read_text().strip().splitlines()[-15:])
        raise RuntimeError(f"exit code {proc.returncode}: {tail}")
    return {"start_s": start_s, **json.loads(out.strip().splitlines()[-1])}


def time_ray(workdir: Path, repeat: int, fan: int, no_peers: bool) -> dict[str, Any]:
    """Ray's figures (min and median over ``repeat`` fresh instances), or why there are none:
    ``skipped`` (no Ray to run) or ``error`` (Ray failed)."""
    if no_peers:
        return {"skipped": "--no-peers given"}
    if not RAY_PYTHON.exists():
        return {"skipped": f"{RAY_PYTHON} not found; run `bash bench/setup_peers.sh`"}
    env = ray_env()
    version = ray_version(env)
    if version is None:
        return {"skipped": f"{RAY_PYTHON} cannot import ray; run `bash bench/setup_peers.sh`"}
    ray: dict[str, Any] = {"version": version, "instances": repeat}
    runs = []
    for _ in range(repeat):
        try:
            runs.append(run_ray_once(workdir, env, fan))
        except RuntimeError as e:
            return ray | {"error": str(e)}
        print("ray: " + ", ".join(f"{k} {v:.3f}" for k, v in runs[-1].items()), file=sys.stderr)
    for key in runs[0]:
        ray[key] = min(r[key] for r in runs)
        ray[f"{key}_median"] = statistics.median(r[key] for r in runs)
    return ray


def judge(value: float | None, limit: float) -> str:
    if value is None:
        return "n/a"
    return "PASS" if value <= limit else "MISS"


def fmt(value: float | None, spec: str = "{:.4f}") -> str:
    return "-" if value is None else spec.format(value)


def versus(results: dict[str, Any], ray: dict[str, Any], fan: int) -> list[dict[str, Any]]:
    """Each loom figure next to Ray's with their ratio, and the issue's target: a ceiling on the
    ratio (the fan-outs' only at 1,000 tasks) or on loom's own seconds (the single warm task)."""
    full = fan == 1000
    rows = [
        # figure, loom key, Ray key, ceiling on loom/Ray, ceiling on loom's seconds
        ("start-up: server vs ray.init", "server_start_s", "start_s", None, None),
        (f"fan-out {fan:,}, warm", f"fan_out_warm_{fan}_s", "fan_out_warm_s",
         1.0 if full else None, None),
        ("chain of 100, warm", "chain_warm_100_s", "chain_warm_s", 2.0, None),
        (f"fan-out {fan:,}, plain/cold", f"fan_out_{fan}_s", "fan_out_cold_s",
         5.0 if full else None, None),
        ("one warm task end to end", "one_task_warm_s", "one_task_s", None, 0.010),
    ]  # fmt: skip
    table = []
    for label, loom_key, ray_key, max_ratio, max_loom_s in rows:
        loom_s, ray_s = results[loom_key], ray.get(ray_key)
        ratio = loom_s / ray_s if ray_s else None
        row = {"figure": label, "loom_s": loom_s, "ray_s": ray_s, "loom_over_ray": ratio}
        if max_ratio is not None:
            row |= {"target": f"loom/ray <= {max_ratio:g}", "verdict": judge(ratio, max_ratio)}
        elif max_loom_s is not None:
            row |= {
                "target": f"loom <= {max_loom_s * 1000:g} ms",
                "verdict": judge(loom_s, max_loom_s),
            }
        else:
            row |= {"target": None, "verdict": None}
        table.append(row)
    return table


def print_report(results: dict[str, Any], ray: dict[str, Any], table: list[dict[str, Any]]) -> None:
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
        print(f"  {label:40s} {fmt(value, '{:.3f}'):>10s}  {judge(value, limit)}")

    if "version" in ray:
        peer = f"raw Ray {ray['version']} (min of {ray['instances']} fresh instance(s))"
    else:
        peer = "raw Ray (skipped)"
    print(f"\nloom vs {peer}, seconds")
    print(f"  {'figure':30s} {'loom':>9s} {'ray':>9s} {'loom/ray':>9s}  target")
    for row in table:
        target = "" if row["target"] is None else f"{row['target']:18s} {row['verdict']}"
        line = (
            f"  {row['figure']:30s} {fmt(row['loom_s']):>9s} {fmt(row['ray_s']):>9s} "
            f"{fmt(row['loom_over_ray'], '{:.2f}x'):>9s}  {target}"
        )
        print(line.rstrip())
    if "skipped" in ray:
        print(f"\npeer skipped: {ray['skipped']}")
    if "error" in ray:
        print(f"\nFAILED: ray: {ray['error']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--output", choices=["table", "json"], default="table")
    parser.add_argument("--skip-1000", action="store_true", help="only the 100-action workloads")
    parser.add_argument("--no-peers", action="store_true", help="time loom only, not Ray")
    args = parser.parse_args()
    fan = 100 if args.skip_1000 else 1000

    workdir = Path(tempfile.mkdtemp(prefix="loom-bench-"))
    try:
        results = time_loom(workdir, args.repeat, fan)
        # after the server is stopped, so that its idle workers do not share the CPUs
        ray = time_ray(workdir, args.repeat, fan, args.no_peers)
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
    table = versus(results, ray, fan)
    if args.output == "json":
        print(json.dumps(results | {"ray": ray, "vs_ray": table}, indent=2))
    else:
        print_report(results, ray, table)
    if "error" in ray:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
