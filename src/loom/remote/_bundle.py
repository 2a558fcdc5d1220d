"""Code bundles: the user's source tree as a deterministic, content-addressed tar.gz."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BundleError

if TYPE_CHECKING:
    from .._task import TaskTemplate

#: Directories never worth shipping: VCS data, virtualenvs, caches, build output.
SKIP_DIRS = frozenset(
    {
        ".git", ".hg", ".svn", ".venv", "venv", ".env", "env", "__pycache__", ".mypy_cache",
        ".pytest_cache", ".ruff_cache", ".tox", ".nox", "node_modules", "build", "dist",
        ".idea", ".vscode", ".loom", ".ipynb_checkpoints",
    }
)  # fmt: skip
SKIP_SUFFIXES = (".pyc", ".pyo", ".egg-info")
MAX_BUNDLE_BYTES = 200 * 1024 * 1024


@dataclass(frozen=True)
class Bundle:
    digest: str
    data: bytes
    files: int


def _walk(root: Path) -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d
            for d in dirnames
            if d not in SKIP_DIRS
            and not d.endswith(SKIP_SUFFIXES)
            and not (Path(dirpath) / d / "pyvenv.cfg").exists()  # a virtualenv by any name
        )
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if name.endswith(SKIP_SUFFIXES) or path.is_symlink():
                continue
            files.append(path)
    return files


def make_bundle(root: Path) -> Bundle:
    """Pack ``root`` reproducibly: same content, same bytes, same digest."""
    raw = io.BytesIO()
    files = _walk(root)
    total = 0
    with (
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path in files:
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(root)))
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
            total += info.size
            if total > MAX_BUNDLE_BYTES:
                raise BundleError(
                    f"the source tree under {root} is larger than "
                    f"{MAX_BUNDLE_BYTES // 2**20} MiB (reached at {path}); move data out of it "
                    "or pass it as File/Dir inputs"
                )
            with path.open("rb") as f:
                tar.addfile(info, f)
    data = raw.getvalue()
    return Bundle(hashlib.sha256(data).hexdigest(), data, len(files))


def extract_bundle(data: bytes | Path, target: Path) -> Path:
    """Unpack a .tar.gz (its bytes, or a file, read as it unpacks) into ``target``
    atomically, refusing anything that escapes it."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=target.parent))
    try:
        fileobj = None if isinstance(data, Path) else io.BytesIO(data)
        name = data if isinstance(data, Path) else None
        with tarfile.open(name, mode="r:gz", fileobj=fileobj) as tar:
            tar.extractall(staging, filter="data")  # rejects absolute paths, .. and links out
        try:
            os.replace(staging, target)
        except OSError:
            if not target.exists():  # not a concurrent unpack of the same bundle
                raise
    except (tarfile.TarError, OSError, EOFError) as e:
        raise BundleError(f"cannot unpack code bundle into {target}: {e}") from e
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def source_root(module_file: Path) -> tuple[Path, str]:
    """The directory to bundle for a module file, and the module's dotted name from there.

    The root is the first directory above the file that is not a package, so relative imports
    inside packages keep working after unpacking.
    """
    parts = [module_file.stem]
    root = module_file.parent
    while (root / "__init__.py").exists():
        parts.insert(0, root.name)
        root = root.parent
    return root, ".".join(parts)


def task_location(
    task: TaskTemplate[Any, Any], root_dir: Path | None = None
) -> tuple[Path, str, str]:
    """Where a task lives: (source root, module name, attribute name).

    With ``root_dir`` (``loom.init(root_dir=...)``, or the unpacked bundle in a runtime) a file
    under it is named by its path from there; otherwise, and for files elsewhere (installed
    packages), the root is the first directory above the file that is not a package."""
    module = sys.modules.get(task.func.__module__)
    file = getattr(module, "__file__", None)
    if module is None or file is None:
        raise BundleError(
            f"task {task.name} is not defined in a file (module {task.func.__module__!r}); "
            "remote runs need tasks defined at module level in a .py file"
        )
    attr = next(
        (name for name, value in vars(module).items() if value is task),
        None,
    )
    if attr is None:
        attr = next(
            (n for n, v in vars(module).items() if getattr(v, "func", None) is task.func), None
        )
    if attr is None:
        raise BundleError(
            f"task {task.name} is not a module-level name of {file}; remote runs need tasks "
            "defined at module level"
        )
    path = Path(file).resolve()
    if root_dir is not None and path.is_relative_to(root := root_dir.resolve()):
        return root, ".".join(path.relative_to(root).with_suffix("").parts), attr
    root, name = source_root(path)
    return root, name, attr
