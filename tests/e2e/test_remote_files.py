"""File and Dir values in remote runs travel through the server's object store: the real `loom`
CLI against a real server subprocess."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from loom import wire
from tests.conftest import ServerProcess, remote_run, run_actions, run_cli, write_module

pytestmark = pytest.mark.e2e

FLOW = """
import os
import shutil
from pathlib import Path

import loom
from loom.io import Dir, File

env = loom.TaskEnvironment("files-flow")


@env.task
async def produce(text: str, where: str) -> File:
    path = Path(where) / "produced.txt"
    path.write_text(text)
    return await File.from_local(path)


@env.task
async def consume(report: File) -> str:
    async with report.open("r") as handle:
        return await handle.read()


@env.task
async def pipeline(text: str, where: str) -> list[str]:
    report = await produce(text, where)
    # the producer's own file goes away: the consumer must read what the object store holds
    os.remove(os.path.join(where, "produced.txt"))
    return [report.path, await consume(report)]


@env.task
def make_tree(where: str) -> Dir:
    root = Path(where) / "tree"
    (root / "sub").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "top.txt").write_text("top")
    (root / "sub" / "inner.txt").write_text("inner")
    return Dir.from_local_sync(root)


@env.task
def read_tree(tree: Dir) -> dict[str, str]:
    local = Path(tree.download_sync())
    found = {
        str(p.relative_to(local)): p.read_text() for p in sorted(local.rglob("*")) if p.is_file()
    }
    found["empty is a directory"] = str((local / "empty").is_dir())
    return found


@env.task
async def tree_pipeline(where: str) -> dict[str, str]:
    tree = await make_tree.aio(where)
    shutil.rmtree(os.path.join(where, "tree"))
    return await read_tree.aio(tree)


@env.task
async def returns_tree(where: str) -> Dir:
    return await make_tree.aio(where)


@env.task
def count_lines(f: File) -> int:
    with open(f) as handle:  # a File is a path-like: downloaded on demand
        return len(handle.read().splitlines())


@env.task
async def count_twice(f: File) -> list[int]:
    return [count_lines(f), await count_lines.aio(f)]
"""


@pytest.fixture
def flow(tmp_path: Path) -> Path:
    return write_module(tmp_path / "files_flow.py", FLOW)


def remote(server: ServerProcess, *args: str) -> dict[str, Any]:
    doc = remote_run(server, *args)
    assert doc["phase"] == "SUCCEEDED", doc
    return doc


def api(server: ServerProcess, path: str) -> Any:
    r = httpx.get(f"{server.endpoint}/api/v1{path}", headers=server.headers, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def stored(server: ServerProcess, uri: str) -> bytes:
    """The object a reference names, as the server's object store holds it."""
    digest = uri.removeprefix(wire.DATA_URI_PREFIX).split("/")[0]
    data = (server.data_dir / "objects" / "data" / digest).read_bytes()
    assert hashlib.sha256(data).hexdigest() == digest
    return data


def test_a_file_goes_from_producer_to_consumer_through_the_object_store(
    server: ServerProcess, flow: Path, tmp_path: Path
) -> None:
    where = tmp_path / "producer"
    where.mkdir()
    doc = remote(
        server, str(flow), "pipeline", "--text", "hello from the producer", "--where", str(where)
    )
    path, content = doc["outputs"]
    assert content == "hello from the producer"
    assert path.startswith(wire.DATA_URI_PREFIX) and path.endswith("/produced.txt")
    assert not (where / "produced.txt").exists()  # read after the producer's file was deleted
    assert stored(server, path) == b"hello from the producer"
    children = {a["task"]: a for a in run_actions(server, doc["run"]) if a["parent"]}
    produced = api(
        server, f"/runs/{doc['run']}/actions/{children['files-flow.produce']['name']}/outputs"
    )
    assert produced["value"] == {"__loom__": "file", "path": path, "name": "produced.txt"}
    spec = api(server, f"/runs/{doc['run']}/actions/{children['files-flow.consume']['name']}/spec")
    assert spec["inputs"] == {"report": {"__loom__": "file", "path": path, "name": "produced.txt"}}
    # the UI's download serves it from the object store
    r = httpx.get(
        f"{server.endpoint}/api/v1/runs/{doc['run']}/actions/{children['files-flow.consume']['name']}/files",
        params={"of": "inputs", "path": path},
        headers=server.headers,
    )
    assert r.status_code == 200 and r.content == b"hello from the producer"


def test_a_dir_round_trips(server: ServerProcess, flow: Path, tmp_path: Path) -> None:
    where = tmp_path / "producer"
    where.mkdir()
    doc = remote(server, str(flow), "tree_pipeline", "--where", str(where))
    assert doc["outputs"] == {
        "top.txt": "top",
        "sub/inner.txt": "inner",
        "empty is a directory": "True",
    }
    assert not (where / "tree").exists()
    # a Dir returned by the run: the CLI prints its reference
    (where / "again").mkdir()
    returned = remote(server, str(flow), "returns_tree", "--where", str(where / "again"))
    ref = returned["outputs"]
    assert ref["name"] == "tree" and ref["path"].startswith(wire.DATA_URI_PREFIX)
    assert ref["path"].endswith("/tree/")  # a directory's reference ends with a slash
    stored(server, ref["path"])


