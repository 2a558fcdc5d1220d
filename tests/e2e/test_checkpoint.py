"""``loom.ctx().checkpoint`` in Flyte 2 programs (``import loom as flyte``), run as plain
``python script.py`` locally and against a real server: a task that fails after saving resumes
from its checkpoint on the retry, in another process; and nobody but the action's own next
attempt (or an admin) reads it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess
from tests.e2e.test_flyte_compat import check, mode, run_script, shared_server

pytestmark = pytest.mark.e2e

__all__ = ["mode", "shared_server"]  # fixtures, used by name

RESUME = """
    import asyncio

    import loom as flyte

    env = flyte.TaskEnvironment(name="checkpoint_generic_json")

    RETRIES = 3

    @env.task(retries=RETRIES)
    def use_checkpoint(n_iterations: int) -> str:
        assert n_iterations > RETRIES
        checkpoint = flyte.ctx().checkpoint
        assert checkpoint is not None  # always available inside a task

        path = checkpoint.load_sync()
        prev = None if path is None else path.read_bytes()

        start = 0
        if prev:
            start = int(prev.decode())

        failure_interval = n_iterations // RETRIES
        for index in range(start, n_iterations):
            if index > start and index % failure_interval == 0:
                raise RuntimeError(f"Failed at iteration {index}, interval {failure_interval}")
            checkpoint.save_sync(f"{index + 1}".encode())
        return f"{index}@{flyte.ctx().attempt}"

    @env.task(retries=RETRIES)
    async def use_checkpoint_async(n_iterations: int) -> str:
        checkpoint = flyte.ctx().checkpoint
        assert checkpoint is not None

        path = await checkpoint.load()
        prev = None if path is None else path.read_bytes()
        start = int(prev.decode()) if prev else 0
        failure_interval = n_iterations // RETRIES
        for index in range(start, n_iterations):
            if index > start and index % failure_interval == 0:
                raise RuntimeError(f"Failed at iteration {index}")
            await checkpoint.save(f"{index + 1}".encode())
        return f"{index}@{flyte.ctx().attempt}"

    @env.task
    async def main(n: int) -> str:
        a, b = await asyncio.gather(use_checkpoint.aio(n), use_checkpoint_async(n))
        return f"sync {a} async {b}"

    if __name__ == "__main__":
        flyte.init_from_config()
        run = flyte.run(main, n=10)
        run.wait()
        print("RESULT", run.outputs())
"""


def test_a_task_that_fails_after_saving_resumes_on_the_retry(
    mode: str, shared_server: ServerProcess, tmp_path: Path
) -> None:
    # each attempt resumes where the one before stopped: 3 failures, the 4th attempt finishes
    check(run_script(mode, shared_server, tmp_path, RESUME), "RESULT sync 9@4 async 9@4\n")


KINDS = """
    import io
    import os
    import pathlib
    import tarfile
    import tempfile

    import loom as flyte

    env = flyte.TaskEnvironment(name="kinds")

    def scratch() -> pathlib.Path:
        return pathlib.Path(tempfile.mkdtemp())

    @env.task(retries=1)
    async def from_bytes() -> str:
        cp = flyte.ctx().checkpoint
        first = cp.prev_exists()
        path = await cp.load()
        if path is None:
            await cp.save(b"raw \\x00 bytes")
            raise RuntimeError("preempted")
        return f"{first}:{cp.prev_exists()}:{path.name}:{path.read_bytes()!r}"

    @env.task(retries=1)
    def from_file() -> str:
        cp = flyte.ctx().checkpoint
        path = cp.load_sync()
        if path is None:
            f = scratch() / "model.pt"
            f.write_bytes(os.urandom(3 << 20))  # a few MiB: streamed, not inline
            f.with_name("sum").write_text(str(sum(f.read_bytes())))
            cp.save_sync(str(f))
            cp.save_sync(f.with_name("sum"))  # the latest save is the checkpoint
            raise RuntimeError("preempted")
        return f"{path == cp.path / 'payload'}:{path.read_text().isdigit()}"

    @env.task(retries=1)
    def big_file() -> int:
        cp = flyte.ctx().checkpoint
        path = cp.load_sync()
        if path is None:
            f = scratch() / "weights.bin"
            f.write_bytes(bytes(range(256)) * (12 << 12))  # 12 MiB
            cp.save_sync(f)
            raise RuntimeError("preempted")
        data = path.read_bytes()
        assert data == bytes(range(256)) * (12 << 12)
        return len(data)

    @env.task(retries=1)
    async def from_dir() -> list[str]:
        cp = flyte.ctx().checkpoint
        path = await cp.load()
        if path is None:
            d = scratch() / "run"
            (d / "lightning" / "version_0").mkdir(parents=True)
            (d / "lightning" / "version_0" / "last.ckpt").write_text("epoch=3")
            (d / "notes.txt").write_text("hello")
            await cp.save(d)
            raise RuntimeError("preempted")
        last = flyte.latest_checkpoint(path)
        files = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())
        return [*files, f"{path == cp.path}", last.read_text()]

    @env.task(retries=1)
    def tarball_as_file() -> bool:
        cp = flyte.ctx().checkpoint
        path = cp.load_sync()
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:  # (the same bytes each time)
            tar.addfile(tarfile.TarInfo("x"), io.BytesIO(b""))
        if path is None:
            cp.save_sync(buf.getvalue())
            raise RuntimeError("preempted")
        return path.name == "payload" and path.read_bytes() == buf.getvalue()

    @env.task
    async def first_attempt() -> str:
        cp = flyte.ctx().checkpoint
        return f"{cp.prev_exists()}:{await cp.load()}"

    @env.task
    async def main() -> str:
        return " | ".join(
            str(x)
            for x in [
                await from_bytes(),
                from_file(),
                big_file(),
                await from_dir(),
                tarball_as_file(),
                await first_attempt(),
            ]
        )

    if __name__ == "__main__":
        flyte.init_from_config()
        run = flyte.run(main)
        run.wait()
        print("RESULT", run.outputs())
