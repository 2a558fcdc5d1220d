"""Code bundles: reproducible, skipping what should not ship, unpacked safely."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from loom.errors import BundleError
from loom.remote import extract_bundle, make_bundle
from loom.remote._bundle import source_root


def _tree(root: Path) -> None:
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "flow.py").write_text("X = 1\n")
    (root / "main.py").write_text("import pkg.flow\n")
    for junk in (".git", ".venv", "__pycache__", "node_modules", ".mypy_cache"):
        (root / junk).mkdir()
        (root / junk / "junk.txt").write_text("no")
    (root / "pkg" / "flow.cpython-311.pyc").write_bytes(b"\0")
    (root / "side-env").mkdir()
    (root / "side-env" / "pyvenv.cfg").write_text("home = /usr\n")
    (root / "side-env" / "lib.py").write_text("no")


def test_bundles_are_reproducible_and_skip_junk(tmp_path: Path) -> None:
    _tree(tmp_path / "a")
    _tree(tmp_path / "b")
    first, second = make_bundle(tmp_path / "a"), make_bundle(tmp_path / "b")
    assert first.digest == second.digest and first.data == second.data
    with tarfile.open(fileobj=io.BytesIO(first.data), mode="r:gz") as tar:
        names = sorted(tar.getnames())
    assert names == ["main.py", "pkg/__init__.py", "pkg/flow.py"]
    (tmp_path / "a" / "main.py").write_text("changed\n")
    assert make_bundle(tmp_path / "a").digest != first.digest


def test_extract_round_trip(tmp_path: Path) -> None:
    _tree(tmp_path / "src")
    bundle = make_bundle(tmp_path / "src")
    target = extract_bundle(bundle.data, tmp_path / "out" / bundle.digest)
    assert (target / "pkg" / "flow.py").read_text() == "X = 1\n"
    assert extract_bundle(bundle.data, target) == target  # already there: nothing to do
    assert [p.name for p in (tmp_path / "out").iterdir()] == [bundle.digest]
    # from a file too, read as it unpacks
    archive = tmp_path / "bundle.tar.gz"
    archive.write_bytes(bundle.data)
    from_file = extract_bundle(archive, tmp_path / "again")
    assert (from_file / "pkg" / "flow.py").read_text() == "X = 1\n"


def _tar_with(name: str) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    return raw.getvalue()


def test_extract_refuses_paths_outside_the_target(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="cannot unpack"):
        extract_bundle(_tar_with("../escape.txt"), tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()
    assert not (tmp_path / "out").exists()


def test_absolute_paths_land_inside_the_target(tmp_path: Path) -> None:
    target = extract_bundle(_tar_with("/abs/evil.txt"), tmp_path / "out")
    assert (target / "abs" / "evil.txt").read_bytes() == b"bad"
    assert not Path("/abs/evil.txt").exists()


def test_extract_refuses_links_out(tmp_path: Path) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        info = tarfile.TarInfo("link")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(BundleError):
        extract_bundle(raw.getvalue(), tmp_path / "out")


def test_garbage_is_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError):
        extract_bundle(b"not a tarball", tmp_path / "out")


def test_source_root_walks_up_through_packages(tmp_path: Path) -> None:
    _tree(tmp_path)
    assert source_root(tmp_path / "pkg" / "flow.py") == (tmp_path, "pkg.flow")
    assert source_root(tmp_path / "main.py") == (tmp_path, "main")
