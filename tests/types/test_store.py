"""LocalBlobStore: a content-addressed, atomically written directory."""

from __future__ import annotations

import hashlib
import shutil
import threading
from pathlib import Path

import pytest

from loom.types import LocalBlobStore
from loom.types._store import hash_dir


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "store")


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


def make_tree(root: Path, files: dict[str, bytes | str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        write(root / rel, data)
    return root


def tree_contents(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def leftovers(store: LocalBlobStore) -> list[Path]:
    return sorted(store.root.rglob(".staging-*"))


# -- put_file ---------------------------------------------------------------------------------


def test_put_file_copies_into_the_store_under_its_sha256(
    store: LocalBlobStore, tmp_path: Path
) -> None:
    src = write(tmp_path / "data.csv", b"a,b\n1,2\n")
    ref = Path(store.put_file(src))
    digest = hashlib.sha256(b"a,b\n1,2\n").hexdigest()
    assert ref == store.root / digest[:2] / digest / "data.csv"
    assert ref.read_bytes() == b"a,b\n1,2\n"
    assert ref.is_relative_to(store.root)


def test_put_file_accepts_str_paths(store: LocalBlobStore, tmp_path: Path) -> None:
    src = write(tmp_path / "f.txt", "x")
    assert store.put_file(str(src)) == store.put_file(src)


def test_put_file_same_content_same_path(store: LocalBlobStore, tmp_path: Path) -> None:
    first = store.put_file(write(tmp_path / "a" / "f.txt", "same"))
    second = store.put_file(write(tmp_path / "b" / "f.txt", "same"))
    assert first == second
    assert store.put_file(tmp_path / "a" / "f.txt") == first


def test_put_file_different_content_different_path(store: LocalBlobStore, tmp_path: Path) -> None:
    first = store.put_file(write(tmp_path / "a" / "f.txt", "one"))
    second = store.put_file(write(tmp_path / "b" / "f.txt", "two"))
    assert first != second
    assert Path(first).read_text() == "one"
    assert Path(second).read_text() == "two"


def test_put_file_keeps_the_file_name(store: LocalBlobStore, tmp_path: Path) -> None:
    first = Path(store.put_file(write(tmp_path / "x.json", "{}")))
    second = Path(store.put_file(write(tmp_path / "y.json", "{}")))
    assert first.name == "x.json"
    assert second.name == "y.json"
    assert first.parent == second.parent  # same content, same digest directory


def test_put_file_changed_source_gets_a_new_path(store: LocalBlobStore, tmp_path: Path) -> None:
    src = write(tmp_path / "f.txt", "v1")
    first = store.put_file(src)
    src.write_text("v2")
    second = store.put_file(src)
    assert first != second
    assert Path(first).read_text() == "v1"
    assert Path(second).read_text() == "v2"


def test_put_file_survives_deletion_of_the_source(store: LocalBlobStore, tmp_path: Path) -> None:
    src = write(tmp_path / "f.bin", bytes(range(256)) * 100)
    ref = store.put_file(src)
    src.unlink()
    assert Path(ref).read_bytes() == bytes(range(256)) * 100


def test_put_file_empty_file(store: LocalBlobStore, tmp_path: Path) -> None:
    ref = Path(store.put_file(write(tmp_path / "empty", b"")))
    assert ref.is_file()
    assert ref.read_bytes() == b""


def test_put_file_missing_source_raises(store: LocalBlobStore, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        store.put_file(tmp_path / "missing.txt")


# -- put_bytes --------------------------------------------------------------------------------


def test_put_bytes_is_content_addressed(store: LocalBlobStore) -> None:
    first = store.put_bytes(b"payload", "data.parquet")
    assert store.put_bytes(b"payload", "data.parquet") == first
    other = store.put_bytes(b"other", "data.parquet")
    assert other != first
    assert Path(first).read_bytes() == b"payload"
    assert Path(other).read_bytes() == b"other"
    assert Path(first).name == "data.parquet"
    digest = hashlib.sha256(b"payload").hexdigest()
    assert Path(first).parent.name == digest


def test_put_bytes_and_put_file_agree(store: LocalBlobStore, tmp_path: Path) -> None:
    src = write(tmp_path / "blob", b"same bytes")
    assert store.put_file(src) == store.put_bytes(b"same bytes", "blob")


# -- put_dir ----------------------------------------------------------------------------------

TREE = {"a.txt": "alpha", "sub/b.txt": "beta", "sub/deeper/c.bin": b"\x00\x01"}


def test_put_dir_copies_the_whole_tree(store: LocalBlobStore, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "data", TREE)
    ref = Path(store.put_dir(src))
    assert ref.name == "data"
    assert ref.is_relative_to(store.root)
    assert ref.parent.name == hash_dir(src)
    assert tree_contents(ref) == tree_contents(src)


def test_put_dir_same_content_same_path(store: LocalBlobStore, tmp_path: Path) -> None:
    first = store.put_dir(make_tree(tmp_path / "one" / "data", TREE))
    second = store.put_dir(make_tree(tmp_path / "two" / "data", TREE))
    assert first == second


@pytest.mark.parametrize(
    "change",
    [
        {"a.txt": "ALPHA"},  # content
        {"sub/new.txt": ""},  # an extra (empty) file
        {"sub/deeper/c.bin": b"\x00\x02"},  # nested content
    ],
)
def test_put_dir_different_content_different_path(
    store: LocalBlobStore, tmp_path: Path, change: dict[str, bytes | str]
) -> None:
    first = store.put_dir(make_tree(tmp_path / "one" / "data", TREE))
    second = store.put_dir(make_tree(tmp_path / "two" / "data", {**TREE, **change}))
    assert first != second
    assert tree_contents(Path(first)) == tree_contents(tmp_path / "one" / "data")
    assert tree_contents(Path(second)) == tree_contents(tmp_path / "two" / "data")


def test_put_dir_renamed_file_different_path(store: LocalBlobStore, tmp_path: Path) -> None:
    first = store.put_dir(make_tree(tmp_path / "one" / "data", {"a.txt": "x"}))
    second = store.put_dir(make_tree(tmp_path / "two" / "data", {"b.txt": "x"}))
    assert first != second


def test_put_dir_survives_deletion_of_the_source(store: LocalBlobStore, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "data", TREE)
    expected = tree_contents(src)
    ref = store.put_dir(src)
    shutil.rmtree(src)
    assert tree_contents(Path(ref)) == expected


def test_put_dir_empty_directory(store: LocalBlobStore, tmp_path: Path) -> None:
    src = tmp_path / "empty"
    src.mkdir()
    ref = Path(store.put_dir(src))
    assert ref.is_dir()
    assert list(ref.iterdir()) == []


def test_put_dir_distinguishes_trees_with_ambiguous_concatenation(
    store: LocalBlobStore, tmp_path: Path
) -> None:
    one = make_tree(tmp_path / "one" / "data", {"a": b"Xb\x00Z"})
    two = make_tree(tmp_path / "two" / "data", {"a": b"X", "b": b"Z"})
    store.put_dir(one)
    ref = Path(store.put_dir(two))
    assert tree_contents(ref) == {"a": b"X", "b": b"Z"}


def test_put_dir_keeps_empty_subdirectories(store: LocalBlobStore, tmp_path: Path) -> None:
    store.put_dir(make_tree(tmp_path / "one" / "data", {"a.txt": "x"}))
    two = make_tree(tmp_path / "two" / "data", {"a.txt": "x"})
    (two / "outputs").mkdir()
    ref = Path(store.put_dir(two))
    assert (ref / "outputs").is_dir()


# -- atomicity --------------------------------------------------------------------------------


def test_no_leftover_staging_directories(store: LocalBlobStore, tmp_path: Path) -> None:
    src = write(tmp_path / "f.txt", "x")
    tree = make_tree(tmp_path / "data", TREE)
    for _ in range(2):  # first time publishes, second time finds the existing copy
        store.put_file(src)
        store.put_dir(tree)
        store.put_bytes(b"bytes", "b.bin")
    assert leftovers(store) == []
    top = sorted(p.name for p in store.root.iterdir())
    assert all(len(name) == 2 for name in top), top  # only <digest[:2]> shard directories


def test_concurrent_puts_of_the_same_content(store: LocalBlobStore, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "data", TREE)
    src = write(tmp_path / "f.txt", "concurrent")
    results: list[tuple[str, str, str]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        try:
            barrier.wait()
            results.append(
                (store.put_file(src), store.put_dir(tree), store.put_bytes(b"b", "b.bin"))
            )
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(results)) == 1
    file_ref, dir_ref, bytes_ref = results[0]
    assert Path(file_ref).read_text() == "concurrent"
    assert tree_contents(Path(dir_ref)) == tree_contents(tree)
    assert Path(bytes_ref).read_bytes() == b"b"
    assert leftovers(store) == []


def test_store_root_is_created_on_first_put(tmp_path: Path) -> None:
    root = tmp_path / "not" / "yet" / "there"
    store = LocalBlobStore(root)
    assert not root.exists()
    ref = store.put_bytes(b"x", "x")
    assert Path(ref).is_relative_to(root)