"""


def test_bytes_files_and_directories(
    mode: str, shared_server: ServerProcess, tmp_path: Path
) -> None:
    check(
        run_script(mode, shared_server, tmp_path, KINDS),
        "RESULT True:True:payload:b'raw \\x00 bytes' | True:True | 12582912 | "
        "['lightning/version_0/last.ckpt', 'notes.txt', 'True', 'epoch=3'] | True | False:None\n",
    )


SECRET_STATE = """
    import sys

    import loom as flyte

    env = flyte.TaskEnvironment(name="private")

    @env.task(retries=1)
    def keeps() -> str:
        cp = flyte.ctx().checkpoint
        path = cp.load_sync()
        if path is None:
            cp.save_sync(b"secret-state")
            raise RuntimeError("preempted")
        return path.read_text()

    if __name__ == "__main__":
        flyte.init_from_config()
        run = flyte.run(keeps)
        run.wait()
        print("RUN", run.name)
        print("RESULT", run.outputs())
"""

THIEF = """
    import os
    import sys

    import httpx

    import loom as flyte

    env = flyte.TaskEnvironment(name="thief")

    @env.task
    def steal(run: str) -> str:
        # the only credential a task holds: its own attempt's
        api = httpx.Client(
            base_url=os.environ["LOOM_ENDPOINT"] + "/api/v1",
            headers={"Authorization": f"Bearer {os.environ['LOOM_API_KEY']}"},
        )
        base = f"/runs/{run}/actions/a0/attempts"
        codes = [
            api.get(f"{base}/2/checkpoint").status_code,
            api.get(f"{base}/2/checkpoint/info").status_code,
            api.put(f"{base}/1/checkpoint", content=b"forged").status_code,
        ]
        return ",".join(map(str, codes))

    if __name__ == "__main__":
        flyte.init_from_config()
        run = flyte.run(steal, run=sys.argv[1])
        run.wait()
        print("RESULT", run.outputs())
"""


def test_only_the_actions_next_attempt_reads_its_checkpoint(
    shared_server: ServerProcess, tmp_path: Path
) -> None:
    out = check(
        run_script("remote", shared_server, tmp_path, SECRET_STATE), "RESULT secret-state\n"
    )
    run = next(line.split()[1] for line in out.splitlines() if line.startswith("RUN "))

    api = httpx.Client(base_url=shared_server.endpoint + "/api/v1", timeout=30)
    admin = shared_server.headers
    path = f"/runs/{run}/actions/a0/attempts/2/checkpoint"
    r = api.get(path, headers=admin)  # an admin may (what attempt 2 resumed from)
    assert r.status_code == 200 and r.content == b"secret-state", r.text
    assert api.get(path + "/info", headers=admin).json()["attempt"] == 1

    project = f"other{abs(hash(run)) % 10**6}"
    assert api.post("/projects", json={"name": project}, headers=admin).status_code == 201
    keys = {}
    for name, projects in {
        "stranger": {project: "member"},  # another project's member
        "viewer": {"default": "viewer"},  # the run's own project: readers of runs
        "member": {"default": "member"},
    }.items():
        r = api.post(
            "/api-keys",
            json={"name": f"{name}-{project}", "projects": projects},
            headers=admin,
        )
        assert r.status_code == 201, r.text
        keys[name] = {"Authorization": f"Bearer {r.json()['key']}"}
    assert api.get(f"/runs/{run}", headers=keys["viewer"]).status_code == 200

    # another project's key: the run does not exist for it
    for what in (path, path + "/info"):
        r = api.get(what, headers=keys["stranger"])
        assert r.status_code == 404 and f"run {run!r} not found" in r.text, r.text
    r = api.put(
        f"/runs/{run}/actions/a0/attempts/1/checkpoint", content=b"x", headers=keys["stranger"]
    )
    assert r.status_code == 404
    # the run's own project: checkpoints are the runtime's, not people's
    for who in ("viewer", "member"):
        assert api.get(path, headers=keys[who]).status_code == 403
    # another run's task, with its attempt's credential
    thief = tmp_path / "thief"
    thief.mkdir()
    check(
        run_script("remote", shared_server, thief, THIEF.replace("sys.argv[1]", repr(run))),
        "RESULT 404,404,404\n",
    )
