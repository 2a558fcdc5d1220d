"""The File/Dir API Flyte 2 programs call: new_remote, from_existing_remote, hashes, async
handles, walking a Dir; local mode, and the codecs that carry it all."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import loom
from loom.io import Dir, File, HashFunction
from loom.types import LocalBlobStore, codec_for


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
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    write(root / "top.txt", "top")
    write(root / "z.csv", "a,b\n")
    write(root / "a" / "one.txt", "one")
    write(root / "a" / "b" / "two.bin", b"\x00two")
    return root


class Sha256:
    """A hashlib accumulator, as Flyte users wrap one (update/result)."""

    def __init__(self) -> None:
        self.h = hashlib.sha256()
        self.updates = 0

    def update(self, data: Any, /) -> None:
        self.updates += 1
        self.h.update(data)

    def result(self) -> str:
        return self.h.hexdigest()


# -- new_remote and the handles of open() -----------------------------------------------------


def test_new_remote_is_written_through_an_async_handle() -> None:
    async def main() -> tuple[File, list[Any]]:
        f = File.new_remote()
        seen: list[Any] = [await f.exists()]
        async with f.open("wb") as fh:
            seen.append(await fh.write(b"ab\ncd\n"))
        seen.append(await f.exists())
        async with f.open("rb") as fh:
            seen.append(bytes(await fh.read()))
        return f, seen

    f, seen = asyncio.run(main())
    assert seen == [False, 6, True, b"ab\ncd\n"]
    assert f.name and Path(f.path).name == f.name and f.hash is None
    assert Path(f.path).read_bytes() == b"ab\ncd\n"


def test_new_remote_names_and_sync_writes() -> None:
    f = File.new_remote(file_name="my_data.txt", hash_method="precomputed")
    assert f.name == "my_data.txt" and f.path.endswith("/my_data.txt")
    assert f.hash == "precomputed"
    assert File.new_remote("my_data.txt").path != f.path  # a fresh place every time
    with f.open_sync("w") as fh:
        assert not hasattr(fh.write("x"), "__await__")  # a normal file object
    with f.open("w") as fh:  # overwriting, as Flyte's overwrite example does
        fh.write("second")
    assert f.exists_sync()
    with f.open("r") as fh:
        assert fh.read() == "second"


@pytest.mark.parametrize("use_async", [True, False])
def test_new_remote_with_a_hash_method_hashes_what_was_written(use_async: bool) -> None:
    fn = HashFunction.from_fn(lambda data: f"len{len(data)}")
    f = File.new_remote(hash_method=fn)
    acc = Sha256()
    g = File.new_remote(hash_method=acc)

    async def write_async() -> None:
        async with f.open("wb") as fh:
            await fh.write(b"12345")
        async with g.open("wb") as fh:
            await fh.write(b"hello")

    if use_async:
        asyncio.run(write_async())
    else:
        with f.open_sync("wb") as fh:
            fh.write(b"12345")
        with g.open("wb") as fh:
            fh.write(b"hello")
    assert f.hash == "len5"
    assert g.hash == hashlib.sha256(b"hello").hexdigest()


def test_the_async_handle_has_the_file_methods(tmp_path: Path) -> None:
    f = File.from_local_sync(write(tmp_path / "lines.txt", "one\ntwo\nthree\n"))

    async def main() -> list[Any]:
        out: list[Any] = []
        async with f.open("r") as fh:
            out.append(await fh.readline())
            out.append(await fh.read(3))
            out.append(await fh.tell())
            await fh.seek(0)
            out.append(await fh.readlines())
            await fh.seek(0)
            out.append([line async for line in fh])
            out.append(fh.name == f.path and fh.mode == "r" and not fh.closed)
        out.append(fh.closed)
        async with f.open("ab") as fh:
            await fh.write(b"x" * 100_000)  # a large write: in a worker thread
            await fh.flush()
        async with f.open("rb") as fh:
            out.append(len(await fh.read()))
            out.append(fh.raw.readable())
        return out

    assert asyncio.run(main()) == [
        "one\n",
        "two",
        7,
        ["one\n", "two\n", "three\n"],
        ["one\n", "two\n", "three\n"],
        True,
        True,
        14 + 100_000,
        True,
    ]


def test_a_failed_write_computes_no_hash() -> None:
    f = File.new_remote(hash_method=Sha256())
    with pytest.raises(RuntimeError), f.open("wb") as fh:
        fh.write(b"partial")
        raise RuntimeError
    assert f.hash is None


def test_stored_content_cannot_be_opened_for_writing() -> None:
    ref = File.from_existing_remote(f"loom://data/{'a' * 64}/x.txt")
    with pytest.raises(ValueError, match="stored content does not change"), ref.open("wb"):
        pass

    async def main() -> None:
        async with ref.open("a"):
            pass

    with pytest.raises(ValueError, match="stored content does not change"):
        asyncio.run(main())


def test_open_rejects_a_compression_it_does_not_do(tmp_path: Path) -> None:
    f = File.from_local_sync(write(tmp_path / "f.txt", "x"))
    with pytest.raises(ValueError, match="compression"):
        f.open("rb", compression="gzip")
    with f.open("rb", block_size=1024, cache_type="none") as fh:  # accepted, no effect
        assert fh.read() == b"x"


# -- from_existing_remote, from_local and hashes -----------------------------------------------


def test_from_existing_remote(tmp_path: Path) -> None:
    src = write(tmp_path / "data.csv", "a,b\n")
    f = File.from_existing_remote(str(src), file_cache_key="k1")
    assert (f.path, f.name, f.hash) == (str(src), "data.csv", "k1")
    assert asyncio.run(f.exists())
    assert File.from_existing_remote(f"file://{src}").path == str(src)
    uri = f"loom://data/{'b' * 64}/report.txt"
    assert File.from_existing_remote(uri) == File(path=uri, name="report.txt")
    with pytest.raises(ValueError, match="loom reads loom://data/ references and local paths"):
        File.from_existing_remote("s3://bucket/data.csv")
    with pytest.raises(Exception, match="not a loom data reference"):
        File.from_existing_remote("loom://data/nothex/x")


def test_from_local_hash_methods(tmp_path: Path) -> None:
    src = write(tmp_path / "data.bin", b"x" * (3 << 20))  # several chunks
    assert File.from_local_sync(src, hash_method="fixed").hash == "fixed"
    assert File.from_local_sync(src).hash is None
    fn = HashFunction.from_fn(lambda data: hashlib.md5(data).hexdigest())
    expected = hashlib.md5(src.read_bytes()).hexdigest()
    assert asyncio.run(File.from_local(src, hash_method=fn)).hash == expected  # all of it
    acc = Sha256()
    f = File.from_local_sync(src, hash_method=acc)
    assert f.hash == hashlib.sha256(src.read_bytes()).hexdigest() and acc.updates > 1
    with pytest.raises(TypeError, match="hash_method"):
        File.from_local_sync(src, hash_method=42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="before any update"):
        HashFunction(str).result()


def test_from_local_to_a_local_destination(tmp_path: Path) -> None:
    src = write(tmp_path / "data.csv", "a,b\n")
    f = asyncio.run(File.from_local(src, str(tmp_path / "out" / "copy.csv"), hash_method="h"))
    assert (f.path, f.name, f.hash) == (str(tmp_path / "out" / "copy.csv"), "copy.csv", "h")
    assert Path(f.path).read_text() == "a,b\n"
    with pytest.raises(ValueError, match="not a local path"):
        File.from_local_sync(src, "s3://bucket/x.csv")


def test_a_file_is_flyte_shaped(tmp_path: Path) -> None:
    f = File(path=str(tmp_path / "x.csv"))
    assert (f.name, f.format, f.hash) == ("x.csv", "", None)  # the name defaults to the path's
    g = File(path=str(tmp_path / "y"), name="y", format="csv", hash="h")
    assert roundtrip(File, g, None) == g


def test_hash_and_format_travel_and_plain_values_stay_as_they_were(tmp_path: Path) -> None:
    src = write(tmp_path / "f.txt", "x")
    plain = codec_for(File).encode(File.from_local_sync(src), None)
    assert plain == {"__loom__": "file", "path": str(src), "name": "f.txt"}
    store = LocalBlobStore(tmp_path / "store")
    hashed = roundtrip(File, File.from_local_sync(src, hash_method="h"), store)
    assert hashed.hash == "h" and Path(hashed.path).is_relative_to(store.root)
    d = roundtrip(Dir, Dir.from_local_sync(tmp_path, dir_cache_key="dk"), None)
    assert d.hash == "dk"


# -- Dir ---------------------------------------------------------------------------------------


def test_dir_new_remote_and_from_existing_remote(tmp_path: Path) -> None:
    d = Dir.new_remote("output", hash="dh")
    assert (d.name, d.hash) == ("output", "dh") and Path(d.path).is_dir()
    write(Path(d.path) / "a.txt", "A")
    assert [f.name for f in d.list_files_sync()] == ["a.txt"]
    assert Dir.new_remote().path != Dir.new_remote().path
    e = Dir.from_existing_remote(str(tmp_path), dir_cache_key="k")
    assert (e.path, e.hash) == (str(tmp_path), "k") and e.exists_sync()
    uri = f"loom://data/{'c' * 64}/tree"
    assert Dir.from_existing_remote(uri).path == uri + "/"  # a directory's reference
    assert Dir.from_existing_remote(uri + "/").name == "tree"


def test_dir_from_local_with_a_cache_key_and_destination(tree: Path, tmp_path: Path) -> None:
    d = asyncio.run(Dir.from_local(tree, dir_cache_key="dir_hash"))
    assert (d.path, d.name, d.hash) == (str(tree.resolve()), "tree", "dir_hash")
    copy = Dir.from_local_sync(tree, str(tmp_path / "copy"))
    assert (Path(copy.path) / "a" / "b" / "two.bin").read_bytes() == b"\x00two"
    assert asyncio.run(Dir.from_local(tree, str(tmp_path / "copy2"), "k")).hash == "k"


def test_dir_exists(tree: Path) -> None:
    d = Dir.from_local_sync(tree)
    assert asyncio.run(d.exists()) and d.exists_sync()
    assert not asyncio.run(Dir(path=str(tree / "missing")).exists())


def test_dir_walk_async_and_sync(tree: Path) -> None:
    d = Dir.from_local_sync(tree)
    root = tree.resolve()

    async def walk(**kw: Any) -> list[str]:
        return [str(Path(f.path).relative_to(root)) async for f in d.walk(**kw)]

    def walk_sync(**kw: Any) -> list[str]:
        return [str(Path(f.path).relative_to(root)) for f in d.walk_sync(**kw)]

    everything = ["a/b/two.bin", "a/one.txt", "top.txt", "z.csv"]
    assert asyncio.run(walk()) == walk_sync() == everything
    assert asyncio.run(walk(recursive=False)) == walk_sync(recursive=False) == ["top.txt", "z.csv"]
    assert (
        asyncio.run(walk(max_depth=2)) == walk_sync(max_depth=2) == ["a/one.txt", *everything[2:]]
    )
    assert walk_sync(file_pattern="*.txt") == ["a/one.txt", "top.txt"]
    assert asyncio.run(walk(file_pattern="*.csv")) == ["z.csv"]
    names = [f.name for f in d.walk_sync()]
    assert names == ["two.bin", "one.txt", "top.txt", "z.csv"]


def test_dir_list_files_and_get_file(tree: Path) -> None:
    d = Dir.from_local_sync(tree)
    assert [f.name for f in asyncio.run(d.list_files())] == ["top.txt", "z.csv"]
    assert [f.name for f in d.list_files_sync()] == ["top.txt", "z.csv"]
    got = asyncio.run(d.get_file("top.txt"))
    assert got is not None and got == File(path=str(tree.resolve() / "top.txt"), name="top.txt")
    nested = d.get_file_sync("a/one.txt")
    assert nested is not None and nested.name == "one.txt"
    assert asyncio.run(d.get_file("missing.txt")) is None
    assert d.get_file_sync("a") is None  # a directory, not a file
    write(tree.parent / "outside.txt", "no")
    assert d.get_file_sync("../outside.txt") is None
    assert d.get_file_sync(str(tree.parent / "outside.txt")) is None


# -- pydantic models holding files -------------------------------------------------------------


class Report(BaseModel):
    title: str
    body: File


class Bundle(BaseModel):
    reports: list[Report]
    tree: Dir | None = None
    extra: dict[str, File] = {}


class Plain(BaseModel):
    n: int
    tags: list[str]


def test_files_inside_pydantic_models_are_stored(tmp_path: Path, tree: Path) -> None:
    store = LocalBlobStore(tmp_path / "store")
    body = write(tmp_path / "body.txt", "the body")
    other = write(tmp_path / "other.txt", "other")
    value = Bundle(
        reports=[Report(title="t", body=File.from_local_sync(body, hash_method="bh"))],
        tree=Dir.from_local_sync(tree),
        extra={"o": File.from_local_sync(other)},
    )
    result = roundtrip(Bundle, value, store)
    stored_body = result.reports[0].body
    assert Path(stored_body.path).is_relative_to(store.root) and stored_body.hash == "bh"
    assert result.tree is not None and Path(result.tree.path).is_relative_to(store.root)
    assert Path(result.extra["o"].path).is_relative_to(store.root)
    body.unlink()
    other.unlink()
    with stored_body.open("r") as fh:
        assert fh.read() == "the body"
    assert value.reports[0].body.path == str(body.resolve())  # the caller's value is unchanged
    assert roundtrip(Bundle, Bundle(reports=[]), store) == Bundle(reports=[])
    # without a store (local mode, no cache) the paths stay as they are
    assert roundtrip(Report, Report(title="x", body=File(path="/p")), None).body.path == "/p"


def test_models_without_files_are_not_walked(monkeypatch: pytest.MonkeyPatch) -> None:
    from loom.types import _codecs

    def walked(*_: Any) -> Any:
        raise AssertionError("walked a model that cannot hold files")

    monkeypatch.setattr(_codecs, "_store_refs", walked)
    codec = codec_for(Plain)
    value = Plain(n=1, tags=["a"])
    encoded = codec.encode(value, LocalBlobStore(Path("/nonexistent")))
    assert codec.decode(encoded, None) == value


# -- the cache keys on a set hash --------------------------------------------------------------

env = loom.TaskEnvironment("flyte-io-api")
calls: list[str] = []


@env.task(cache=loom.Cache("override", version_override="v1"))
async def count_lines(f: File) -> int:
    calls.append(f.path)
    async with f.open("rb") as fh:
        return len(bytes(await fh.read()).splitlines())


@env.task(cache=loom.Cache("override", version_override="v1"))
async def count_files(d: Dir) -> int:
    calls.append(d.path)
    return len(await d.list_files())


@env.task
async def hashed_calls(where: str) -> list[int]:
    one = write(Path(where) / "one.txt", "a\nb\n")
    two = write(Path(where) / "two.txt", "totally\ndifferent\ncontent\n")
    d1 = write(Path(where) / "d1" / "x.txt", "x").parent
    d2 = write(Path(where) / "d2" / "y.txt", "y").parent
    write(d2 / "z.txt", "z")
    return [
        await count_lines(await File.from_local(one, hash_method="same")),
        await count_lines(await File.from_local(two, hash_method="same")),  # a hit: same hash
        await count_lines(await File.from_local(two)),  # no hash: keyed by content
        await count_lines(await File.from_local(two, hash_method="other")),
        await count_files(await Dir.from_local(d1, dir_cache_key="dk")),
        await count_files(await Dir.from_local(d2, dir_cache_key="dk")),  # a hit
        await count_files(await Dir.from_local(d2)),
    ]


def test_a_set_hash_keys_the_cache_instead_of_the_content(tmp_path: Path) -> None:
    calls.clear()
    assert loom.run(hashed_calls, where=str(tmp_path)).outputs() == [2, 2, 3, 3, 1, 1, 2]
    assert len(calls) == 5
