"""Local-mode benchmark: loom against Flyte 2, both running tasks in-process on this machine.

What it measures
----------------
Whole processes, timed by wall clock from start to exit (interpreter start-up included), each
repeated ``--repeat`` times and reported as min and median, for loom and, when installed, Flyte 2:

* ``import`` - a script that only imports the SDK;
* ``fan-out 1,000`` / ``fan-out 10,000`` - one task gathering that many trivial async tasks;
* ``chain 100`` - one task awaiting 100 trivial tasks one after another.

Every workload script checks its own result and exits non-zero on a wrong answer.

In-process, for loom only, each in a fresh process (``--repeat`` processes):

* ``import loom`` - ``time.perf_counter()`` around the import statement;
* per-task overhead - ``loom.run(fanout, n=10000)`` (after a warm-up run) minus a plain
  ``asyncio.run`` gathering 10,000 equivalent coroutines (also warmed up), divided by 10,000.

The targets (judged on min values) are: fan-out 1,000 loom/flyte <= 0.4, fan-out 10,000
loom/flyte <= 0.2, ``import loom`` <= 0.1 s, per-task overhead <= 50 us. They are reported as
PASS/MISS; this is a benchmark, not a test, and a MISS does not fail it. It exits non-zero only
when a workload fails (a crash or a wrong answer).

How to run
----------
From the repository root::

    bash bench/setup_peers.sh                       # once, to include Flyte 2 (bench/.flyte-venv)
    .venv/bin/python bench/local_fanout.py          # or: make bench
    .venv/bin/python bench/local_fanout.py --repeat 5 --output json

Without ``bench/.flyte-venv`` (or if it cannot import flyte) the peer is skipped and only loom's
figures are printed. Workload scripts are generated into a temporary directory, which also holds
each runtime's scratch files (``LOOM_HOME``, Flyte's local metadata and raw data); it is removed
at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
LOOM_VENV_PYTHON = REPO_ROOT / ".venv" / "bin" / "python"
FLYTE_VENV_PYTHON = BENCH_DIR / ".flyte-venv" / "bin" / "python"
# Flyte 2's local runs write their metadata under this fixed directory unless told otherwise.
FLYTE_DEFAULT_SCRATCH = Path("/tmp/flyte")
PROCESS_TIMEOUT_S = 900.0
OVERHEAD_N = 10_000

# --- generated workload scripts ----------------------------------------------------------------

IMPORT_SCRIPT = (
    "import {module}\n\nraise SystemExit(0 if hasattr({module}, 'TaskEnvironment') else 1)\n"
)

LOOM_HEADER = """\
import asyncio
import sys

import loom

env = loom.TaskEnvironment("bench")


def run(task, n):
    return loom.run(task, n=n).outputs()
"""

FLYTE_HEADER = """\
import asyncio
import os
import sys

import flyte

env = flyte.TaskEnvironment(name="bench")


def run(task, n):
    scratch = os.environ["BENCH_SCRATCH"]
    # No flyte.init(): local mode does not need it, and it costs ~0.5 s of extra imports.
    runner = flyte.with_runcontext(mode="local", raw_data_path=os.path.join(scratch, "raw"))
    if hasattr(runner, "_metadata_path"):
        # Not exposed by with_runcontext; without it local runs create dirs under /tmp/flyte.
        runner._metadata_path = os.path.join(scratch, "metadata")
    out = runner.run(task, n=n).outputs()
    return out[0] if isinstance(out, tuple) else out  # Flyte wraps outputs in ActionOutputs
"""

WORKLOAD_BODY = """

@env.task
async def noop(i: int) -> int:
    return i


@env.task
async def fanout(n: int) -> int:
    return sum(await asyncio.gather(*(noop(i) for i in range(n))))


@env.task
async def chain(n: int) -> int:
    x = 0
    for _ in range(n):
        x = await noop(x) + 1  # sequential
    return x


