"""Python environments for task images (``loom.Image``), built with uv and cached.

Each distinct image (``wire.environment_digest``, together with the loom runtime's own
requirements) gets one virtual environment under ``<data dir>/environments/<key>``, holding:

- the image's packages and requirement files, installed by ``uv pip install``;
- the loom runtime's dependencies, pinned to the versions the server runs;
- a path file that makes the server's own ``loom`` package importable (only that package:
  nothing else of the server's environment leaks into the task's).

It is built once, whoever asks first: in a temporary directory renamed into place when
complete, under an asyncio lock per key (every action of one new image waits for the same
build) and a file lock (so does another server process on the same data dir). The build's
output goes to ``<key>.log`` beside it; a failed build raises :class:`EnvironmentBuildError`
with uv's own message, and is tried again by the next action that needs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from anyio import to_thread

from .. import wire
from ._errors import ServerError

#: The server's Python, as ``"3.11"``: an image that asks for nothing else runs in it.
SERVER_PYTHON = f"{sys.version_info[0]}.{sys.version_info[1]}"
_BUILD_TIMEOUT_S = 1800.0
_READY = ".loom-ready"  # written last: an environment without it is not one
_USED = ".loom-used"  # touched when an action starts in it (at most once a minute)
#: How long a failed build's error answers for it: the actions that waited for that build, and
#: those that come right after, fail with it instead of building again each.
_FAILED_FOR_S = 60.0
_TOUCH_EVERY_S = 60.0
_MESSAGE_BYTES = 4000  # of uv's output, in the error of a failed build


class EnvironmentBuildError(ServerError):
    """An image's environment could not be built (uv's message says why)."""

    status_code = 422


@dataclass(frozen=True, slots=True)
class Environment:
    """A built environment: its key, and the interpreter the image's tasks run with."""

    key: str
    python: Path


def uv_binary() -> str:
    """The uv that builds environments: the one installed with loom, else the one on PATH."""
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found is None:
            raise EnvironmentBuildError(
                "uv is not installed, and tasks with an image need it: `pip install uv`"
            ) from None
        return found


def runtime_requirements() -> list[str]:
    """The loom runtime's dependencies, as ``name[extras]==version`` of what runs here."""
    from packaging.requirements import Requirement

    pins = []
    for text in importlib.metadata.requires("loom") or []:
        requirement = Requirement(text)
        if requirement.marker is not None and "extra" in str(requirement.marker):
            continue
        extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
        pins.append(f"{requirement.name}{extras}=={importlib.metadata.version(requirement.name)}")
    return sorted(pins)