def test_a_file_given_on_the_command_line_is_uploaded(
    server: ServerProcess, flow: Path, tmp_path: Path
) -> None:
    lines = tmp_path / "input.txt"
    lines.write_text("one\ntwo\nthree\n")
    doc = remote(server, str(flow), "count_twice", "--f", str(lines))
    assert doc["outputs"] == [3, 3]
    spec = api(server, f"/runs/{doc['run']}/actions/a0/spec")
    uri = spec["inputs"]["f"]["path"]
    assert (
        uri == f"{wire.DATA_URI_PREFIX}{hashlib.sha256(lines.read_bytes()).hexdigest()}/input.txt"
    )
    assert stored(server, uri) == b"one\ntwo\nthree\n"
    # the same content again: found in the store, the run still works without the file's path
    again = tmp_path / "elsewhere"
    again.mkdir()
    copy = again / "input.txt"
    copy.write_bytes(lines.read_bytes())
    lines.unlink()
    doc = remote(server, str(flow), "count_twice", "--f", str(copy))
    assert doc["outputs"] == [3, 3]
    assert api(server, f"/runs/{doc['run']}/actions/a0/spec")["inputs"]["f"]["path"] == uri
    # the reference itself, as the web UI's rerun command spells it, with the file gone
    copy.unlink()
    assert remote(server, str(flow), "count_twice", "--f", uri)["outputs"] == [3, 3]
    tree_ref = uri.rsplit("/", 1)[0] + "/input/"
    wrong = run_cli("run", "--remote", str(flow), "count_twice", "--f", tree_ref, env=server.env)
    assert wrong.returncode == 2 and "refers to a directory, not a file" in wrong.stderr


def test_the_python_api_reads_file_outputs(
    server: ServerProcess, flow: Path, tmp_path: Path
) -> None:
    where = tmp_path / "producer"
    where.mkdir()
    script = tmp_path / "drive.py"
    script.write_text(
        f"""
import sys
sys.path.insert(0, {str(flow.parent)!r})
import loom
import files_flow

loom.init_from_config()
run = loom.with_runcontext(mode="remote").run(
    files_flow.produce, text="via python", where={str(where)!r}
)
report = run.outputs()
import os
os.remove({str(where / "produced.txt")!r})
print(report.path)
with report.open("r") as handle:
    print(handle.read())
"""
    )
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env={**os.environ, **server.env},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    path, content = result.stdout.splitlines()
    assert path.startswith(wire.DATA_URI_PREFIX) and content == "via python"


# -- the File/Dir API Flyte 2 programs use, remotely ------------------------------------------

FLYTE_IO = """
import hashlib
import os
import shutil
import uuid
from pathlib import Path

from pydantic import BaseModel

import loom
from loom.io import Dir, File, HashFunction

env = loom.TaskEnvironment("flyte-io")


class Report(BaseModel):
    title: str
    body: File


class Bundle(BaseModel):
    reports: list[Report]
    tree: Dir | None = None


@env.task
async def make_bundle(where: str) -> Bundle:
    root = Path(where)
    (root / "tree" / "sub").mkdir(parents=True)
    (root / "tree" / "sub" / "t.txt").write_text("tree file")
    (root / "body.txt").write_text("model body")
    body = await File.from_local(root / "body.txt", hash_method="body-hash")
    return Bundle(reports=[Report(title="r", body=body)], tree=await Dir.from_local(root / "tree"))


@env.task
async def bundle_pipeline(where: str) -> list[str]:
    bundle = await make_bundle(where)
    shutil.rmtree(where)  # the producer's files go: the reader must get what the store holds
    report = bundle.reports[0]
    async with report.body.open("r") as fh:
        body = await fh.read()
    assert bundle.tree is not None
    inner = await bundle.tree.get_file("sub/t.txt")
    assert inner is not None
    tree_text = Path(inner.download_sync()).read_text()
    return [report.body.path, str(report.body.hash), body, bundle.tree.path, tree_text]


@env.task
async def write_new(text: str) -> File:
    digest = HashFunction.from_fn(lambda data: hashlib.sha256(data).hexdigest()[:12])
    f = File.new_remote("greeting.txt", hash_method=digest)
    async with f.open("wb") as fh:
        await fh.write(text.encode())
    return f


@env.task
def write_new_sync(text: str) -> File:
    f = File.new_remote()
    with f.open_sync("w") as fh:
        fh.write(text.upper())
    return f


@env.task
def make_dir() -> Dir:
    d = Dir.new_remote("made")
    (Path(d.path) / "sub").mkdir()
    (Path(d.path) / "a.txt").write_text("A")
    (Path(d.path) / "sub" / "b.txt").write_text("B")
    return d


@env.task
async def inspect_dir(d: Dir) -> dict[str, str]:
    got = await d.get_file("sub/b.txt")
    assert got is not None
    async with got.open("r") as fh:
        content = await fh.read()
    return {
        "exists": str(await d.exists()),
        "walk": ",".join([f.name async for f in d.walk()]),
        "walk_sync": ",".join(f.name for f in d.walk_sync()),
        "list_files": ",".join(f.name for f in await d.list_files()),
        "list_files_sync": ",".join(f.name for f in d.list_files_sync()),
        "sub/b.txt": content,
        "missing": str(await d.get_file("nope.txt")),
    }


@env.task
async def new_remote_pipeline(text: str) -> dict[str, str]:
    f = await write_new(text)
    g = await write_new_sync.aio(text)
    async with f.open("rb") as fh:
        first = bytes(await fh.read()).decode()
    with g.open_sync("r") as fh:
        second = fh.read()
    d = await make_dir.aio()
    return {
        "path": f.path,
        "hash": str(f.hash),
        "first": first,
        "second": second,
        "second_path": g.path,
        "dir": d.path,
        **await inspect_dir(d),
    }


@env.task
async def read_existing(uri: str, tree_uri: str) -> list[str]:
    f = File.from_existing_remote(uri, file_cache_key="k")
    d = Dir.from_existing_remote(tree_uri)
    async with f.open("rb") as fh:
        data = bytes(await fh.read()).decode()
    names = ",".join(x.name for x in d.walk_sync())
    return [data, str(await f.exists()), str(d.exists_sync()), names, str(f.hash)]


@env.task(cache=loom.Cache("override", version_override="v1"))
async def token_for(f: File) -> str:
    return uuid.uuid4().hex


@env.task
async def hashed_pipeline(where: str) -> list[str]:
    one, two = Path(where) / "one.txt", Path(where) / "two.txt"
    one.write_text("first content")
    two.write_text("different content")
    return [
        await token_for(await File.from_local(one, hash_method="same")),
        await token_for(await File.from_local(two, hash_method="same")),
        await token_for(await File.from_local(two)),
    ]
"""


