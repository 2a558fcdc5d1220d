"""File, Dir and DataFrame values through a server's object store: references, uploads once
per content, downloads on demand into a content-addressed cache (against a real server)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import loom.io._remote as remote_data
from loom import wire
from loom.errors import ConfigError, LoomError, SerializationError, ServerUnreachableError
from loom.io import Dir, File
from loom.io._remote import (
    PREFIX,
    DataRef,
    RemoteBlobStore,
    pack_tree,
    parse_data_uri,
    tree_entries,
)
from loom.remote import Client
from loom.types import LocalBlobStore, codec_for
from tests.conftest import ServerProcess, start_server


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real server for the module: the data endpoints are all these tests need."""
    started = start_server(tmp_path_factory.mktemp("server") / "data")
    yield started
    started.stop()


@pytest.fixture(autouse=True)
def no_process_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test picks its stores; none is left over as the one this process reads through."""
    monkeypatch.setattr(remote_data, "_current", None)


@dataclasses.dataclass
class Counts:
    uploads: list[str] = dataclasses.field(default_factory=list)
    downloads: list[str] = dataclasses.field(default_factory=list)


@pytest.fixture
def counts(monkeypatch: pytest.MonkeyPatch) -> Counts:
    """Counts the uploads and downloads that reach the server."""
    seen = Counts()
    upload, download = Client.upload_data, Client.download_data

    async def counted_upload(
        self: Client, digest: str, source: Any, project: str | None = None
    ) -> wire.DataInfo:
        seen.uploads.append(digest)
        return await upload(self, digest, source, project)

    async def counted_download(self: Client, digest: str, target: Path) -> int:
        seen.downloads.append(digest)
        return await download(self, digest, target)

    monkeypatch.setattr(Client, "upload_data", counted_upload)
    monkeypatch.setattr(Client, "download_data", counted_download)
    return seen


def store_for(server: ServerProcess, home: Path) -> RemoteBlobStore:
    """A store as a process with ``home`` has it (another home: another machine's cache)."""
    return RemoteBlobStore(server.endpoint, server.api_key, home)


def flush(store: RemoteBlobStore, server: ServerProcess) -> None:
    async def go() -> None:
        async with Client(server.endpoint, server.api_key) as client:
            await store.flush(client)

    asyncio.run(go())


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


def through(tp: Any, value: Any, sender: RemoteBlobStore, server: ServerProcess) -> Any:
    """Encode with ``sender``, upload, and the JSON a receiver would get."""
    encoded = json.loads(json.dumps(codec_for(tp).encode(value, sender)))
    flush(sender, server)
    return encoded


# -- references and archives ----------------------------------------------------------------


def test_the_prefix_is_the_wire_schemas() -> None:
    assert PREFIX == wire.DATA_URI_PREFIX


def test_references_parse_strictly() -> None:
    d = "0f" * 32
    assert parse_data_uri(f"loom://data/{d}/a.csv") == DataRef(d, "a.csv", tree=False)
    assert parse_data_uri(f"loom://data/{d}/out/") == DataRef(d, "out", tree=True)
    assert DataRef(d, "out", tree=True).uri == f"loom://data/{d}/out/"
    for bad in (f"loom://data/{d}", f"loom://data/{d}/a/b", f"loom://data/{d}/..", "/tmp/x"):
        with pytest.raises(SerializationError, match="not a loom data reference"):
            parse_data_uri(bad)


def _tree(root: Path) -> Path:
    write(root / "top.txt", "top")
    write(root / "a" / "one.txt", "one")
    write(root / "a" / "b" / "two.bin", b"\x00two")
    (root / "empty").mkdir(parents=True)
    run = write(root / "run.sh", "#!/bin/sh\n")
    run.chmod(0o755)
    return root


def _packed(root: Path) -> bytes:
    out = io.BytesIO()
    pack_tree(tree_entries(root), out)
    return out.getvalue()


def test_a_tree_packs_the_same_wherever_and_whenever_it_is(tmp_path: Path) -> None:
    one = _packed(_tree(tmp_path / "one"))
    two_root = _tree(tmp_path / "elsewhere" / "two")
    os.utime(two_root / "top.txt", (1, 1))
    assert _packed(two_root) == one
    write(two_root / "top.txt", "changed")
    assert _packed(two_root) != one
    with tarfile.open(fileobj=io.BytesIO(one), mode="r:gz") as archive:
        members = {m.name: m for m in archive.getmembers()}
    assert list(members) == ["a", "a/b", "a/b/two.bin", "a/one.txt", "empty", "run.sh", "top.txt"]
    assert members["empty"].isdir() and members["run.sh"].mode == 0o755
    assert {m.mtime for m in members.values()} == {0}


def test_symlinks_are_followed_and_loops_refused(tmp_path: Path) -> None:
    root = _tree(tmp_path / "tree")
    (root / "link.txt").symlink_to(root / "top.txt")
    (root / "dangling").symlink_to(tmp_path / "nowhere")
    names = {name: is_dir for name, _, is_dir, _ in tree_entries(root)}
    assert names["link.txt"] is False and "dangling" not in names
    (root / "a" / "loop").symlink_to(root)
    with pytest.raises(LoomError, match="links back to a directory above it"):
        tree_entries(root)


# -- local mode stays as it was ---------------------------------------------------------------


def test_local_stores_pass_references_through(tmp_path: Path) -> None:
    ref = File(path=f"loom://data/{'ab' * 32}/x.csv", name="x.csv")
    tree = Dir(path=f"loom://data/{'cd' * 32}/out/", name="out")
    local = LocalBlobStore(tmp_path / "blobs")
    for store in (None, local):
        encoded = codec_for(File).encode(ref, store)
        assert encoded == {"__loom__": "file", "path": ref.path, "name": "x.csv"}
        encoded = codec_for(Dir).encode(tree, store)
        assert encoded == {"__loom__": "dir", "path": tree.path, "name": "out"}
    assert not (tmp_path / "blobs").exists()  # nothing copied


def test_a_reference_without_a_server_says_how_to_configure_one() -> None:
    f = File(path=f"loom://data/{'ab' * 32}/x.csv", name="x.csv")
    with pytest.raises(ConfigError, match="no server is configured.*loom server start"):
        f.download_sync()


def test_an_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    store = RemoteBlobStore("http://127.0.0.1:9", None, tmp_path / "home")
    ref = DataRef("ab" * 32, "x.csv", tree=False)
    with pytest.raises(ServerUnreachableError, match=f"cannot download {ref.uri}: nothing answers"):
        store.local_path(ref)
    assert list((tmp_path / "home" / "data" / ".staging").iterdir()) == []


# -- through a server -------------------------------------------------------------------------


def test_a_file_goes_up_once_and_comes_down_on_demand(
    live: ServerProcess, tmp_path: Path, counts: Counts
) -> None:
    src = write(tmp_path / "work" / "report.txt", "the report")
    sender = store_for(live, tmp_path / "sender")
    encoded = through(File, File.from_local_sync(src), sender, live)
    digest = hashlib.sha256(b"the report").hexdigest()
    assert encoded == {
        "__loom__": "file",
        "path": f"loom://data/{digest}/report.txt",
        "name": "report.txt",
    }
    assert counts.uploads == [digest]
    # again, and in a list: no upload, the process knows the server has it
    assert through(list[File], [File.from_local_sync(src)] * 3, sender, live) == [encoded] * 3
    assert counts.uploads == [digest]
    src.unlink()  # the producer's file is gone: the reference does not need it

    receiver = store_for(live, tmp_path / "receiver")
    decoded = codec_for(File).decode(encoded, receiver)
    assert decoded == File(path=encoded["path"], name="report.txt")
    assert counts.downloads == []  # on demand only
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(remote_data, "_current", receiver)
        local = Path(decoded.download_sync())
        assert local.read_text() == "the report"
        assert local.is_relative_to(tmp_path / "receiver" / "data")
        with decoded.open("r") as handle:
            assert handle.read() == "the report"
        with open(decoded) as handle:  # a File is a path-like
            assert handle.read() == "the report"

        async def read_async() -> str:
            async with decoded.open("r") as handle:
                return str(await handle.read())

        assert asyncio.run(read_async()) == "the report"
        assert asyncio.run(decoded.download()) == str(local)
        assert decoded.exists_sync()
        out = tmp_path / "copy.txt"
        assert decoded.download_sync(out) == str(out)
        out.write_text("mine to change")  # a copy of its own, writable
    assert counts.downloads == [digest]  # one download for all those reads
    assert local.stat().st_mode & 0o222 == 0  # the cached copy is read-only


def test_a_changed_cached_file_is_fetched_again(
    live: ServerProcess, tmp_path: Path, counts: Counts
) -> None:
    sender = store_for(live, tmp_path / "sender")
    encoded = through(File, File.from_local_sync(write(tmp_path / "f.txt", "v1")), sender, live)
    receiver = store_for(live, tmp_path / "receiver")
    ref = parse_data_uri(encoded["path"])
    local = receiver.local_path(ref)
    local.chmod(0o644)  # as a careless task (or root, whom permissions do not stop) might
    local.write_text("tampered")
    assert receiver.local_path(ref).read_text() == "v1"
    assert len(counts.downloads) == 2


def test_a_second_process_asks_before_uploading(
    live: ServerProcess, tmp_path: Path, counts: Counts
) -> None:
    src = write(tmp_path / "big.bin", os.urandom(100_000))
    through(File, File.from_local_sync(src), store_for(live, tmp_path / "one"), live)
    through(File, File.from_local_sync(src), store_for(live, tmp_path / "two"), live)
    assert len(counts.uploads) == 1  # the second found it on the server


def test_the_same_content_under_another_name_is_not_downloaded_again(
    live: ServerProcess, tmp_path: Path, counts: Counts
) -> None:
    sender = store_for(live, tmp_path / "sender")
    a = through(File, File.from_local_sync(write(tmp_path / "a.txt", "same")), sender, live)
    b = through(File, File.from_local_sync(write(tmp_path / "b.txt", "same")), sender, live)
    receiver = store_for(live, tmp_path / "receiver")
    assert receiver.local_path(parse_data_uri(a["path"])).read_text() == "same"
    assert receiver.local_path(parse_data_uri(b["path"])).read_text() == "same"
    assert len(counts.downloads) == 1


def test_a_dir_travels_as_one_archive(live: ServerProcess, tmp_path: Path, counts: Counts) -> None:
    root = _tree(tmp_path / "work" / "results")
    sender = store_for(live, tmp_path / "sender")
    encoded = through(Dir, Dir.from_local_sync(root), sender, live)
    ref = parse_data_uri(encoded["path"])
    assert ref.tree and ref.name == "results" and encoded["name"] == "results"
    assert counts.uploads == [ref.digest]
    assert through(Dir, Dir.from_local_sync(root), sender, live) == encoded  # not packed again
    assert counts.uploads == [ref.digest]

    receiver = store_for(live, tmp_path / "receiver")
    decoded = codec_for(Dir).decode(encoded, receiver)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(remote_data, "_current", receiver)
        tree = Path(decoded.download_sync())
        assert (tree / "a" / "b" / "two.bin").read_bytes() == b"\x00two"
        assert (tree / "empty").is_dir() and os.access(tree / "run.sh", os.X_OK)
        files = list(decoded.walk_sync())
        assert sorted(f.name for f in files) == ["one.txt", "run.sh", "top.txt", "two.bin"]
        copy = tmp_path / "mine"
        decoded.download_sync(copy)
        (copy / "top.txt").write_text("changed in my copy")
        (copy / "new.txt").write_text("added")
        assert (tree / "top.txt").read_text() == "top"
        # adding to the shared tree is noticed: the next reader gets the real one back
        (tree / "added.txt").write_text("x")
        again = Path(decoded.download_sync())
        assert sorted(p.name for p in again.iterdir()) == ["a", "empty", "run.sh", "top.txt"]
        assert decoded.exists_sync()
    assert len(counts.downloads) == 2


def test_a_reference_is_passed_on_without_uploading(
    live: ServerProcess, tmp_path: Path, counts: Counts
) -> None:
    ref = File(path=f"loom://data/{'ab' * 32}/elsewhere.csv", name="elsewhere.csv")
    assert through(File, ref, store_for(live, tmp_path / "s"), live)["path"] == ref.path
    assert counts.uploads == []


def test_missing_data_and_the_wrong_kind_are_clear_errors(
    live: ServerProcess, tmp_path: Path
) -> None:
    receiver = store_for(live, tmp_path / "receiver")
    missing = File(path=f"loom://data/{'ab' * 32}/gone.txt", name="gone.txt")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(remote_data, "_current", receiver)
        with pytest.raises(FileNotFoundError, match="is not in the object store of the server"):
            missing.download_sync()
        assert not missing.exists_sync()
        with pytest.raises(SerializationError, match="refers to a file: read it as a loom.io.File"):
            Dir(path=missing.path, name="gone").download_sync()


def test_an_upload_the_server_refuses_fails_the_flush(
    live: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write(tmp_path / "f.txt", "content")
    sender = store_for(live, tmp_path / "sender")
    codec_for(File).encode(File.from_local_sync(src), sender)
    src.write_text("changed after it was hashed")
    with pytest.raises(LoomError, match=r"cannot upload .*f\.txt .*digest mismatch"):
        flush(sender, live)
    assert not sender.busy
    # the next encoding hashes the new content, and uploads it
    encoded = through(File, File.from_local_sync(src), sender, live)
    assert parse_data_uri(encoded["path"]).digest == hashlib.sha256(src.read_bytes()).hexdigest()


def test_dataframes_go_through_the_store_as_parquet(live: ServerProcess, tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    from loom.io import DataFrame

    frame = pd.DataFrame({"x": [1, 2, 3]})
    sender = store_for(live, tmp_path / "sender")
    encoded = through(DataFrame, DataFrame.from_df(frame), sender, live)
    assert encoded["parquet"].startswith(PREFIX)
    decoded = codec_for(pd.DataFrame).decode(encoded, store_for(live, tmp_path / "receiver"))
    assert decoded["x"].tolist() == [1, 2, 3]


def test_a_cancelled_flush_leaves_its_uploads_to_the_next(
    live: ServerProcess, tmp_path: Path, counts: Counts
) -> None:
    sender = store_for(live, tmp_path / "sender")
    root = _tree(tmp_path / "t")
    write(root / "unique.txt", os.urandom(16))  # not on the server from another test
    encoded = codec_for(Dir).encode(Dir.from_local_sync(root), sender)

    async def go() -> None:
        async with Client(live.endpoint, live.api_key) as client:
            first = asyncio.ensure_future(sender.flush(client))
            await asyncio.sleep(0)  # it has started its uploads, which have not run yet
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            assert sender.busy  # queued again, archive and all
            await sender.flush(client)
            assert not sender.busy

    asyncio.run(go())
    assert counts.uploads == [parse_data_uri(encoded["path"]).digest]
    receiver = store_for(live, tmp_path / "receiver")
    tree = receiver.local_path(parse_data_uri(encoded["path"]))
    assert (tree / "a" / "one.txt").read_text() == "one"
    assert list((tmp_path / "sender" / "data" / ".staging").iterdir()) == []
