"""A task's code holds only its attempt's credential, and it reaches nothing else.

A real server runs a victim's action and an attacker's task side by side; the attacker's code
tries, with the credential it was given, what used to work with the server's one runtime
key: forging the victim's result (and running code in its parent with a pickled error),
reading its secrets, spec and run, registering its session, signing in, managing keys. Then,
once the attacker's attempt is over, its credential is tried again.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import remote_run, run_cli, write_module

pytestmark = pytest.mark.e2e

FLOW = """
import base64
import os
import pickle
import time
from pathlib import Path

import httpx

import loom

env = loom.TaskEnvironment("creds")


@env.task
def victim(marker: str) -> int:
    deadline = time.monotonic() + 120
    while not Path(marker).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return 7


class Boom:
    def __reduce__(self):
        return (os.system, ("touch " + os.environ["PWNED"],))


@env.task
def attacker(target: str, keep: str) -> dict[str, int]:
    key = os.environ["LOOM_API_KEY"]
    Path(keep).write_text(key)
    api = httpx.Client(
        base_url=os.environ["LOOM_ENDPOINT"] + "/api/v1",
        headers={"Authorization": f"Bearer {key}"},
    )
    pickled = base64.b64encode(pickle.dumps(Boom())).decode()
    forged = {"outputs": {"value": 1337}}
    error = {"error": {"type": "X", "message": "x", "pickled": pickled}}
    tries = {
        "read the victim's run": api.get(f"/runs/{target}"),
        "list runs": api.get("/runs"),
        "read the victim's spec": api.get(f"/runs/{target}/actions/a0/spec"),
        "read the victim's secrets": api.get(f"/runs/{target}/actions/a0/secrets"),
        "sign in with it": httpx.post(
            os.environ["LOOM_ENDPOINT"] + "/api/v1/login", json={"api_key": key}
        ),
        "create an API key": api.post("/api-keys", json={"name": "mine", "admin": True}),
        "start a run": api.post("/runs", json={
            "bundle": "sha256:" + "0" * 64,
            "root": {"name": "a0", "task": {
                "module": "m", "attr": "a", "name": "e.a", "environment": "e"
            }},
        }),
        "register the victim's session": api.post(
            f"/runs/{target}/actions/a0/session",
            json={"attempt": 1, "kind": "vscode", "socket": "/tmp/x.sock", "workspace": "/w"},
        ),
        "finish the victim's attempt": api.post(
            f"/runs/{target}/actions/a0/attempts/1/finished", json=forged
        ),
        "abort the victim": api.post(f"/runs/{target}/abort"),
    }
    seen = {what: r.status_code for what, r in tries.items()}
    for what, result in (("forge its result", forged), ("forge a pickled error", error)):
        item = {"run": target, "action": "a0", "attempt": 1, "result": result}
        r = api.post("/attempts:finish", json=[item])
        seen[what] = r.json()[0]["status"] if r.status_code == 200 else r.status_code
    return seen
"""


def test_a_tasks_credential_reaches_only_its_own_attempt(server: Any, tmp_path: Path) -> None:
    flow = write_module(tmp_path / "creds_flow.py", FLOW)
    marker, keep, pwned = tmp_path / "go", tmp_path / "credential", tmp_path / "pwned"
    started = run_cli(
        "run", "--remote", "--detach", str(flow), "victim", "--marker", str(marker),
        env=server.env,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    victim = started.stdout.strip()
    deadline = time.monotonic() + 60
    while True:  # the victim's attempt runs: its credential is live
        shown = json.loads(run_cli("get", "run", victim, "-o", "json", env=server.env).stdout)
        if shown["run"]["phase"] == "RUNNING":
            break
        assert time.monotonic() < deadline, shown
        time.sleep(0.2)
    attack = remote_run(
        server, "--env", f"PWNED={pwned}", str(flow), "attacker",
        "--target", victim, "--keep", str(keep),
    )  # fmt: skip
    assert attack["phase"] == "SUCCEEDED", attack
    seen = attack["outputs"]
    assert seen == {
        "read the victim's run": 404,
        "list runs": 403,
        "read the victim's spec": 404,
        "read the victim's secrets": 404,
        "sign in with it": 401,
        "create an API key": 403,
        "start a run": 403,
        "register the victim's session": 404,
        "finish the victim's attempt": 404,
        "abort the victim": 404,
        "forge its result": 403,
        "forge a pickled error": 403,
    }, seen
    marker.touch()
    done = json.loads(run_cli("get", "action", victim, "a0", "-o", "json", env=server.env).stdout)
    deadline = time.monotonic() + 60
    while done["phase"] != "SUCCEEDED" and time.monotonic() < deadline:
        time.sleep(0.2)
        done = json.loads(
            run_cli("get", "action", victim, "a0", "-o", "json", env=server.env).stdout
        )
    assert done["phase"] == "SUCCEEDED", done
    outputs = httpx.get(
        f"{server.endpoint}/api/v1/runs/{victim}/actions/a0/outputs", headers=server.headers
    )
    assert outputs.json()["value"] == 7  # not 1337
    assert not pwned.exists()
    # the attacker's attempt is over: so is its credential, for anything at all
    credential = keep.read_text()
    assert credential.startswith("loomat_")
    attacker_run = attack["run"]
    for path in (f"/runs/{attacker_run}", f"/runs/{attacker_run}/actions/a0/spec", "/whoami"):
        r = httpx.get(
            f"{server.endpoint}/api/v1{path}", headers={"Authorization": f"Bearer {credential}"}
        )
        assert r.status_code == 401, (path, r.text)
