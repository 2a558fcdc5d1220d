"""File and Dir: references to local files and trees, and their type-engine codecs."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from loom.io import Dir, File
from loom.types import LocalBlobStore, codec_for


@dataclasses.dataclass
class Bundle:
    report: File
    inputs: list[File]
    workdir: Dir | None = None


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


def roundtrip(tp: Any, value: Any, store: LocalBlobStore | None) -> Any:
    codec = codec_for(tp)
    return codec.decode(json.loads(json.dumps(codec.encode(value, store))), store)


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "store")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    write(root / "top.txt", "top")
    write(root / "a" / "one.txt", "one")
    write(root / "a" / "b" / "two.bin", b"\x00two")
    write(root / "z.txt", "zed")
    (root / "empty").mkdir()
    return root


# -- File -------------------------------------------------------------------------------------


def test_file_from_local_sync(tmp_path: Path) -> None:
    src = write(tmp_path / "data.csv", "a,b\n")
    f = File.from_local_sync(src)
    assert f.path == str(src.resolve())
    assert f.name == "data.csv"
    assert File.from_local_sync(str(src)) == f


def test_file_from_local_async(tmp_path: Path) -> None:
    src = write(tmp_path / "data.csv", "a,b\n")
    f = asyncio.run(File.from_local(src))
    assert f == File(path=str(src.resolve()), name="data.csv")


def test_file_from_local_resolves_relative_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "sub" / "rel.txt", "x")
    monkeypatch.chdir(tmp_path)
    f = File.from_local_sync("sub/rel.txt")
    assert Path(f.path).is_absolute()
    assert f.path == str((tmp_path / "sub" / "rel.txt").resolve())


@pytest.mark.parametrize("sync", [True, False])
def test_file_from_local_missing_path(tmp_path: Path, sync: bool) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(
        FileNotFoundError, match=r"File\.from_local: .*nope\.txt is not an existing"
    ):
        if sync:
            File.from_local_sync(missing)
        else:
            asyncio.run(File.from_local(missing))


def test_file_from_local_rejects_a_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not an existing file"):
        File.from_local_sync(tmp_path)


def test_file_download_without_target_returns_a_readable_path(tmp_path: Path) -> None:
    f = File.from_local_sync(write(tmp_path / "f.txt", "content"))
    path = f.download_sync()
    assert Path(path).read_text() == "content"
    assert Path(asyncio.run(f.download())).read_text() == "content"


def test_file_download_to_a_target_copies(tmp_path: Path) -> None:
    src = write(tmp_path / "f.txt", "content")
    f = File.from_local_sync(src)
    target = tmp_path / "out" / "copy.txt"
    target.parent.mkdir()
    assert f.download_sync(target) == str(target)
    src.write_text("changed")  # a copy, not a link
    assert target.read_text() == "content"


def test_file_download_async_to_a_directory_uses_the_file_name(tmp_path: Path) -> None:
    f = File.from_local_sync(write(tmp_path / "report.txt", "r"))
    outdir = tmp_path / "out"
    outdir.mkdir()
    result = asyncio.run(f.download(outdir))
    assert result == str(outdir / "report.txt")
    assert (outdir / "report.txt").read_text() == "r"


def test_file_download_of_a_deleted_file_raises(tmp_path: Path) -> None:
    src = write(tmp_path / "gone.txt", "x")
    f = File.from_local_sync(src)
    assert f.exists_sync()
    src.unlink()
    assert not f.exists_sync()
    with pytest.raises(FileNotFoundError, match="no longer exists"):
        f.download_sync()
    with pytest.raises(FileNotFoundError):
        asyncio.run(f.download())


def test_file_open_with(tmp_path: Path) -> None:
    f = File.from_local_sync(write(tmp_path / "f.txt", "héllo"))
    with f.open() as handle:
        assert handle.read() == "héllo".encode()
    assert handle.closed
    with f.open("r", encoding="utf-8") as handle:
        assert handle.read() == "héllo"
    with f.open_sync("r", encoding="utf-8") as handle:
        assert handle.read() == "héllo"


def test_file_open_async_with(tmp_path: Path) -> None:
    f = File.from_local_sync(write(tmp_path / "f.txt", "line1\nline2\n"))

    async def read() -> tuple[list[str], bool]:
        async with f.open("r") as handle:
            lines = (await handle.read()).splitlines()
        return lines, handle.closed

    assert asyncio.run(read()) == (["line1", "line2"], True)


def test_file_open_closes_on_error(tmp_path: Path) -> None:
    f = File.from_local_sync(write(tmp_path / "f.txt", "x"))
    with pytest.raises(RuntimeError), f.open() as handle:
        raise RuntimeError
    assert handle.closed


# -- Dir --------------------------------------------------------------------------------------


def test_dir_from_local_sync_and_async(tree: Path) -> None:
    d = Dir.from_local_sync(tree)
    assert d == Dir(path=str(tree.resolve()), name="tree")
    assert asyncio.run(Dir.from_local(tree)) == d


@pytest.mark.parametrize("sync", [True, False])
def test_dir_from_local_missing_path(tmp_path: Path, sync: bool) -> None:
    missing = tmp_path / "nodir"
    with pytest.raises(FileNotFoundError, match=r"Dir\.from_local: .*nodir is not an existing"):
        if sync:
            Dir.from_local_sync(missing)
        else:
            asyncio.run(Dir.from_local(missing))


def test_dir_from_local_rejects_a_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not an existing directory"):
        Dir.from_local_sync(write(tmp_path / "f.txt", "x"))


def test_dir_walk_and_list_files_find_nested_files(tree: Path) -> None:
    d = Dir.from_local_sync(tree)
    files = list(d.walk_sync())
    rel = [str(Path(f.path).relative_to(tree.resolve())) for f in files]
    assert rel == sorted(rel)
    assert set(rel) == {"top.txt", "z.txt", "a/one.txt", "a/b/two.bin"}
    assert all(isinstance(f, File) for f in files)
    assert {f.name for f in files} == {"top.txt", "z.txt", "one.txt", "two.bin"}
    by_name = {f.name: f for f in files}
    with by_name["two.bin"].open() as handle:
        assert handle.read() == b"\x00two"
    # list_files is the top level only, as Flyte documents it
    top = [f for f in files if Path(f.path).parent == tree.resolve()]
    assert [f.name for f in top] == ["top.txt", "z.txt"]
    assert d.list_files_sync() == top
    assert asyncio.run(d.list_files()) == top


def test_dir_list_files_of_an_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert Dir.from_local_sync(tmp_path / "empty").list_files_sync() == []


def test_dir_download_without_target(tree: Path) -> None:
    d = Dir.from_local_sync(tree)
    local = Path(d.download_sync())
    assert (local / "a" / "b" / "two.bin").read_bytes() == b"\x00two"
    assert Path(asyncio.run(d.download())) == local


def test_dir_download_to_a_target_copies_the_tree(tree: Path, tmp_path: Path) -> None:
    d = Dir.from_local_sync(tree)
    target = tmp_path / "copy"
    assert d.download_sync(target) == str(target)
    assert (target / "a" / "b" / "two.bin").read_bytes() == b"\x00two"
    assert (target / "empty").is_dir()
    target2 = tmp_path / "copy2"
    assert asyncio.run(d.download(target2)) == str(target2)
    shutil.rmtree(tree)
    assert (target / "top.txt").read_text() == "top"
    assert (target2 / "a" / "one.txt").read_text() == "one"


def test_dir_download_of_a_deleted_directory_raises(tree: Path) -> None:
    d = Dir.from_local_sync(tree)
    shutil.rmtree(tree)
    with pytest.raises(FileNotFoundError, match="no longer exists"):
        d.download_sync()


# -- codecs -----------------------------------------------------------------------------------


def test_file_codec_without_store_keeps_the_path(tmp_path: Path) -> None:
    f = File.from_local_sync(write(tmp_path / "f.txt", "x"))
    data = codec_for(File).encode(f, None)
    assert data == {"__loom__": "file", "path": f.path, "name": "f.txt"}
    result = roundtrip(File, f, None)
    assert type(result) is File
    assert result == f


def test_file_codec_with_store_copies_into_the_store(tmp_path: Path, store: LocalBlobStore) -> None:
    src = write(tmp_path / "data.csv", "a,b\n1,2\n")
    f = File.from_local_sync(src)
    result = roundtrip(File, f, store)
    assert type(result) is File
    assert result.name == "data.csv"
    assert Path(result.path).is_relative_to(store.root)
    assert result.path != f.path
    src.unlink()
    with result.open("r") as handle:
        assert handle.read() == "a,b\n1,2\n"
    assert Path(result.download_sync()).read_text() == "a,b\n1,2\n"


def test_file_codec_with_store_deduplicates(tmp_path: Path, store: LocalBlobStore) -> None:
    one = File.from_local_sync(write(tmp_path / "1" / "f.txt", "same"))
    two = File.from_local_sync(write(tmp_path / "2" / "f.txt", "same"))
    three = File.from_local_sync(write(tmp_path / "3" / "f.txt", "different"))
    codec = codec_for(File)
    assert codec.encode(one, store) == codec.encode(two, store)
    assert codec.encode(one, store) != codec.encode(three, store)


def test_file_codec_keeps_a_custom_name(tmp_path: Path, store: LocalBlobStore) -> None:
    src = write(tmp_path / "tmp123", "x")
    f = File(path=str(src), name="report.txt")
    for s in (None, store):
        assert roundtrip(File, f, s).name == "report.txt"
    outdir = tmp_path / "out"
    outdir.mkdir()
    assert Path(roundtrip(File, f, store).download_sync(outdir)).name == "report.txt"


def test_dir_codec_without_store_keeps_the_path(tree: Path) -> None:
    d = Dir.from_local_sync(tree)
    assert codec_for(Dir).encode(d, None) == {"__loom__": "dir", "path": d.path, "name": "tree"}
    result = roundtrip(Dir, d, None)
    assert type(result) is Dir
    assert result == d


def test_dir_codec_with_store_copies_the_tree(tree: Path, store: LocalBlobStore) -> None:
    d = Dir.from_local_sync(tree)
    result = roundtrip(Dir, d, store)
    assert type(result) is Dir
    assert result.name == "tree"
    assert Path(result.path).is_relative_to(store.root)
    shutil.rmtree(tree)
    contents = {f.name: Path(f.path).read_bytes() for f in result.walk_sync()}
    assert contents == {
        "top.txt": b"top",
        "z.txt": b"zed",
        "one.txt": b"one",
        "two.bin": b"\x00two",
    }
    assert (Path(result.path) / "empty").is_dir()


def test_io_codecs_check_types(tmp_path: Path, tree: Path) -> None:
    f = File.from_local_sync(write(tmp_path / "f.txt", "x"))
    d = Dir.from_local_sync(tree)
    assert codec_for(File).check(f)
    assert codec_for(Dir).check(d)
    assert not codec_for(File).check(d)
    assert not codec_for(Dir).check(f)
    assert not codec_for(File).check(f.path)
    assert not codec_for(File).check(Path(f.path))
    assert codec_for(File | None).check(None)
    assert not codec_for(list[File]).check([f, "x"])
    assert codec_for(File).describe() == "File"


def test_files_inside_containers_go_through_the_store(
    tmp_path: Path, tree: Path, store: LocalBlobStore
) -> None:
    report = write(tmp_path / "report.md", "# report")
    inputs = [write(tmp_path / "in" / f"{i}.txt", str(i)) for i in range(3)]
    bundle = Bundle(
        report=File.from_local_sync(report),
        inputs=[File.from_local_sync(p) for p in inputs],
        workdir=Dir.from_local_sync(tree),
    )
    result = roundtrip(Bundle, bundle, store)
    for p in [report, *inputs]:
        p.unlink()
    shutil.rmtree(tree)
    assert type(result) is Bundle
    assert type(result.report) is File
    assert Path(result.report.path).read_text() == "# report"
    assert [Path(f.path).read_text() for f in result.inputs] == ["0", "1", "2"]
    assert [f.name for f in result.inputs] == ["0.txt", "1.txt", "2.txt"]
    assert result.workdir is not None
    assert (Path(result.workdir.path) / "a" / "one.txt").read_text() == "one"
    for ref in [result.report, *result.inputs, result.workdir]:
        assert Path(ref.path).is_relative_to(store.root)


def test_file_mappings_and_optionals_round_trip(tmp_path: Path, store: LocalBlobStore) -> None:
    f = File.from_local_sync(write(tmp_path / "f.txt", "x"))
    assert roundtrip(File | None, None, store) is None
    assert roundtrip(dict[str, File], {"k": f}, None) == {"k": f}
    stored = roundtrip(dict[str, File], {"k": f}, store)["k"]
    assert Path(stored.path).read_text() == "x"
    assert Path(stored.path).is_relative_to(store.root)