class Environments:
    """The environment cache of one data dir."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        """``env``: the builds' environment (an sdist's build runs the package's code: it
        gets what tasks get, none of the server's own settings)."""
        self.root = root
        self._env = env
        self._locks: dict[str, asyncio.Lock] = {}
        self._built: dict[str, Environment] = {}
        self._runtime: list[str] | None = None
        self._touched: dict[str, float] = {}  # key: when its use was last written down
        self._failed: dict[str, tuple[float, EnvironmentBuildError]] = {}  # key: when, why

    def key(self, spec: wire.ImageSpec) -> str:
        """The name of ``spec``'s environment: its digest, with the runtime's requirements
        (a server of another loom version builds its own)."""
        if self._runtime is None:
            self._runtime = runtime_requirements()
        data = json.dumps([wire.environment_digest(spec), self._runtime, _loom_dir()])
        return hashlib.sha256(data.encode()).hexdigest()[:32]

    def log_path(self, key: str) -> Path:
        """Where the build of environment ``key`` writes its output."""
        return self.root / f"{key}.log"

    def is_built(self, key: str) -> bool:
        """Whether environment ``key`` is ready (then :meth:`ensure` returns at once)."""
        return key in self._built or (self.root / key / _READY).exists()

    async def ensure(self, spec: wire.ImageSpec) -> Environment:
        """``spec``'s environment, built first if it is not yet (once, whoever asks)."""
        key = self.key(spec)
        found = self._built.get(key)
        if found is not None:
            self._touch(key)
            return found
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            found = self._built.get(key)
            if found is None:
                failed = self._failed.get(key)
                if failed is not None and time.monotonic() - failed[0] < _FAILED_FOR_S:
                    raise failed[1]
                try:
                    found = await to_thread.run_sync(self._build_locked, spec, key)
                except EnvironmentBuildError as e:
                    self._failed[key] = (time.monotonic(), e)
                    raise
                self._failed.pop(key, None)
                self._built[key] = found
            self._touch(key)
            return found

    def _locked(self, uv: str, file: wire.RequirementsFile, project: Path, out: TextIO) -> Path:
        """The requirements a uv.lock pins (the project itself aside), exported from a copy
        of its project."""
        assert file.project is not None
        project.mkdir()
        (project / "pyproject.toml").write_text(file.project)
        (project / "uv.lock").write_text(file.content)
        exported = project / "requirements.txt"
        command = [uv, *wire.LOCK_EXPORT, "--quiet", "--project", str(project), "-o", str(exported)]
        _run(command, out, self._env)
        return exported

    def view(self, spec: wire.ImageSpec) -> wire.EnvironmentView | None:
        """What the action page shows of ``spec``'s environment (``None``: it needs none)."""
        if not wire.needs_environment(spec, SERVER_PYTHON) or wire.container_parts(spec):
            return None
        key = self.key(spec)
        log = ""
        with contextlib.suppress(OSError), self.log_path(key).open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - wire.VIEW_LOG_BYTES))
            log = hide_url_credentials(f.read().decode(errors="replace"))
        return wire.EnvironmentView(key=key, built=self.is_built(key), log=log)

    def _touch(self, key: str) -> None:
        """Note that an action uses environment ``key`` (for ``loom get image``'s last use)."""
        now = time.monotonic()
        if now - self._touched.get(key, -_TOUCH_EVERY_S) >= _TOUCH_EVERY_S:
            self._touched[key] = now
            with contextlib.suppress(OSError):
                (self.root / key / _USED).touch()

    def built(self) -> list[wire.ImageInfo]:
        """The built environments, newest first (their sizes are summed from their files)."""
        infos = []
        if not self.root.is_dir():
            return []
        for ready in self.root.glob(f"*/{_READY}"):
            try:
                spec = wire.ImageSpec.model_validate_json(ready.read_text())
                built_at = ready.stat().st_mtime
            except (OSError, ValueError):
                continue  # (removed meanwhile, or not ours)
            used = ready.parent / _USED
            infos.append(
                wire.ImageInfo(
                    key=ready.parent.name,
                    python=spec.python,
                    packages=spec.packages,
                    requirements=[r.name for r in spec.requirements],
                    size_bytes=_size(ready.parent),
                    built_at=_utc(built_at),
                    last_used_at=_utc(used.stat().st_mtime) if used.exists() else None,
                )
            )
        return sorted(infos, key=lambda i: i.built_at, reverse=True)

    def prune(self, unused_since: datetime) -> list[wire.ImageInfo]:
        """Delete the environments no action has used since ``unused_since`` (those never
        used: built before it); what was deleted."""
        return [
            info
            for info in self.built()
            if (info.last_used_at or info.built_at) < unused_since and self.delete(info.key)
        ]

    def delete(self, key: str) -> bool:
        """Remove environment ``key`` (the next action that needs it builds it again);
        ``False`` if there is no such environment. Actions running in it keep what they
        imported, but may fail importing more: delete an environment no action uses."""
        if not re.fullmatch(r"[0-9a-f]{32}", key):
            return False
        target = self.root / key
        if not (target / _READY).exists():
            return False
        with _file_lock(self.root / f"{key}.lock"):
            self._built.pop(key, None)
            # renamed first: an action looking for it never finds half of it
            doomed = Path(tempfile.mkdtemp(prefix=f".deleted-{key}-", dir=self.root))
            os.replace(target, doomed / key)
            shutil.rmtree(doomed, ignore_errors=True)
            self.log_path(key).unlink(missing_ok=True)
        return True

    def _build_locked(self, spec: wire.ImageSpec, key: str) -> Environment:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        with _file_lock(self.root / f"{key}.lock"):
            target = self.root / key
            python = target / "bin" / "python"
            if (target / _READY).exists():
                return Environment(key, python)
            # what a build or a delete killed midway left (we hold the lock: none runs now)
            shutil.rmtree(target, ignore_errors=True)
            for pattern in (f".{key}-*", f".deleted-{key}-*"):
                for stale in self.root.glob(pattern):
                    shutil.rmtree(stale, ignore_errors=True)
            temp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=self.root))
            try:
                self._build(spec, key, temp)
                os.replace(temp, target)
            except BaseException:
                shutil.rmtree(temp, ignore_errors=True)
                raise
            return Environment(key, python)

    def _build(self, spec: wire.ImageSpec, key: str, path: Path) -> None:
        uv = uv_binary()
        log = self.log_path(key)
        started = time.monotonic()
        with log.open("a") as out:
            out.write(f"building environment {key} for Python {spec.python}\n")
            out.flush()
            venv = [uv, "venv", "--quiet", "--relocatable", "--python", spec.python, str(path)]
            _run(venv, out, self._env)
            requirements_dir = path / ".loom-requirements"
            requirements_dir.mkdir()
            # (compiled now: every action process would compile what it imports otherwise)
            python = str(path / "bin" / "python")
            command = [uv, "pip", "install", "--compile-bytecode", "--python", python]
            command += wire.index_options(spec)
            for i, file in enumerate(spec.requirements):
                written = requirements_dir / f"{i}-{_safe_name(file.name)}"
                if file.project is not None:  # a uv.lock: exactly what it locks
                    written = self._locked(uv, file, requirements_dir / str(i), out)
                else:
                    written.write_text(file.content)
                command += ["-r", str(written)]
            assert self._runtime is not None  # (key() read them)
            _run([*command, *self._runtime, *spec.packages], out, self._env)
            site = _site_packages(path)
            # the server's loom, and only it: a directory holding a link to the package
            runtime = self.root / f".runtime-{_digest(_loom_dir())[:16]}"
            if not (runtime / "loom").exists():
                runtime.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(FileExistsError):
                    (runtime / "loom").symlink_to(_loom_dir(), target_is_directory=True)
            (site / "_loom_runtime.pth").write_text(f"{runtime}\n")
            (path / _READY).write_text(json.dumps(spec.model_dump(mode="json"), indent=1))
            out.write(f"built in {time.monotonic() - started:.1f} s\n")