if __name__ == "__main__":
    kind, n = sys.argv[1], int(sys.argv[2])
    task, expected = (fanout, n * (n - 1) // 2) if kind == "fanout" else (chain, n)
    got = run(task, n)
    if got != expected:
        print(f"wrong result for {kind} {n}: got {got!r}, expected {expected!r}", file=sys.stderr)
        sys.exit(1)
"""

OVERHEAD_SCRIPT = """\
import time

_t0 = time.perf_counter()
import loom

IMPORT_S = time.perf_counter() - _t0

import asyncio
import json
import sys

env = loom.TaskEnvironment("bench")


@env.task
async def noop(i: int) -> int:
    return i


@env.task
async def fanout(n: int) -> int:
    return sum(await asyncio.gather(*(noop(i) for i in range(n))))


async def plain_noop(i: int) -> int:
    return i


async def plain_fanout(n: int) -> int:
    return sum(await asyncio.gather(*(plain_noop(i) for i in range(n))))


def timed(fn, n):
    start = time.perf_counter()
    got = fn(n)
    elapsed = time.perf_counter() - start
    if got != n * (n - 1) // 2:
        print(f"wrong result: got {got!r} for n={n}", file=sys.stderr)
        sys.exit(1)
    return elapsed


def with_loom(n):
    return loom.run(fanout, n=n).outputs()


def with_asyncio(n):
    return asyncio.run(plain_fanout(n))


if __name__ == "__main__":
    n = int(sys.argv[1])
    timed(with_loom, n)  # warm-up
    timed(with_asyncio, n)
    loom_s = timed(with_loom, n)
    plain_s = timed(with_asyncio, n)
    print(json.dumps({"import_s": IMPORT_S, "loom_s": loom_s, "plain_s": plain_s}))
"""

# --- measurement ---------------------------------------------------------------------------------


@dataclass
class Timing:
    """Wall-clock seconds of repeated runs of one workload on one runtime."""

    runs: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def min(self) -> float | None:
        return min(self.runs) if self.runs and self.error is None else None

    @property
    def median(self) -> float | None:
        return statistics.median(self.runs) if self.runs and self.error is None else None

    def to_json(self) -> dict[str, Any]:
        return {"runs": self.runs, "min": self.min, "median": self.median, "error": self.error}


@dataclass
class Runtime:
    """An SDK under test: its name, interpreter and generated scripts."""

    name: str
    python: Path
    version: str
    env: dict[str, str]
    import_script: Path
    workload_script: Path


@dataclass
class Workload:
    """One whole-process workload: a label and the arguments for the runtime's scripts."""

    key: str
    label: str
    args: list[str]  # empty: the import-only script


WORKLOADS = [
    Workload("import", "import SDK", []),
    Workload("fanout_1000", "fan-out 1,000 tasks", ["fanout", "1000"]),
    Workload("fanout_10000", "fan-out 10,000 tasks", ["fanout", "10000"]),
    Workload("chain_100", "chain of 100 tasks", ["chain", "100"]),
]


def run_process(
    python: Path, args: list[str], env: dict[str, str], cwd: Path
) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run one process to completion; return its wall-clock seconds and the finished process."""
    start = time.perf_counter()
    proc = subprocess.run(
        [str(python), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_S,
        check=False,
    )
    return time.perf_counter() - start, proc


def failure(proc: subprocess.CompletedProcess[str]) -> str:
    """A short description of a failed process: its exit code and the end of its stderr."""
    tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
    return f"exit code {proc.returncode}: {tail}"


def time_workload(rt: Runtime, wl: Workload, repeat: int, scratch: Path) -> Timing:
    """Run ``wl`` on ``rt`` ``repeat`` times; stop at the first failure."""
    timing = Timing()
    script = rt.workload_script if wl.args else rt.import_script
    for i in range(repeat):
        run_scratch = scratch / f"{rt.name}-{wl.key}-{i}"
        run_scratch.mkdir(parents=True)
        env = {**rt.env, "BENCH_SCRATCH": str(run_scratch)}
        try:
            elapsed, proc = run_process(rt.python, [str(script), *wl.args], env, run_scratch)
        except subprocess.TimeoutExpired:
            timing.error = f"timed out after {PROCESS_TIMEOUT_S:.0f} s"
            break
        if proc.returncode != 0:
            timing.error = failure(proc)
            break
        timing.runs.append(elapsed)
        shutil.rmtree(run_scratch, ignore_errors=True)
    return timing


@dataclass
class InProcess:
    """loom's in-process figures, one entry per fresh process."""

    import_s: list[float] = field(default_factory=list)
    loom_s: list[float] = field(default_factory=list)
    plain_s: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def overhead_us(self) -> list[float]:
        return [(lo - pl) / OVERHEAD_N * 1e6 for lo, pl in zip(self.loom_s, self.plain_s)]

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "n": OVERHEAD_N,
            "overhead_us": self.overhead_us,
            "import_s_min": min(self.import_s, default=None),
            "import_s_median": statistics.median(self.import_s) if self.import_s else None,
            "overhead_us_min": min(self.overhead_us, default=None),
            "overhead_us_median": (
                statistics.median(self.overhead_us) if self.overhead_us else None
            ),
        }


def measure_in_process(rt: Runtime, script: Path, repeat: int, scratch: Path) -> InProcess:
    """Run the in-process overhead script ``repeat`` times, each in a fresh process."""
    result = InProcess()
    for _ in range(repeat):
        try:
            _, proc = run_process(rt.python, [str(script), str(OVERHEAD_N)], rt.env, scratch)
        except subprocess.TimeoutExpired:
            result.error = f"timed out after {PROCESS_TIMEOUT_S:.0f} s"
            break
        if proc.returncode != 0:
            result.error = failure(proc)
            break
        data = json.loads(proc.stdout.strip().splitlines()[-1])
        result.import_s.append(data["import_s"])
        result.loom_s.append(data["loom_s"])
        result.plain_s.append(data["plain_s"])
    return result


