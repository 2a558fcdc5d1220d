"""An async HTTP client for the control plane API (see ``loom.wire`` for the endpoints)."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import ssl
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter

from .. import wire
from ..errors import (
    ApiError,
    AuthenticationError,
    NotFoundError,
    PayloadTooLargeError,
    ServerUnreachableError,
)

M = TypeVar("M", bound=BaseModel)

_CREATED = TypeAdapter(list[wire.ActionCreated])
_STATUSES = TypeAdapter(list[wire.ItemStatus])
_CHUNK = 1 << 20
#: what a proxy in front of a restarting server answers
_AWAY = frozenset({502, 503, 504})
_FIRST_RETRY_S = 0.05
_LAST_RETRY_S = 2.0


class Client:
    """Talks to one loom server with one API key (or an attempt's runtime credential).

    The underlying connection pool belongs to the event loop that first uses the client; use
    one client per loop. :meth:`with_key` gives a client with another key over the same
    connections (a warm worker's attempts each use their own credential).
    """

    def __init__(
        self,
        endpoint: str,
        api_key: str | None,
        *,
        timeout: float = 60.0,
        patience_s: float | None = None,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self._api_key = api_key
        self._timeout = timeout
        #: how long a request keeps trying while the server is away (restarting): an action
        #: process's client waits for it, a person's fails at once (``None``)
        self.patience_s = patience_s
        self._http: httpx.AsyncClient | None = None
        self._parent: Client | None = None
        self._transport: httpx.AsyncHTTPTransport | None = None

    @property
    def api_key(self) -> str | None:
        """The key (or credential) this client sends."""
        return self._api_key

    def with_key(self, api_key: str | None) -> Client:
        """A client that sends ``api_key`` instead, sharing this one's connections (closing
        it closes nothing; close this one when done with both)."""
        if api_key == self._api_key:
            return self
        other = Client(self.endpoint, api_key, timeout=self._timeout, patience_s=self.patience_s)
        other._parent = self._parent or self
        return other

    def _shared_transport(self) -> httpx.AsyncHTTPTransport:
        if self._transport is None:
            self._transport = httpx.AsyncHTTPTransport(
                verify=_tls_context() if self.endpoint.startswith("https:") else _no_tls(),
                limits=httpx.Limits(max_connections=50, max_keepalive_connections=20),
            )
        return self._transport

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
            root = self._parent or self
            self._http = httpx.AsyncClient(
                base_url=self.endpoint + wire.API_PREFIX,
                headers=headers,
                transport=root._shared_transport(),
                timeout=self._timeout,
                event_hooks={"request": [_add_auth_metadata]},
            )
        return self._http

    async def aclose(self) -> None:
        if self._parent is not None:  # the connections are the parent's
            self._http = None
            return
        if self._http is not None:
            await self._http.aclose()  # (closes the shared transport too)
            self._http = None
        elif self._transport is not None:
            await self._transport.aclose()
        self._transport = None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- plumbing -----------------------------------------------------------------------------

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request; with :attr:`patience_s`, tried again while the server is away.

        Every request an action process makes may be repeated: creating children is
        idempotent by name, reports of an attempt the server already ended get 409 (which
        the runtime takes as delivered), and the rest only read."""
        replayable = isinstance(kwargs.get("content"), bytes | str | None)
        deadline = None if self.patience_s is None else time.monotonic() + self.patience_s
        delay = _FIRST_RETRY_S
        while True:
            try:
                response = await self._client().request(method, path, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:
                error: ApiError = ServerUnreachableError(
                    f"cannot reach the server at {self.endpoint} — start it with "
                    "`loom server start`"
                )
                error.__cause__ = e
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as e:
                # the server went away in the middle of it
                error = ApiError(f"request to {self.endpoint}{path} failed: {e}")
                error.__cause__ = e
            except httpx.HTTPError as e:
                raise ApiError(f"request to {self.endpoint}{path} failed: {e}") from e
            else:
                if response.status_code not in _AWAY or deadline is None:
                    if response.status_code >= 400:
                        raise _error_for(response)
                    return response
                error = _error_for(response)
            if deadline is None or not replayable or time.monotonic() + delay > deadline:
                raise error
            await asyncio.sleep(delay)
            delay = min(delay * 2, _LAST_RETRY_S)

    async def _get(self, path: str, model: type[M], **params: Any) -> M:
        response = await self._request("GET", path, params=_clean(params))
        return model.model_validate_json(response.content)

    async def _list(self, path: str, model: type[M], **params: Any) -> list[M]:
        response = await self._request("GET", path, params=_clean(params))
        return TypeAdapter(list[model]).validate_json(response.content)  # type: ignore[valid-type]

    async def _post(self, path: str, body: BaseModel | None, model: type[M]) -> M:
        data = None if body is None else body.model_dump_json()
        response = await self._request(
            "POST", path, content=data, headers={"Content-Type": "application/json"}
        )
        return model.model_validate_json(response.content)

    # -- server and keys ----------------------------------------------------------------------

    async def health(self) -> wire.Health:
        return await self._get("/health", wire.Health)

    async def whoami(self) -> wire.ApiKeyInfo:
        return await self._get("/whoami", wire.ApiKeyInfo)

    async def create_api_key(
        self, name: str, admin: bool = False, projects: dict[str, wire.Role] | None = None
    ) -> wire.ApiKeyCreated:
        """A new admin key, or one with a role in each of ``projects``."""
        spec = wire.ApiKeyCreate(name=name, admin=admin, projects=projects or {})
        return await self._post("/api-keys", spec, wire.ApiKeyCreated)

    async def list_api_keys(self) -> list[wire.ApiKeyInfo]:
        return await self._list("/api-keys", wire.ApiKeyInfo)

    async def delete_api_key(self, name: str) -> None:
        await self._request("DELETE", f"/api-keys/{name}")

    async def create_project(self, name: str, description: str = "") -> wire.ProjectInfo:
        return await self._post(
            "/projects", wire.ProjectCreate(name=name, description=description), wire.ProjectInfo
        )

    async def list_projects(self) -> list[wire.ProjectInfo]:
        return await self._list("/projects", wire.ProjectInfo)

    async def build_images(self, images: list[wire.ImageSpec]) -> list[wire.ImageInfo]:
        """Build these images' environments on the server now (it may take minutes)."""
        response = await self._request(
            "POST",
            "/images:build",
            content=wire.ImagesBuild(images=images).model_dump_json(),
            headers={"Content-Type": "application/json"},
            timeout=None,
        )
        return TypeAdapter(list[wire.ImageInfo]).validate_json(response.content)

    async def list_images(self) -> list[wire.ImageInfo]:
        return await self._list("/images", wire.ImageInfo)

    async def delete_image(self, key: str) -> None:
        await self._request("DELETE", f"/images/{key}")

    async def prune_images(self, unused_since: datetime) -> list[wire.ImageInfo]:
        """Delete the image environments no action has used since ``unused_since``."""
        response = await self._request(
            "DELETE", "/images", params={"unused_since": unused_since.isoformat()}
        )
        return TypeAdapter(list[wire.ImageInfo]).validate_json(response.content)

    async def create_secret(self, spec: wire.SecretCreate) -> wire.SecretInfo:
        return await self._post("/secrets", spec, wire.SecretInfo)

    async def list_secrets(
        self, project: str | None = None, domain: str | None = None
    ) -> list[wire.SecretInfo]:
        return await self._list("/secrets", wire.SecretInfo, project=project, domain=domain)

    async def delete_secret(
        self, key: str, project: str | None = None, domain: str | None = None
    ) -> None:
        await self._request(
            "DELETE", f"/secrets/{key}", params=_clean({"project": project, "domain": domain})
        )

    async def action_secrets(self, run: str, action: str) -> wire.SecretValues:
        """The values of a running action's secrets (for its runtime)."""
        return await self._get(f"/runs/{run}/actions/{action}/secrets", wire.SecretValues)

    # -- bundles ------------------------------------------------------------------------------

    async def has_bundle(self, digest: str) -> bool:
        try:
            await self._request("HEAD", f"/bundles/{digest}")
        except NotFoundError:
            return False
        return True

    async def upload_bundle(self, digest: str, data: bytes) -> wire.BundleInfo:
        response = await self._request(
            "PUT",
            f"/bundles/{digest}",
            content=data,
            headers={"Content-Type": "application/gzip"},
        )
        return wire.BundleInfo.model_validate_json(response.content)

    async def download_bundle(self, digest: str) -> bytes:
        return (await self._request("GET", f"/bundles/{digest}")).content

    # -- data (what File, Dir and DataFrame values refer to) ----------------------------------

    async def has_data(self, digest: str, project: str | None = None) -> bool:
        """Whether ``project`` (an attempt's: its own) has the data stored under ``digest``."""
        try:
            await self._request("HEAD", f"/data/{digest}", params=_clean({"project": project}))
        except NotFoundError:
            return False
        return True

    async def upload_data(
        self, digest: str, source: bytes | Path, project: str | None = None
    ) -> wire.DataInfo:
        """Store ``source`` (bytes, or a file streamed from disk) under its sha256 ``digest``,
        for ``project`` (default: the server's ``default``; an attempt's: its own)."""
        # a file is streamed, without a Content-Length: the server enforces its data limit
        # while it reads, and the limit on JSON bodies it checks up front is not this one
        content = source if isinstance(source, bytes) else _file_chunks(source)
        response = await self._request(
            "PUT",
            f"/data/{digest}",
            params=_clean({"project": project}),
            content=content,
            headers={"Content-Type": "application/octet-stream"},
            timeout=httpx.Timeout(self._timeout, write=None, read=None),
        )
        return wire.DataInfo.model_validate_json(response.content)

    async def download_data(self, digest: str, target: Path) -> int:
        """Stream the data stored under ``digest`` into the file ``target`` and return its
        size; :class:`ApiError` if what arrived does not have that digest."""
        sha = hashlib.sha256()
        size = 0
        try:
            async with self._client().stream(
                "GET", f"/data/{digest}", timeout=httpx.Timeout(self._timeout, read=None)
            ) as r:
                if r.status_code >= 400:
                    await r.aread()
                    raise _error_for(r)
                with target.open("wb") as f:
                    async for chunk in r.aiter_bytes(_CHUNK):
                        sha.update(chunk)
                        size += len(chunk)
                        f.write(chunk)
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
            raise ServerUnreachableError(
                f"cannot reach the server at {self.endpoint} — start it with `loom server start`"
            ) from e
        except httpx.HTTPError as e:
            raise ApiError(f"download of data {digest} from {self.endpoint} failed: {e}") from e
        if sha.hexdigest() != digest.removeprefix("sha256:"):
            raise ApiError(
                f"data {digest} from {self.endpoint} arrived with SHA-256 {sha.hexdigest()}: "
                "it is corrupt in the server's object store, or was cut off on the way"
            )
        return size

    # -- runs and actions ---------------------------------------------------------------------

    async def create_run(self, body: wire.RunCreate) -> wire.RunInfo:
        return await self._post("/runs", body, wire.RunInfo)

    async def list_runs(self, **filters: Any) -> list[wire.RunInfo]:
        return await self._list("/runs", wire.RunInfo, **filters)

    async def get_run(self, run: str) -> wire.RunInfo:
        return await self._get(f"/runs/{run}", wire.RunInfo)

    async def abort_run(self, run: str) -> wire.RunInfo:
        return await self._post(f"/runs/{run}/abort", None, wire.RunInfo)

    async def list_actions(self, run: str) -> list[wire.ActionInfo]:
        return await self._list(f"/runs/{run}/actions", wire.ActionInfo)

    async def create_action(self, run: str, body: wire.ActionCreate) -> wire.ActionInfo:
        return await self._post(f"/runs/{run}/actions", body, wire.ActionInfo)

    async def get_action(self, run: str, action: str) -> wire.ActionInfo:
        return await self._get(f"/runs/{run}/actions/{action}", wire.ActionInfo)

    async def get_spec(self, run: str, action: str) -> wire.ActionSpec:
        return await self._get(f"/runs/{run}/actions/{action}/spec", wire.ActionSpec)

    async def get_outputs(self, run: str, action: str) -> wire.Outputs:
        return await self._get(f"/runs/{run}/actions/{action}/outputs", wire.Outputs)

    async def get_inputs(self, run: str, action: str) -> wire.ValueView:
        """The action's encoded inputs, in full (a viewer's read; the spec is the runtime's)."""
        return await self._get(f"/runs/{run}/actions/{action}/inputs", wire.ValueView)

    async def put_report(self, run: str, action: str, html: str) -> None:
        """Store the action's report (by its runtime; the last upload wins)."""
        await self._request(
            "PUT",
            f"/runs/{run}/actions/{action}/report",
            content=html.encode(),
            headers={"Content-Type": "text/html; charset=utf-8"},
        )

    async def get_report(self, run: str, action: str) -> str:
        """The action's report as HTML (``NotFoundError`` if it has none)."""
        response = await self._request("GET", f"/runs/{run}/actions/{action}/report")
        return response.text

    async def action_detail(self, run: str, action: str) -> wire.ActionDetail:
        """The action with its task, and its inputs and outputs unless they are large."""
        return await self._get(f"/views/runs/{run}/actions/{action}", wire.ActionDetail)

    async def run_page(self, *, offset: int = 0, limit: int = 100, **filters: Any) -> wire.RunPage:
        """One page of the runs the caller may see, newest first (``project``, ``domain``,
        ``phase``, ``task`` filter them)."""
        return await self._get("/views/runs", wire.RunPage, offset=offset, limit=limit, **filters)

    async def wait_action(self, run: str, action: str, timeout: float = 25.0) -> wire.ActionInfo:
        """The action once it is terminal (long-polls as long as it takes)."""
        while True:
            info = await self._get(
                f"/runs/{run}/actions/{action}/wait", wire.ActionInfo, timeout=timeout
            )
            if info.phase in wire.TERMINAL_PHASES:
                return info

    async def create_actions(
        self, run: str, bodies: Sequence[wire.ActionCreate]
    ) -> list[wire.ActionCreated]:
        """Create many child actions in one request (idempotent per name); one answer per
        body, in order: the action, or why it was refused (see :func:`item_error`)."""
        content = b"[" + b",".join(b.model_dump_json().encode() for b in bodies) + b"]"
        response = await self._request(
            "POST",
            f"/runs/{run}/actions:batch",
            content=content,
            headers={"Content-Type": "application/json"},
        )
        return _CREATED.validate_json(response.content)

    async def wait_actions(
        self, run: str, names: Sequence[str], timeout: float = 25.0, after: int | None = None
    ) -> wire.ActionsWaited:
        """One long-poll: those of ``names`` that have ended, as soon as one has, or none
        after ``timeout`` s; and the ``seq`` to pass as ``after`` next time (for names it did
        not report ended). SUCCEEDED ones carry their outputs unless too large for the
        response (``outputs`` is ``None`` then: use :meth:`get_outputs`)."""
        body = wire.ActionsWait(names=list(names), timeout=timeout, after=after)
        response = await self._request(
            "POST",
            f"/runs/{run}/actions:wait",
            content=body.model_dump_json(),
            headers={"Content-Type": "application/json"},
            timeout=max(self._timeout, timeout + 30),
        )
        return wire.ActionsWaited.model_validate_json(response.content)

    async def heartbeats(self, refs: Sequence[wire.AttemptRef]) -> list[wire.ItemStatus]:
        """Heartbeats of many attempts in one request; one status per attempt, in order.
        Each carries its own credential where this client has no key of its own."""
        content = b"[" + b",".join(r.model_dump_json().encode() for r in refs) + b"]"
        response = await self._request(
            "POST",
            "/attempts:heartbeat",
            content=content,
            headers=self._batch_headers(refs[0].credential if refs else None),
        )
        return _STATUSES.validate_json(response.content)

    async def finish_attempts(self, reports: Sequence[wire.AttemptReport]) -> list[wire.ItemStatus]:
        """Report many attempts' results in one request; one status per report, in order
        (200, or what ``.../finished`` would have answered, e.g. 409)."""
        return await self.finish_attempts_json(
            [r.model_dump_json().encode() for r in reports],
            reports[0].credential if reports else None,
        )

    async def finish_attempts_json(
        self, reports: Sequence[bytes], credential: str | None = None
    ) -> list[wire.ItemStatus]:
        """:meth:`finish_attempts` with each ``wire.AttemptReport`` serialised already (a
        caller that sizes its batches has done it); ``credential``: the bearer to send when
        this client has no key (a warm worker's: one of the reports' own)."""
        response = await self._request(
            "POST",
            "/attempts:finish",
            content=b"[" + b",".join(reports) + b"]",
            headers=self._batch_headers(credential),
        )
        return _STATUSES.validate_json(response.content)

    def _batch_headers(self, credential: str | None) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if not self._api_key and credential:
            headers["Authorization"] = f"Bearer {credential}"
        return headers

    async def attempt_started(self, run: str, action: str, attempt: int) -> wire.ActionInfo:
        return await self._post(
            f"/runs/{run}/actions/{action}/attempts/{attempt}/started", None, wire.ActionInfo
        )

    async def heartbeat(self, run: str, action: str, attempt: int) -> None:
        await self._request("POST", f"/runs/{run}/actions/{action}/attempts/{attempt}/heartbeat")

    async def attempt_finished(
        self, run: str, action: str, attempt: int, result: wire.AttemptResult
    ) -> wire.ActionInfo:
        return await self._post(
            f"/runs/{run}/actions/{action}/attempts/{attempt}/finished", result, wire.ActionInfo
        )

    def _checkpoint_path(self, run: str, action: str, attempt: int) -> str:
        return f"/runs/{run}/actions/{action}/attempts/{attempt}/checkpoint"

    async def put_checkpoint(
        self,
        run: str,
        action: str,
        attempt: int,
        kind: wire.CheckpointKind,
        source: bytes | Path,
    ) -> wire.CheckpointInfo:
        """Store ``source`` (bytes, or a file streamed from disk) as the attempt's checkpoint
        (by its runtime; it replaces the attempt's earlier one)."""
        content = source if isinstance(source, bytes) else _file_chunks(source)
        response = await self._request(
            "PUT",
            self._checkpoint_path(run, action, attempt),
            params={"kind": kind.value},
            content=content,
            headers={"Content-Type": "application/octet-stream"},
            timeout=httpx.Timeout(self._timeout, write=None, read=None),
        )
        return wire.CheckpointInfo.model_validate_json(response.content)

    async def checkpoint_info(
        self, run: str, action: str, attempt: int
    ) -> wire.CheckpointInfo | None:
        """The checkpoint ``attempt`` resumes from (the latest an earlier attempt saved), or
        ``None`` if there is none."""
        try:
            return await self._get(
                self._checkpoint_path(run, action, attempt) + "/info", wire.CheckpointInfo
            )
        except NotFoundError:
            return None

    async def download_checkpoint(
        self, run: str, action: str, attempt: int, target: Path
    ) -> wire.CheckpointInfo | None:
        """Stream the checkpoint ``attempt`` resumes from into the file ``target``; ``None``
        (``target`` untouched) if there is none, :class:`ApiError` if it arrives corrupt."""
        sha = hashlib.sha256()
        path = self._checkpoint_path(run, action, attempt)
        try:
            async with self._client().stream(
                "GET", path, timeout=httpx.Timeout(self._timeout, read=None)
            ) as r:
                if r.status_code == 404:
                    return None
                if r.status_code >= 400:
                    await r.aread()
                    raise _error_for(r)
                info = wire.CheckpointInfo.model_validate_json(r.headers[wire.CHECKPOINT_HEADER])
                with target.open("wb") as f:
                    async for chunk in r.aiter_bytes(_CHUNK):
                        sha.update(chunk)
                        f.write(chunk)
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
            raise ServerUnreachableError(
                f"cannot reach the server at {self.endpoint} — start it with `loom server start`"
            ) from e
        except httpx.HTTPError as e:
            raise ApiError(f"download of the checkpoint {path} failed: {e}") from e
        if sha.hexdigest() != info.sha256:
            raise ApiError(
                f"the checkpoint {path} arrived with SHA-256 {sha.hexdigest()}, not "
                f"{info.sha256}: it was cut off on the way, or is corrupt in the object store"
            )
        return info

    async def abort_action(self, run: str, action: str) -> wire.ActionInfo:
        return await self._post(f"/runs/{run}/actions/{action}/abort", None, wire.ActionInfo)

    async def debug_action(
        self, run: str, action: str, kind: wire.SessionKind = "vscode"
    ) -> wire.RunInfo:
        """Re-run an action interactively: a new run of its bundle, task and inputs that opens
        a ``kind`` session, uncached; its root action is ``a0``."""
        response = await self._request(
            "POST", f"/runs/{run}/actions/{action}/debug", params={"kind": kind}
        )
        return wire.RunInfo.model_validate_json(response.content)

    # -- interactive sessions -----------------------------------------------------------------

    def _session_path(self, run: str, action: str, rest: str = "") -> str:
        return f"/runs/{run}/actions/{action}/session{rest}"

    async def register_session(
        self, run: str, action: str, body: wire.SessionRegister
    ) -> wire.SessionInfo:
        return await self._post(self._session_path(run, action), body, wire.SessionInfo)

    async def get_session(self, run: str, action: str) -> wire.SessionInfo:
        return await self._get(self._session_path(run, action), wire.SessionInfo)

    async def open_session(self, run: str, action: str) -> wire.SessionOpen:
        """A one-time link that signs a browser in to the action's session."""
        return await self._post(self._session_path(run, action, "/open"), None, wire.SessionOpen)

    async def session_command(
        self, run: str, action: str, timeout: float = 25.0
    ) -> wire.SessionCommand:
        """The next thing the session should do (long-polls up to ``timeout`` s)."""
        path = self._session_path(run, action, "/command")
        response = await self._request(
            "GET", path, params={"timeout": timeout}, timeout=timeout + 10
        )
        return wire.SessionCommand.model_validate_json(response.content)

    async def resume_session(
        self, run: str, action: str, fail: bool = False, timeout: float = 900.0
    ) -> wire.ResumeOutcome:
        """Ask the session's runtime to resume (or to give up) and wait for how it went."""
        path = self._session_path(run, action, "/resume")
        response = await self._request(
            "POST",
            path,
            content=wire.SessionResume(fail=fail).model_dump_json(),
            headers={"Content-Type": "application/json"},
            timeout=timeout,
        )
        return wire.ResumeOutcome.model_validate_json(response.content)

    async def session_outcome(self, run: str, action: str, outcome: wire.ResumeOutcome) -> None:
        await self._request(
            "POST",
            self._session_path(run, action, "/outcome"),
            content=outcome.model_dump_json(),
            headers={"Content-Type": "application/json"},
        )

    async def session_ended(self, run: str, action: str, reason: str) -> wire.SessionInfo:
        return await self._post(
            self._session_path(run, action, "/ended"),
            wire.SessionEnded(reason=reason),
            wire.SessionInfo,
        )

    async def logs(
        self, run: str, action: str, attempt: int | None = None, follow: bool = False
    ) -> AsyncIterator[str]:
        """The action's log text, chunk by chunk; with ``follow`` until the attempt ends."""
        params = _clean({"attempt": attempt, "follow": "true" if follow else None})
        path = f"/runs/{run}/actions/{action}/logs"
        try:
            async with self._client().stream("GET", path, params=params, timeout=None) as r:
                if r.status_code >= 400:
                    await r.aread()
                    raise _error_for(r)
                async for chunk in r.aiter_text():
                    yield chunk
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
            raise ServerUnreachableError(
                f"cannot reach the server at {self.endpoint} — start it with `loom server start`"
            ) from e

    async def events(
        self, run: str | None = None, after: int | None = None
    ) -> AsyncIterator[wire.Event]:
        """Phase changes as the server sends them (server-sent events): a run's from its
        first, or from after event ``after``."""
        params = _clean({"run": run, "after": after})
        try:
            async with self._client().stream("GET", "/events", params=params, timeout=None) as r:
                if r.status_code >= 400:
                    await r.aread()
                    raise _error_for(r)
                async for line in r.aiter_lines():
                    if line.startswith("data:"):
                        yield wire.Event.model_validate_json(line[5:].strip())
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
            raise ServerUnreachableError(
                f"cannot reach the server at {self.endpoint} — start it with `loom server start`"
            ) from e
        except httpx.HTTPError as e:
            raise ApiError(f"the event stream from {self.endpoint} broke: {e}") from e


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """Built once per process: loading the CA bundle costs ~0.1 s, which every new client
    would otherwise pay again (plain-HTTP endpoints on loopback need no TLS at all)."""
    return ssl.create_default_context()


@functools.cache
def _no_tls() -> ssl.SSLContext:
    """What a plain-HTTP client's transport holds (httpx makes one, unused, for every
    transport otherwise: ~30 ms each in a freshly forked action process)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def warm_up() -> None:
    """Build what every client of this process shares, now: a fork server does it once for
    all the processes it forks."""
    _no_tls()


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            yield chunk


def _clean(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


def item_error(error: wire.ItemError) -> ApiError:
    """The exception for one refused item of a batch: the one its own request would raise."""
    return _status_error(error.status, error.detail)


def _error_for(response: httpx.Response) -> ApiError:
    try:
        detail = response.json().get("detail", response.text)
    except (json.JSONDecodeError, AttributeError):
        detail = response.text
    if not isinstance(detail, str):
        detail = json.dumps(detail)
    return _status_error(response.status_code, detail)


def _status_error(status: int, detail: str) -> ApiError:
    if status == 401:
        return AuthenticationError(f"the server refused the API key: {detail}", status)
    if status == 404:
        return NotFoundError(detail, status)
    if status == 413:
        return PayloadTooLargeError(detail, status)
    return ApiError(f"{detail} (HTTP {status})", status)


async def _add_auth_metadata(request: httpx.Request) -> None:
    """Headers of an enclosing ``loom.remote.auth_metadata`` block (never the credential's)."""
    for key, value in auth_metadata_pairs():
        if key.lower() != "authorization":
            request.headers[key] = value


# -- extra request metadata -----------------------------------------------------------------

_auth_metadata: ContextVar[tuple[tuple[str, str], ...]] = ContextVar(
    "loom_auth_metadata", default=()
)


@contextmanager
def auth_metadata(*pairs: tuple[str, str]) -> Iterator[None]:
    """Send ``(key, value)`` pairs as extra headers with the requests made in the block (Flyte
    2's ``flyte.remote.auth_metadata``, for a proxy in front of the server); blocks nest.
    ``Authorization`` cannot be replaced this way."""
    for pair in pairs:
        if not (
            isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(p, str) for p in pair)
        ):
            raise TypeError(f"auth_metadata takes (key, value) pairs of str, got {pair!r}")
    token = _auth_metadata.set((*_auth_metadata.get(), *pairs))
    try:
        yield
    finally:
        _auth_metadata.reset(token)


def auth_metadata_pairs() -> tuple[tuple[str, str], ...]:
    """The pairs of the enclosing :func:`auth_metadata` blocks."""
    return _auth_metadata.get()