def _run(command: list[str], out: TextIO, env: dict[str, str]) -> None:
    try:
        done = subprocess.run(
            command,
            check=False,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=_BUILD_TIMEOUT_S,
            # (a Python the machine lacks is an error, not a download)
            env={"UV_PYTHON_DOWNLOADS": "never", **env},
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise EnvironmentBuildError(f"building the image's environment failed: {e}") from e
    out.write(done.stdout)
    out.flush()
    if done.returncode != 0:
        raise EnvironmentBuildError(
            f"building the image's environment failed ({' '.join(command[:3])}): "
            f"{done.stdout.strip()[-_MESSAGE_BYTES:]}"
        )


def hide_url_credentials(text: str) -> str:
    """``text`` with the user and password of every URL in it hidden (a private index's
    token in ``index_url`` is in uv's output)."""
    return re.sub(r"(\w+://)[^/\s:@]+(?::[^/\s@]*)?@", r"\1***@", text)


def _size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3*/site-packages"))
    if not found:
        raise EnvironmentBuildError(f"the environment at {venv} has no site-packages")
    return found[0]


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "requirements"


def _loom_dir() -> str:
    """The directory of the ``loom`` package this server runs (``loom/server/..``)."""
    return str(Path(__file__).resolve().parents[1])


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