# --- set-up ------------------------------------------------------------------------------------


def sdk_version(python: Path, module: str, env: dict[str, str]) -> str | None:
    """The installed version of ``module`` for ``python``, or None if it cannot be imported."""
    code = f"import importlib.metadata as m, {module}; print(m.version({module!r}))"
    try:
        proc = subprocess.run(
            [str(python), "-c", code],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def base_env() -> dict[str, str]:
    """This process's environment without loom settings that could change what runs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOM_")}
    env.pop("PYTHONPATH", None)
    return env


def make_runtimes(workdir: Path, skip_peers: bool) -> tuple[list[Runtime], str | None]:
    """Generate the scripts; return the runtimes to time and why the peer was skipped, if it was."""
    loom_python = LOOM_VENV_PYTHON if LOOM_VENV_PYTHON.exists() else Path(sys.executable)
    loom_home = workdir / "loom-home"
    loom_home.mkdir()
    loom_env = {**base_env(), "LOOM_HOME": str(loom_home)}
    loom_version = sdk_version(loom_python, "loom", loom_env)
    if loom_version is None:
        raise SystemExit(f"cannot import loom with {loom_python}; run `make install` first")

    scripts = {
        "loom_import.py": IMPORT_SCRIPT.format(module="loom"),
        "loom_workload.py": LOOM_HEADER + WORKLOAD_BODY,
        "loom_overhead.py": OVERHEAD_SCRIPT,
        "flyte_import.py": IMPORT_SCRIPT.format(module="flyte"),
        "flyte_workload.py": FLYTE_HEADER + WORKLOAD_BODY,
    }
    for name, text in scripts.items():
        (workdir / name).write_text(text)

    runtimes = [
        Runtime(
            "loom",
            loom_python,
            loom_version,
            loom_env,
            workdir / "loom_import.py",
            workdir / "loom_workload.py",
        )
    ]
    if skip_peers:
        return runtimes, "--no-peers given"
    if not FLYTE_VENV_PYTHON.exists():
        return runtimes, f"{FLYTE_VENV_PYTHON} not found; run `bash bench/setup_peers.sh`"
    flyte_env = base_env()
    flyte_version = sdk_version(FLYTE_VENV_PYTHON, "flyte", flyte_env)
    if flyte_version is None:
        return runtimes, f"{FLYTE_VENV_PYTHON} cannot import flyte; run bench/setup_peers.sh"
    runtimes.append(
        Runtime(
            "flyte",
            FLYTE_VENV_PYTHON,
            flyte_version,
            flyte_env,
            workdir / "flyte_import.py",
            workdir / "flyte_workload.py",
        )
    )
    return runtimes, None


# --- report ------------------------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def judge(value: float | None, limit: float) -> str:
    if value is None:
        return "n/a"
    return "PASS" if value <= limit else "MISS"


def targets(results: dict[str, dict[str, Timing]], inproc: InProcess) -> list[dict[str, Any]]:
    """The four targets, each with its measured value (min-based) and PASS/MISS/n/a."""

    def loom_vs_flyte(key: str) -> float | None:
        by_rt = results[key]
        flyte = by_rt.get("flyte")
        return ratio(by_rt["loom"].min, flyte.min if flyte else None)

    rows = [
        ("fan-out 1,000: loom/flyte", loom_vs_flyte("fanout_1000"), 0.4, "x", "{:.3f}"),
        ("fan-out 10,000: loom/flyte", loom_vs_flyte("fanout_10000"), 0.2, "x", "{:.3f}"),
        ("import loom (in-process)", min(inproc.import_s, default=None), 0.1, "s", "{:.3f}"),
        ("per-task overhead", min(inproc.overhead_us, default=None), 50.0, "us", "{:.1f}"),
    ]
    return [
        {"target": name, "value": value, "limit": limit, "unit": unit, "spec": spec}
        | {"verdict": judge(value, limit)}
        for name, value, limit, unit, spec in rows
    ]


def fmt(value: float | None, spec: str = "{:.3f}") -> str:
    return "-" if value is None else spec.format(value)


def print_table(
    meta: dict[str, Any],
    results: dict[str, dict[str, Timing]],
    inproc: InProcess,
    goals: list[dict[str, Any]],
) -> None:
    """Print the human-readable report."""
    has_peer = meta["flyte_version"] is not None
    print(
        f"loom {meta['loom_version']} vs "
        + (f"flyte {meta['flyte_version']}" if has_peer else "flyte (skipped)")
        + f" - local mode, python {meta['python']}, {meta['cpus']} CPUs, "
        f"min and median of {meta['repeat']} processes per figure"
    )
    print("whole processes, wall-clock seconds (interpreter start-up included)\n")
    header = (
        f"{'workload':<24}{'loom min':>10}{'loom med':>10}"
        f"{'flyte min':>11}{'flyte med':>11}{'loom/flyte':>12}"
    )
    print(header)
    print("-" * len(header))
    for wl in WORKLOADS:
        loom_t = results[wl.key]["loom"]
        flyte_t = results[wl.key].get("flyte")
        fmin = flyte_t.min if flyte_t else None
        fmed = flyte_t.median if flyte_t else None
        print(
            f"{wl.label:<24}{fmt(loom_t.min):>10}{fmt(loom_t.median):>10}"
            f"{fmt(fmin):>11}{fmt(fmed):>11}{fmt(ratio(loom_t.min, fmin)):>12}"
        )
    print()
    overhead = inproc.overhead_us
    if inproc.import_s:
        print(
            f"in-process, loom: import loom {fmt(min(inproc.import_s))} s min / "
            f"{fmt(statistics.median(inproc.import_s))} s median"
        )
    if overhead:
        print(
            f"in-process, loom: per-task overhead {min(overhead):.1f} us min / "
            f"{statistics.median(overhead):.1f} us median "
            f"(loom.run fan-out {OVERHEAD_N:,}: {fmt(min(inproc.loom_s))} s min; "
            f"plain asyncio: {fmt(min(inproc.plain_s))} s min)"
        )
    print()
    print(f"{'target (on min values)':<32}{'measured':>12}{'limit':>10}  verdict")
    for g in goals:
        value = "-" if g["value"] is None else g["spec"].format(g["value"]) + " " + g["unit"]
        limit = f"<= {g['limit']:g} {g['unit']}"
        print(f"{g['target']:<32}{value:>12}{limit:>10}  {g['verdict']}")
    if not has_peer:
        print(f"\npeer skipped: {meta['peer_skipped']}")
    errors = [
        (wl.label, rt, t.error) for wl in WORKLOADS for rt, t in results[wl.key].items() if t.error
    ]
    if inproc.error:
        errors.append(("in-process overhead", "loom", inproc.error))
    for label, rt, err in errors:
        print(f"\nFAILED: {label} on {rt}: {err}")


# --- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (default 3)")
    parser.add_argument("--output", choices=["table", "json"], default="table")
    parser.add_argument("--no-peers", action="store_true", help="time loom only")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    flyte_scratch_existed = FLYTE_DEFAULT_SCRATCH.exists()
    with tempfile.TemporaryDirectory(prefix="loom-bench-") as tmp:
        workdir = Path(tmp)
        runtimes, skipped = make_runtimes(workdir, args.no_peers)
        scratch = workdir / "runs"
        scratch.mkdir()
        for rt in runtimes:  # untimed warm-up: byte-code caches and file-system cache
            run_process(rt.python, [str(rt.import_script)], rt.env, workdir)

        results: dict[str, dict[str, Timing]] = {}
        for wl in WORKLOADS:
            results[wl.key] = {}
            for rt in runtimes:
                if args.output == "table":
                    print(f"timing {wl.label} on {rt.name} ...", file=sys.stderr, flush=True)
                results[wl.key][rt.name] = time_workload(rt, wl, args.repeat, scratch)
        if args.output == "table":
            print("timing loom in-process ...", file=sys.stderr, flush=True)
        inproc = measure_in_process(runtimes[0], workdir / "loom_overhead.py", args.repeat, scratch)
    if not flyte_scratch_existed and FLYTE_DEFAULT_SCRATCH.exists():
        shutil.rmtree(FLYTE_DEFAULT_SCRATCH, ignore_errors=True)  # a Flyte that ignored our paths

    meta = {
        "loom_version": runtimes[0].version,
        "flyte_version": runtimes[1].version if len(runtimes) > 1 else None,
        "peer_skipped": skipped,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "repeat": args.repeat,
    }
    goals = targets(results, inproc)
    if args.output == "json":
        report = {
            "meta": meta,
            "workloads": {
                wl.key: {"label": wl.label} | {rt: t.to_json() for rt, t in results[wl.key].items()}
                for wl in WORKLOADS
            },
            "in_process": inproc.to_json(),
            "targets": [{k: v for k, v in g.items() if k != "spec"} for g in goals],
        }
        print(json.dumps(report, indent=2))
    else:
        print_table(meta, results, inproc, goals)
    failed = inproc.error is not None or any(
        t.error for by_rt in results.values() for t in by_rt.values()
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