@pytest.fixture
def flyte_io(tmp_path: Path) -> Path:
    return write_module(tmp_path / "flyte_io.py", FLYTE_IO)


def test_files_inside_a_pydantic_model_are_uploaded(
    server: ServerProcess, flyte_io: Path, tmp_path: Path
) -> None:
    where = tmp_path / "producer"
    where.mkdir()
    doc = remote(server, str(flyte_io), "bundle_pipeline", "--where", str(where))
    body_path, body_hash, body, tree_path, inner = doc["outputs"]
    assert body_path.startswith(wire.DATA_URI_PREFIX) and body_path.endswith("/body.txt")
    assert (body_hash, body, inner) == ("body-hash", "model body", "tree file")
    assert stored(server, body_path) == b"model body"
    assert tree_path.startswith(wire.DATA_URI_PREFIX) and tree_path.endswith("/tree/")
    # the model as the child action's output: references, not the producer's paths
    children = {a["task"]: a for a in run_actions(server, doc["run"]) if a["parent"]}
    out = api(
        server, f"/runs/{doc['run']}/actions/{children['flyte-io.make_bundle']['name']}/outputs"
    )
    assert out["value"]["reports"][0]["body"]["path"] == body_path
    assert out["value"]["tree"]["path"] == tree_path


def test_new_remote_files_and_dirs_and_walking_them(server: ServerProcess, flyte_io: Path) -> None:
    doc = remote(server, str(flyte_io), "new_remote_pipeline", "--text", "hello")
    out = doc["outputs"]
    assert out["path"].startswith(wire.DATA_URI_PREFIX) and out["path"].endswith("/greeting.txt")
    assert out["hash"] == hashlib.sha256(b"hello").hexdigest()[:12]
    assert (out["first"], out["second"]) == ("hello", "HELLO")
    assert stored(server, out["path"]) == b"hello"
    assert stored(server, out["second_path"]) == b"HELLO"
    assert out["dir"].startswith(wire.DATA_URI_PREFIX) and out["dir"].endswith("/made/")
    assert out["exists"] == "True"
    assert out["walk"] == out["walk_sync"] == "a.txt,b.txt"
    assert out["list_files"] == out["list_files_sync"] == "a.txt"
    assert (out["sub/b.txt"], out["missing"]) == ("B", "None")
    # references from one run, read in another with from_existing_remote
    again = remote(
        server, str(flyte_io), "read_existing", "--uri", out["path"], "--tree-uri", out["dir"]
    )
    assert again["outputs"] == ["hello", "True", "True", "a.txt,b.txt", "k"]


def test_a_file_hash_keys_the_remote_cache(
    server: ServerProcess, flyte_io: Path, tmp_path: Path
) -> None:
    where = tmp_path / "hashed"
    where.mkdir()
    first, same_hash, by_content = remote(
        server, str(flyte_io), "hashed_pipeline", "--where", str(where)
    )["outputs"]
    assert first == same_hash  # other content, the same hash: a cache hit
    assert by_content != first
