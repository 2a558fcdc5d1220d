"""A stand-in for ``python -m loom.runtime``, for testing the server and executor.

It speaks the runtime's side of the protocol: read the spec, report ``started``, act according
to the task's ``attr``, report ``finished``. Inputs steer it (see ``main``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import httpx


def main() -> int:
    parser = argparse.ArgumentParser()
    for name in ("--endpoint", "--run", "--action", "--attempt"):
        parser.add_argument(name, required=True)
    args = parser.parse_args()
    assert os.environ["LOOM_ENDPOINT"] == args.endpoint
    client = httpx.Client(
        base_url=f"{args.endpoint}/api/v1",
        headers={"Authorization": f"Bearer {os.environ['LOOM_API_KEY']}"},
        timeout=60,
    )
    base = f"/runs/{args.run}/actions/{args.action}"
    attempt = int(args.attempt)
    spec = client.get(f"{base}/spec").raise_for_status().json()
    client.post(f"{base}/attempts/{attempt}/started").raise_for_status()
    what, inputs = spec["task"]["attr"], spec["inputs"]
    print(f"fake runtime: {what} attempt {attempt} pid {os.getpid()}", flush=True)

    def finish(value: object = None, error: dict[str, str] | None = None) -> int:
        result = {"error": error} if error else {"outputs": {"value": value}}
        client.post(f"{base}/attempts/{attempt}/finished", json=result).raise_for_status()
        return 0

    if what == "ok":
        return finish({"inputs": inputs, "env": os.environ.get("GREETING")})
    if what == "fail":
        return finish(error={"type": "ValueError", "message": "it failed", "kind": "user"})
    if what == "flaky":
        if attempt < inputs["succeed_on"]:
            return finish(error={"type": "OSError", "message": f"try {attempt}", "kind": "user"})
        return finish(attempt)
    if what == "sleep":
        for i in range(int(inputs["s"] * 10)):
            print(f"tick {i}", flush=True)
            time.sleep(0.1)
        return finish("slept")
    if what == "exit":
        print("exiting without a report", flush=True)
        return int(inputs["code"])
    if what == "grandchild":  # leaves a process behind in its group, then exits
        import subprocess

        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        with open(inputs["pidfile"], "w") as f:
            f.write(str(child.pid))
        return finish("left a child")
    if what == "fanout":
        names = []
        for i in range(inputs["n"]):
            child = {
                "name": f"{args.action}-{i}",
                "parent": args.action,
                "task": {**spec["task"], "attr": inputs.get("child", "ok"), "name": "env.child"},
                "inputs": {"i": i, **inputs.get("child_inputs", {})},
            }
            client.post(f"/runs/{args.run}/actions", json=child).raise_for_status()
            names.append(child["name"])
        values = []
        for name in names:
            while True:
                info = client.get(f"/runs/{args.run}/actions/{name}/wait?timeout=10").json()
                if info["phase"] in ("SUCCEEDED", "FAILED", "ABORTED"):
                    break
            if info["phase"] != "SUCCEEDED":
                return finish(error={"type": "RuntimeError", "message": f"{name} failed"})
            out = client.get(f"/runs/{args.run}/actions/{name}/outputs").json()
            value = out["value"]
            values.append(value["inputs"]["i"] if isinstance(value, dict) else value)
        return finish(values)
    return finish(error={"type": "KeyError", "message": f"unknown fake task {what}"})


if __name__ == "__main__":
    sys.exit(main())
