"""In-process harness for the control plane: the real app, database and object store, with a
fake executor the test drives (no processes), through FastAPI's TestClient."""

from __future__ import annotations

import gzip
import hashlib
import io
import subprocess
import sys
import tarfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

with warnings.catch_warnings():  # starlette nudges towards httpx2, which is not a dependency
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from loom.executors import Capacity, ExitCallback, Job, JobExit, JobStatus
from loom.server import ControlPlane, ServerSettings, create_app
from loom.server._bootstrap import bootstrap_admin_key
from tests.conftest import free_port


class FakeExecutor:
    """Records jobs; the test ends them with :meth:`exit` (as if the process exited)."""

    def __init__(self, capacity: Capacity) -> None:
        self._capacity = capacity
        self.jobs: dict[str, Job] = {}
        self.running: set[str] = set()
        self.cancelled: list[str] = []
        self.reclaimed: list[str] = []
        #: handles whose processes outlived the server that started them
        self.alive: set[str] = set()
        self.adopted: list[str] = []
        self.on_exit: ExitCallback | None = None
        self.fail_submit: str | None = None

    def capacity(self) -> Capacity:
        return self._capacity

    async def start(self, on_exit: ExitCallback, on_report: object = None) -> None:
        self.on_exit = on_exit

    async def submit(self, job: Job) -> str:
        if self.fail_submit:
            raise OSError(self.fail_submit)
        self.jobs[job.id] = job
        self.running.add(job.id)
        return f"fake:{job.id}"

    async def cancel(self, job_id: str) -> None:
        self.cancelled.append(job_id)
        if job_id in self.running:
            await self.exit(job_id, -9, "cancelled")

    def status(self, job_id: str) -> JobStatus:
        if job_id in self.running:
            return JobStatus("running")
        return JobStatus("exited" if job_id in self.jobs else "unknown")

    async def adopt(self, job: Job, handle: str) -> bool:
        if handle not in self.alive:
            self.reclaimed.append(handle)
            return False
        self.adopted.append(handle)
        self.jobs[job.id] = job
        self.running.add(job.id)
        return True

    async def reclaim(self, handle: str) -> None:
        self.reclaimed.append(handle)

    async def shutdown(self, keep: bool = False) -> None:
        self.running.clear()

    async def exit(self, job_id: str, returncode: int | None, reason: str = "exited") -> None:
        self.running.discard(job_id)
        assert self.on_exit is not None
        await self.on_exit(JobExit(job_id, returncode, reason))  # type: ignore[arg-type]


@dataclass
class Api:
    """A running app: ``client`` sends the admin key; ``anon`` sends none."""

    client: TestClient
    anon: TestClient
    plane: ControlPlane
    executor: FakeExecutor
    admin_key: str
    settings: ServerSettings
    bundle: str = ""
    _bundles: dict[str, str] = field(default_factory=dict)

    def exit(self, job_id: str, returncode: int | None = 0, reason: str = "exited") -> None:
        """End a fake job, on the app's event loop."""
        assert self.client.portal is not None
        self.client.portal.call(self.executor.exit, job_id, returncode, reason)

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError("condition not met in time")
            time.sleep(0.01)

    def job(self, run: str, action: str, attempt: int, timeout: float = 10) -> Job:
        """The job the scheduler submitted for that attempt (waits for it)."""
        return self.wait_for(lambda: self.executor.jobs.get(f"{run}/{action}/{attempt}"), timeout)

    def action(self, run: str, action: str) -> dict[str, Any]:
        r = self.client.get(f"/api/v1/runs/{run}/actions/{action}")
        assert r.status_code == 200, r.text
        return r.json()

    def wait_phase(self, run: str, action: str, phase: str, timeout: float = 10) -> dict[str, Any]:
        return self.wait_for(
            lambda: (a := self.action(run, action))["phase"] == phase and a, timeout
        )

    def create_run(self, task: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
        body = run_create(self.bundle, task=task, **kwargs)
        r = self.client.post("/api/v1/runs", json=body)
        assert r.status_code == 201, r.text
        return r.json()

    def create_child(
        self, run: str, name: str, parent: str = "a0", task: dict[str, Any] | None = None, **kw: Any
    ) -> dict[str, Any]:
        body = {"name": name, "parent": parent, "task": task or task_spec(), **kw}
        r = self.client.post(f"/api/v1/runs/{run}/actions", json=body)
        assert r.status_code == 200, r.text
        return r.json()

    def finish(
        self, run: str, action: str, attempt: int, *, value: Any = None, error: Any = None
    ) -> Any:
        result: dict[str, Any] = (
            {"error": error} if error is not None else {"outputs": {"value": value}}
        )
        return self.client.post(
            f"/api/v1/runs/{run}/actions/{action}/attempts/{attempt}/finished", json=result
        )


def task_spec(name: str = "env.main", **kwargs: Any) -> dict[str, Any]:
    attr = name.rsplit(".", maxsplit=1)[-1]
    return {"module": "flow", "attr": attr, "name": name, "environment": "env", **kwargs}


def run_create(bundle: str, task: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    inputs = kwargs.pop("inputs", {})
    return {
        "bundle": bundle,
        "root": {"name": "ignored", "task": task or task_spec(), "inputs": inputs},
        **kwargs,
    }


def make_bundle(
    files: dict[str, bytes] | None = None, extra: Callable[[tarfile.TarFile], None] | None = None
) -> tuple[str, bytes]:
    """A .tar.gz and its digest (``sha256:<hex>``); the same files give the same bytes."""
    buf = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w") as archive,
    ):
        for name, data in (files or {"flow.py": b"x = 1\n"}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        if extra is not None:
            extra(archive)
    data = buf.getvalue()
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def error_info(
    message: str = "boom", kind: str = "user", type: str = "ValueError"
) -> dict[str, Any]:
    return {"type": type, "message": message, "kind": kind}


@pytest.fixture
def capacity() -> Capacity:
    return Capacity(slots=2, cpu=2.0, memory_bytes=8 << 30, disk_bytes=100 << 30)


@pytest.fixture
def api(tmp_path: Path, database_url: str, capacity: Capacity) -> Iterator[Api]:
    settings = ServerSettings.load(
        {},
        data_dir=tmp_path / "data",
        database_url=database_url,
        executor_slots=capacity.slots,
    )
    executor = FakeExecutor(capacity)
    plane = ControlPlane(settings, executor=executor)
    plane.prepare()
    bootstrap_admin_key(plane.db, plane.keys, settings.config_path, "http://testserver")
    import yaml

    key = yaml.safe_load(settings.config_path.read_text())["api_key"]
    app = create_app(plane)
    with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as client:
        anon = TestClient(app)
        api = Api(client, anon, plane, executor, key, settings)
        digest, data = make_bundle()
        r = client.put(f"/api/v1/bundles/{digest}", content=data)
        assert r.status_code == 200, r.text
        api.bundle = digest
        yield api
    plane.db.dispose()


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """An S3-compatible server (moto) on a free loopback port."""
    port = free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(endpoint, timeout=1)
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("moto_server did not start")
            time.sleep(0.1)
    try:
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def s3_bucket(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    import secrets

    import boto3

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    bucket = f"loom-{secrets.token_hex(4)}"
    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket=bucket)
    return bucket


__all__ = ["Api", "FakeExecutor", "error_info", "make_bundle", "run_create", "task_spec"]
