"""The local controller: every task call of a local run becomes an action in this process."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import importlib.metadata
import itertools
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._checkpoint import LocalCheckpoints
from .._context import TaskContext, current_custom_context, current_group
from .._execution import ActionExecution, ActionRecord, execute_async, execute_sync
from .._image import Image
from .._settings import Settings
from .._trace import TraceRecord
from ._cache_store import LocalCacheStore, cache_store
from ._secrets import LocalSecrets

log = logging.getLogger("loom")

if TYPE_CHECKING:
    from .._task import TaskTemplate
    from ..types import BlobStore

ROOT_ACTION = "a0"


class LocalRun:
    """Host and controller of one local run: state, thread pool, cache and secrets."""

    mode = "local"

    def __init__(
        self,
        name: str,
        settings: Settings,
        *,
        overwrite_cache: bool = False,
        env_vars: Mapping[str, str] | None = None,
        custom_context: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.started_at = time.time()
        self.custom_context = dict(custom_context or {})
        self.settings = settings
        self.project = settings.project
        self.domain = settings.domain
        self.overwrite_cache = overwrite_cache
        self.env_vars = dict(env_vars or {})
        self.records: list[ActionRecord] = []
        self.traces: list[TraceRecord] = []
        self.inflight: dict[str, concurrent.futures.Future[None]] = {}
        self.inflight_lock = threading.Lock()
        self._counter = itertools.count(1)
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._cache: LocalCacheStore | None = None
        self._secrets: LocalSecrets | None = None
        self._scratch: Path | None = None
        self._lock = threading.Lock()
        self._images_checked: set[str] = set()  # environments whose image was looked at
        #: ``ctx().checkpoint``: kept in the run's scratch directory, removed with it
        self.checkpoints = LocalCheckpoints(lambda: self._scratch_dir() / "checkpoints")

    # -- controller: where task calls go ------------------------------------------------------

    def _action(
        self,
        task: TaskTemplate[Any, Any],
        parent: TaskContext | None,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
    ) -> ActionExecution:
        inputs = task.interface.bind(args, kwargs)
        name = ROOT_ACTION if parent is None else f"{task.short_name}-{next(self._counter)}"
        ex = ActionExecution(
            self, task, name, parent.action if parent else None, current_group.get(), inputs
        )
        # what the caller's context holds now (the run's own pairs for the root)
        called_with = current_custom_context()
        ex.context._custom_context = (
            called_with if parent else {**called_with, **self.custom_context}
        )
        self.records.append(ex.record)
        if task.env.name not in self._images_checked:
            self._images_checked.add(task.env.name)
            _warn_if_image_missing(task.env.name, task.env.image)
        return ex

    def call(
        self,
        task: TaskTemplate[Any, Any],
        parent: TaskContext | None,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
    ) -> Any:
        """A task called directly: a coroutine for async tasks, the value for sync ones."""
        ex = self._action(task, parent, args, kwargs)
        return execute_async(ex) if task.is_async else execute_sync(ex)

    def call_aio(
        self,
        task: TaskTemplate[Any, Any],
        parent: TaskContext | None,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
    ) -> Any:
        """A task called with ``.aio``: always awaitable; sync tasks run in the thread pool."""
        ex = self._action(task, parent, args, kwargs)
        return execute_async(ex) if task.is_async else self._in_thread(ex)

    async def _in_thread(self, ex: ActionExecution) -> Any:
        context = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread_pool(), context.run, execute_sync, ex)

    async def execute_root(
        self, task: TaskTemplate[Any, Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> Any:
        return await self.call_aio(task, None, args, kwargs)

    # -- host: what actions need --------------------------------------------------------------

    def _thread_pool(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = concurrent.futures.ThreadPoolExecutor(
                        self.settings.local_threads, thread_name_prefix=f"loom-{self.name}"
                    )
        return self._pool

    def _cache_store(self) -> LocalCacheStore:
        if self._cache is None:
            self._cache = cache_store(self.settings.cache_dir)
        return self._cache

    @property
    def blobs(self) -> BlobStore:
        return self._cache_store().blobs

    def cache_get(self, key: str) -> Any | None:
        return self._cache_store().get(key)

    def cache_put(self, key: str, task: str, version: str, value: Any) -> None:
        self._cache_store().put(key, task, version, value)

    def resolve_secrets(
        self, task: TaskTemplate[Any, Any]
    ) -> tuple[dict[str, str], dict[str, Path], dict[str, str]]:
        if self._secrets is None:
            self._secrets = LocalSecrets(self.settings)
        values: dict[str, str] = {}
        paths: dict[str, Path] = {}
        environ: dict[str, str] = {}
        for secret in task.secrets:
            value = values[secret.key] = self._secrets.get(secret.key)
            if secret.env_var:
                environ[secret.env_var] = value
            if secret.mount is not None:
                paths[secret.key] = self._mounted_secret(secret.key, value)
        return values, paths, environ

    def _mounted_secret(self, key: str, value: str) -> Path:
        """The run's file for a mounted secret, written once: concurrent tasks may read it."""
        path = self._scratch_dir() / "secrets" / re.sub(r"[^\w.-]", "_", key)
        with self._lock:
            if not path.exists():
                path.parent.mkdir(mode=0o700, exist_ok=True)
                staged = path.with_name(f".{path.name}.tmp")
                fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(value)
                os.replace(staged, path)  # readers never see a partly written file
        return path

    def _scratch_dir(self) -> Path:
        with self._lock:
            if self._scratch is None:
                self._scratch = Path(tempfile.mkdtemp(prefix=f"loom-{self.name}-"))
            return self._scratch

    def report_flushed(self, action: str, html: str) -> None:
        """``loom.report.flush()``: the report so far goes on the action's record."""
        for record in reversed(self.records):
            if record.name == action:
                record.report = html
                return

    def trace(self, record: TraceRecord) -> None:
        self.traces.append(record)

    def close(self) -> None:
        """Release threads and remove every temporary file of the run."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)


def _warn_if_image_missing(environment: str, image: Image | str | None) -> None:
    """Say, once and in one line, which packages an environment's image declares that this
    interpreter lacks: a local run ignores images, and would fail later and less clearly."""
    if not isinstance(image, Image):
        return
    from packaging.requirements import InvalidRequirement, Requirement

    wanted = list(image.pip_packages)
    for file in image.requirement_files:
        if not file.name.endswith((".toml", ".lock")):
            wanted += [line.split("#")[0].strip() for line in file.content.splitlines()]
    missing = []
    for text in wanted:
        try:
            name = Requirement(text).name
        except InvalidRequirement:
            continue  # (options, blank lines)
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    if missing:
        log.warning(
            "loom: the image of environment %r declares %s, not installed here: local runs use "
            "this interpreter (remote runs build the image's environment)",
            environment,
            ", ".join(missing),
        )
