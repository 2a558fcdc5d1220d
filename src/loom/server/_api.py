"""The HTTP API under ``/api/v1`` (the endpoint table is in :mod:`loom.wire`).

Routes only translate between HTTP and the services; they return wire models, never rows.
Handlers that touch the database are plain functions (FastAPI runs them in worker threads);
long-polls and streams are coroutines that wait on the event bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import os
import tempfile
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

from anyio import to_thread
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import TypeAdapter

from .. import wire
from .._version import __version__
from ..wire import Phase
from . import _sessions as sessions
from ._auth import check_origin, login_response, logout_response
from ._authz import (
    ActionMember,
    ActionRuntime,
    ActionSecrets,
    Admin,
    Any_,
    AttemptRuntime,
    BatchSender,
    BundleReader,
    DataProject,
    DataReader,
    ItemRuntime,
    MemberSomewhere,
    Plane,
    RunMember,
    RunRuntime,
    RunViewer,
    SignedIn,
    check_project_member,
    check_view,
    item_allowed,
    listing_scope,
    principal,
    visible_projects,
)
from ._authz import public as public_policy
from ._data import normalize_data_digest
from ._errors import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ServerError,
    UnprocessableError,
)
from ._plane import ControlPlane
from ._proxy import ENTER
from ._session_access import TICKET_TTL_S

#: An attempt's number in a path: a 32-bit column.
AttemptNumber = Annotated[int, PathParam(ge=1, le=wire.MAX_NUMBER)]
_MAX_WAIT_S = 30.0
_KEEPALIVE_S = 15.0
_STREAM_PACE_S = 0.2
_EVENTS_PER_READ = 500
_LOG_POLL_S = 0.2
_LOG_GRACE_S = 3.0
public = APIRouter(prefix=wire.API_PREFIX, dependencies=[Depends(public_policy)])
router = APIRouter(prefix=wire.API_PREFIX, dependencies=[Depends(principal)])
# Runtimes' batches authenticate by themselves: their bearer may name an attempt that has
# just ended (see ``_authz.item_runtime``).
runtime_batches = APIRouter(prefix=wire.API_PREFIX)


@public.get("/health")
def health() -> wire.Health:
    """Liveness; the only endpoint without an API key."""
    return wire.Health(version=__version__)


@public.post("/login", status_code=204)
def login(body: wire.Login, request: Request, p: Plane) -> Response:
    """Trade an API key for the login cookie (HTTP-only, SameSite=Lax, 12 h) that browsers
    send to the API and the session proxy."""
    try:
        _, token = p.auth.login(body.api_key)
    except AuthenticationError:
        raise AuthenticationError("invalid API key: cannot log in") from None
    return login_response(request, token)


@public.post("/logout", status_code=204)
def logout(request: Request) -> Response:
    """Clear the login cookie (the key itself stays valid); from this server's pages only."""
    check_origin(request.headers)
    return logout_response(request)


@router.get("/openapi.json", include_in_schema=False)
def openapi(request: Request, _: SignedIn) -> dict[str, Any]:
    app: FastAPI = request.app
    return app.openapi()


@router.get("/whoami")
def whoami(caller: Any_) -> wire.ApiKeyInfo:
    return caller.info()


# -- API keys and projects ----------------------------------------------------------------


@router.post("/api-keys", status_code=201)
def create_api_key(spec: wire.ApiKeyCreate, p: Plane, _: Admin) -> wire.ApiKeyCreated:
    """Create a key; its secret is in this response only (the server keeps a hash)."""
    return p.keys.create(spec)


@router.get("/api-keys")
def list_api_keys(p: Plane, _: Admin) -> list[wire.ApiKeyInfo]:
    return p.keys.list()


@router.delete("/api-keys/{name}", status_code=204)
def delete_api_key(name: str, p: Plane, _: Admin) -> Response:
    p.keys.delete(name)
    return Response(status_code=204)


@router.post("/projects", status_code=201)
def create_project(spec: wire.ProjectCreate, p: Plane, _: Admin) -> wire.ProjectInfo:
    return p.projects.create(spec)


@router.get("/projects")
def list_projects(p: Plane, caller: SignedIn) -> list[wire.ProjectInfo]:
    """The projects the caller has a role in (all of them for an admin)."""
    visible = visible_projects(caller)
    return [i for i in p.projects.list() if visible is None or i.name in visible]


# -- secrets ------------------------------------------------------------------------------


@router.post("/secrets", status_code=201)
def create_secret(spec: wire.SecretCreate, p: Plane, _: Admin) -> wire.SecretInfo:
    """Store a secret (encrypted); its value is never shown by the API again."""
    return p.secrets.create(spec)


@router.get("/secrets")
def list_secrets(
    p: Plane, _: Admin, project: str | None = None, domain: str | None = None
) -> list[wire.SecretInfo]:
    return p.secrets.listing(project, domain)


@router.delete("/secrets/{key}", status_code=204)
def delete_secret(
    key: str, p: Plane, _: Admin, project: str | None = None, domain: str | None = None
) -> Response:
    p.secrets.delete(key, project, domain)
    return Response(status_code=204)


@router.get("/runs/{run}/actions/{action}/secrets")
def action_secrets(run: str, action: str, p: Plane, _: ActionSecrets) -> wire.SecretValues:
    """The values of the secrets a running action's task declares: for its runtime only."""
    keys, project, domain = p.runs.secret_scope(run, action)
    return p.secrets.resolve(keys, project, domain)


# -- bundles ------------------------------------------------------------------------------


@router.put("/bundles/{digest}")
async def put_bundle(
    digest: str, request: Request, p: Plane, _: MemberSomewhere
) -> wire.BundleInfo:
    """Upload a code bundle (the body is the .tar.gz); idempotent per digest."""
    limit = p.bundles.max_bytes
    too_big = (
        f"bundle is over the limit of {limit} bytes (LOOM_MAX_BUNDLE_BYTES); leave data files "
        "out of the source root"
    )
    async with _received(request, p, limit, too_big) as (path, size, sha):
        return await to_thread.run_sync(p.bundles.put, digest, path, size, sha)


@contextlib.asynccontextmanager
async def _received(
    request: Request, p: ControlPlane, limit: int, too_big: str
) -> AsyncIterator[tuple[Path, int, str]]:
    """The request's body in a temporary file (removed afterwards), its size and sha256,
    streamed to disk: 413 with ``too_big`` as soon as it passes ``limit`` bytes."""
    sha = hashlib.sha256()
    size = 0
    fd, name = tempfile.mkstemp(dir=p.tmp_dir, prefix="upload-")
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLargeError(too_big)
                sha.update(chunk)
                f.write(chunk)
        yield path, size, sha.hexdigest()
    finally:
        path.unlink(missing_ok=True)


@router.head("/bundles/{digest}")
def head_bundle(digest: str, p: Plane, _: MemberSomewhere) -> Response:
    """Whether the bundle is stored (so a client uploads each content once)."""
    info = p.bundles.info(digest)
    return Response(headers={"Content-Length": str(info.size)})


@router.get("/bundles/{digest}", response_class=Response)
def get_bundle(digest: str, p: Plane, _: BundleReader) -> Response:
    """A code bundle: for who may see a run of it."""
    local, chunks, size = p.bundles.source(digest)
    if local is not None:
        return FileResponse(local, media_type="application/gzip")
    assert chunks is not None
    return StreamingResponse(
        chunks, media_type="application/gzip", headers={"Content-Length": str(size)}
    )


# -- data ---------------------------------------------------------------------------------


@router.put("/data/{digest}")
async def put_data(digest: str, request: Request, p: Plane, project: DataProject) -> wire.DataInfo:
    """Upload the content of a ``File``, ``Dir`` (its .tar.gz) or ``DataFrame`` (Parquet)
    that a remote value refers to, for ``project`` (a runtime's: its run's), whose keys and
    runtimes may then read it; idempotent per digest, checked against the body."""
    normalize_data_digest(digest)  # a malformed digest is refused before the body is read
    limit = p.data.max_bytes
    too_big = (
        f"data is over the limit of {limit} bytes (LOOM_MAX_DATA_BYTES on the server); split "
        "it into several files, or raise the limit"
    )
    async with _received(request, p, limit, too_big) as (path, size, sha):
        info = await to_thread.run_sync(p.data.put, digest, path, size, sha)
    await to_thread.run_sync(p.data.grant, digest, project)
    return info


@router.head("/data/{digest}")
def head_data(digest: str, p: Plane, project: DataProject) -> Response:
    """Whether ``project`` has the data (404: upload it, even if another project has)."""
    if not p.data.readable(digest, frozenset({project})):
        raise NotFoundError(f"data {digest} not found in project {project!r}")
    size = p.data.size(digest)
    return Response(headers={} if size is None else {"Content-Length": str(size)})


@router.get("/data/{digest}", response_class=Response)
def get_data(digest: str, p: Plane, _: DataReader) -> Response:
    """Stored data, for a caller with a role in a project it was uploaded in."""
    local, chunks = p.data.source(digest)
    if local is not None:
        return FileResponse(local, media_type="application/octet-stream")
    assert chunks is not None
    return StreamingResponse(chunks, media_type="application/octet-stream")


# -- image environments -------------------------------------------------------------------
# Content-addressed and shared by every project: any member may build one (as running a task
# with that image would), and see which exist; only an admin reclaims their space.


@router.post("/images:build")
async def build_images(
    body: wire.ImagesBuild, p: Plane, _: MemberSomewhere
) -> list[wire.ImageInfo]:
    """Build these images' environments now, each once (an existing one is reused), and
    describe them; 422 with uv's message for one that cannot be built."""
    keys = []
    for spec in body.images:
        parts = wire.container_parts(spec)
        if parts:
            raise UnprocessableError(
                f"this image needs a container for {', '.join(parts)}; this server builds "
                "Python environments only (with_pip_packages, with_requirements)"
            )
        keys.append((await p.environments.ensure(spec)).key)
    built = {info.key: info for info in await to_thread.run_sync(p.environments.built)}
    return [built[key] for key in keys if key in built]


@router.get("/images")
def list_images(p: Plane, _: MemberSomewhere) -> list[wire.ImageInfo]:
    """The built image environments, newest first, with their size and last use."""
    return p.environments.built()


@router.delete("/images")
def prune_images(unused_since: datetime, p: Plane, _: Admin) -> list[wire.ImageInfo]:
    """Reclaim the space of every environment no action has used since ``unused_since``
    (an ISO time); the ones deleted."""
    if unused_since.tzinfo is None:
        raise BadRequestError("unused_since needs a time zone, as in 2026-01-31T12:00:00Z")
    return p.environments.prune(unused_since)


@router.delete("/images/{key}", status_code=204)
def delete_image(key: str, p: Plane, _: Admin) -> None:
    """Reclaim an environment's space (the next action that needs it builds it again)."""
    if not p.environments.delete(key):
        raise NotFoundError(f"no image environment {key!r}: `loom get image` lists them")


# -- runs and actions ---------------------------------------------------------------------


@router.post("/runs", status_code=201)
def create_run(spec: wire.RunCreate, p: Plane, caller: SignedIn) -> wire.RunInfo:
    """Create a run and its root action ``a0`` (``root.name`` is ignored); needs the member
    role in its project."""
    check_project_member(caller, spec.project, f"start runs in project {spec.project!r}")
    return p.runs.create_run(spec, created_by=caller.name)


@router.get("/runs")
def list_runs(
    p: Plane,
    caller: SignedIn,
    project: str | None = None,
    domain: str | None = None,
    phase: str | None = None,
    task: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[wire.RunInfo]:
    """Runs the caller may see, newest first, filtered by every parameter given."""
    visible = listing_scope(caller, project)
    return p.runs.list_runs(
        project=project, domain=domain, phase=phase, task=task, limit=limit, projects=visible
    )


@router.get("/runs/{run}")
def get_run(run: str, p: Plane, _: RunViewer) -> wire.RunInfo:
    return p.runs.get_run(run)


@router.post("/runs/{run}/abort")
def abort_run(run: str, p: Plane, caller: RunMember) -> wire.RunInfo:
    """Abort every action of the run that has not ended and kill its processes."""
    return p.runs.abort_run(run, by=caller.name)


@router.post("/runs/{run}/actions/{action}/abort")
def abort_action(run: str, action: str, p: Plane, caller: ActionMember) -> wire.ActionInfo:
    """Abort one action and its descendants, kill their processes and close their sessions."""
    return p.runs.abort_action(run, action, by=caller.name)


_ACTION_INFOS = TypeAdapter(list[wire.ActionInfo])


@router.get(
    "/runs/{run}/actions",
    response_model=list[wire.ActionInfo],
    response_class=Response,
)
def list_actions(run: str, p: Plane, _: RunViewer) -> Response:
    # serialised here once: FastAPI would validate every action again first
    return Response(
        _ACTION_INFOS.dump_json(p.runs.list_actions(run)), media_type="application/json"
    )


@router.post("/runs/{run}/actions")
def create_action(run: str, spec: wire.ActionCreate, p: Plane, _: RunRuntime) -> wire.ActionInfo:
    """Create a child action; an existing name returns that action unchanged."""
    return p.runs.create_action(run, spec)


_CREATED = TypeAdapter(list[wire.ActionCreated])
_STATUSES = TypeAdapter(list[wire.ItemStatus])


def _check_batch(items: list[Any]) -> None:
    if len(items) > wire.MAX_BATCH:
        raise BadRequestError(
            f"a batch has at most {wire.MAX_BATCH} items (wire.MAX_BATCH), not {len(items)}"
        )


@router.post(
    "/runs/{run}/actions:batch",
    response_model=list[wire.ActionCreated],
    response_class=Response,
)
def create_actions(run: str, specs: list[wire.ActionCreate], p: Plane, _: RunRuntime) -> Response:
    """Create child actions in one transaction, each as ``POST /runs/{run}/actions`` would
    (idempotent per name); one answer per item, in order, with the error of a refused one."""
    _check_batch(specs)
    items = [
        wire.ActionCreated(error=wire.ItemError(status=r.status_code, detail=str(r)))
        if isinstance(r, ServerError)
        else wire.ActionCreated(action=r)
        for r in p.runs.create_actions(run, specs)
    ]
    # serialised here once: FastAPI would validate the whole list again first
    return Response(_CREATED.dump_json(items), media_type="application/json")


@router.post(
    "/runs/{run}/actions:wait",
    response_model=wire.ActionsWaited,
    response_class=Response,
)
async def wait_actions(run: str, body: wire.ActionsWait, p: Plane, _: RunViewer) -> Response:
    """Those of ``names`` that have ended (SUCCEEDED ones with their outputs inline), as soon
    as one has, or none after ``timeout`` s (at most 30 s); and the ``seq`` to wait after."""
    names = list(dict.fromkeys(body.names))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(body.timeout, _MAX_WAIT_S)
    # one wake-up for all the names, and the names that changed: each round of the loop
    # costs what changed, not the thousand children watched
    wake: asyncio.Future[None] = loop.create_future()
    fired: list[str] = []
    # those that SUCCEEDED with their outputs at hand (the bus brought them): no query
    succeeded: dict[str, bytes] = {}
    watched: dict[str, asyncio.Future[bytes | None]] = {}

    def changed(name: str, future: asyncio.Future[bytes | None]) -> None:
        if not future.cancelled():
            outputs = future.result()
            if outputs is not None:
                succeeded[name] = outputs
            else:
                fired.append(name)
            if not wake.done():
                wake.set_result(None)

    def watch(name: str) -> None:
        future = watched[name] = p.bus.watch(run, name)
        future.add_done_callback(functools.partial(changed, name))

    for name in names:  # watched before reading, so no change slips between
        watch(name)
    # without ``after`` the first look checks every name; the next ones (and with ``after``
    # all of them) look at what ended since the last
    seq, check = body.after, True
    try:
        while True:
            data, seq = await to_thread.run_sync(
                functools.partial(p.runs.ended_json, run, names, after=seq, check=check)
            )
            check = False
            remaining = deadline - loop.time()
            if data is not None or remaining <= 0 or p.bus.stopping.is_set() or not names:
                return Response(
                    b'{"actions":' + (data or b"[]") + b',"seq":' + str(seq).encode() + b"}",
                    media_type="application/json",
                )
            stopping: asyncio.Future[Any] = asyncio.ensure_future(p.bus.stopping.wait())
            try:
                await asyncio.wait(
                    {stopping, wake}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                stopping.cancel()
            if wake.done():
                wake = loop.create_future()
            if succeeded:  # (``seq`` stays: the next wait looks at what ended since, again)
                return Response(
                    b'{"actions":'
                    + _succeeded_json(names, succeeded)
                    + b',"seq":'
                    + str(seq).encode()
                    + b"}",
                    media_type="application/json",
                )
            again, fired[:] = list(dict.fromkeys(fired)), []
            for name in again:  # changed (maybe not ended): watch again, then look
                p.bus.unwatch(run, name, watched[name])
                watch(name)
    finally:
        for name, future in watched.items():
            p.bus.unwatch(run, name, future)


def _succeeded_json(names: list[str], outputs: dict[str, bytes]) -> bytes:
    """The ``list[wire.ActionOutcome]`` of actions that SUCCEEDED, in the order of ``names``,
    with their outputs inline up to ``wire.MAX_INLINE_OUTPUTS`` bytes in all (the client
    fetches the others' on their own)."""
    parts = []
    budget = wire.MAX_INLINE_OUTPUTS
    for name in names:
        value = outputs.get(name)
        if value is None:
            continue
        head = json.dumps({"name": name, "phase": Phase.SUCCEEDED.value, "error": None})[
            :-1
        ].encode()
        if len(value) > budget:
            parts.append(head + b',"outputs":null}')
        else:
            budget -= len(value)
            parts.append(head + b',"outputs":{"value":' + value + b"}}")
    return b"[" + b",".join(parts) + b"]"


@runtime_batches.post(
    "/attempts:heartbeat",
    response_model=list[wire.ItemStatus],
    response_class=Response,
)
def attempts_heartbeat(refs: list[wire.AttemptRef], p: Plane, caller: ItemRuntime) -> Response:
    """Heartbeats of many attempts (a warm worker's), in one transaction; each is answered
    as ``.../attempts/{n}/heartbeat`` would (409 for an attempt that is stale or over, 403
    for one the caller does not hold the credential of)."""
    _check_batch(refs)
    statuses = _for_own_items(p, caller, refs, p.runs.attempts_heartbeat)
    return Response(_STATUSES.dump_json(statuses), media_type="application/json")


_NOT_YOURS = wire.ItemStatus(
    status=403, detail="this item's attempt is not the caller's: send its own credential"
)
_Item = TypeVar("_Item", wire.AttemptRef, wire.AttemptReport)


def _for_own_items(
    p: ControlPlane,
    caller: BatchSender,
    items: list[_Item],
    handle: Callable[[list[_Item]], list[wire.ItemStatus]],
) -> list[wire.ItemStatus]:
    """``handle`` the items of a runtime's batch that are the caller's (see ``item_allowed``)
    and answer them, in order, with 403 for the others."""
    allowed = [item_allowed(p, caller, i.run, i.action, i.attempt, i.credential) for i in items]
    answers = iter(handle([i for i, ok in zip(items, allowed, strict=True) if ok]))
    return [next(answers) if ok else _NOT_YOURS for ok in allowed]


@runtime_batches.post(
    "/attempts:finish",
    response_model=list[wire.ItemStatus],
    response_class=Response,
)
def finish_attempts(reports: list[wire.AttemptReport], p: Plane, caller: ItemRuntime) -> Response:
    """Runtimes' results for many attempts, in one transaction: each item is taken as
    ``.../attempts/{n}/finished`` would take it, and answered with that status (409 for an
    attempt that is stale or that the server already ended)."""
    _check_batch(reports)
    statuses = _for_own_items(p, caller, reports, p.runs.finish_attempts)
    return Response(_STATUSES.dump_json(statuses), media_type="application/json")


@router.get("/runs/{run}/actions/{action}")
def get_action(run: str, action: str, p: Plane, _: RunViewer) -> wire.ActionInfo:
    return p.runs.get_action(run, action)


@router.get("/runs/{run}/actions/{action}/spec")
def get_spec(run: str, action: str, p: Plane, _: ActionRuntime) -> wire.ActionSpec:
    """What the runtime needs to run the current attempt."""
    return p.runs.get_spec(run, action)


@router.get(
    "/runs/{run}/actions/{action}/outputs",
    response_model=wire.Outputs,
    response_class=Response,
)
def get_outputs(run: str, action: str, p: Plane, _: RunViewer) -> Response:
    """The outputs of a SUCCEEDED action (409 before)."""
    return Response(p.runs.outputs_json(run, action), media_type="application/json")


@router.get("/runs/{run}/actions/{action}/inputs")
def get_inputs(run: str, action: str, p: Plane, _: RunViewer) -> wire.ValueView:
    """The action's inputs as encoded (the type engine's JSON), in full: for a viewer, to
    whom the spec (the runtime's) is not shown, and whose view of the action leaves out
    inputs larger than ``wire.VIEW_VALUE_BYTES``."""
    inputs = p.runs.get_spec(run, action).inputs
    size = len(json.dumps(inputs, separators=(",", ":")).encode())
    return wire.ValueView(value=inputs, size=size)


def _report_key(run: str, action: str) -> str:
    # hashed: run and action names need not be object-key-safe
    return "reports/" + hashlib.sha256(f"{run}\0{action}".encode()).hexdigest()


#: Reports are untrusted HTML: a unique origin, scripts allowed (reports draw with them), no
#: access to the UI's cookies or API, not framed anywhere but by the UI.
_REPORT_HEADERS = {
    "Content-Security-Policy": "sandbox allow-scripts allow-popups; frame-ancestors 'self'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


@router.put("/runs/{run}/actions/{action}/report", status_code=204)
async def put_report(
    run: str, action: str, request: Request, p: Plane, _: ActionRuntime
) -> Response:
    """The action's report (HTML, the body) as its task has flushed it so far; the last
    upload wins. For the action's runtime only."""
    too_big = f"report is over the limit of {wire.MAX_REPORT_BYTES} bytes"
    async with _received(request, p, wire.MAX_REPORT_BYTES, too_big) as (path, _size, _sha):
        await to_thread.run_sync(
            functools.partial(p.store.put_file, _report_key(run, action), path, move=True)
        )
    return Response(status_code=204)


@router.get(
    "/runs/{run}/actions/{action}/report",
    response_class=Response,
    responses={200: {"content": {"text/html": {}}}},
)
def get_report(run: str, action: str, p: Plane, _: RunViewer) -> Response:
    """The action's report (404 until its task flushes one), served sandboxed."""
    key = _report_key(run, action)
    if not p.store.exists(key):
        raise NotFoundError(f"action {action} of run {run} has no report")
    return Response(
        p.store.get_bytes(key), media_type="text/html; charset=utf-8", headers=_REPORT_HEADERS
    )


@router.get("/runs/{run}/actions/{action}/wait")
async def wait_action(
    run: str,
    action: str,
    p: Plane,
    _: RunViewer,
    timeout: Annotated[float, Query(ge=0)] = _MAX_WAIT_S,
) -> wire.ActionInfo:
    """The action once it has ended, or as it is after ``timeout`` s (at most 30 s)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(timeout, _MAX_WAIT_S)
    while True:
        changed = p.bus.watch(run, action)  # before reading, so no change slips between
        try:
            info = await to_thread.run_sync(p.runs.get_action, run, action)
            remaining = deadline - loop.time()
            if info.phase in wire.TERMINAL_PHASES or remaining <= 0 or p.bus.stopping.is_set():
                return info
            stopping: asyncio.Future[Any] = asyncio.ensure_future(p.bus.stopping.wait())
            try:
                await asyncio.wait(
                    {changed, stopping}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                stopping.cancel()
        finally:
            p.bus.unwatch(run, action, changed)


@router.post("/runs/{run}/actions/{action}/attempts/{n}/started")
def attempt_started(
    run: str, action: str, n: AttemptNumber, p: Plane, _: AttemptRuntime
) -> wire.ActionInfo:
    """The runtime of attempt ``n`` is up (409 if that attempt is stale or over)."""
    return p.runs.attempt_started(run, action, n)


@router.post("/runs/{run}/actions/{action}/attempts/{n}/heartbeat", status_code=204)
def attempt_heartbeat(
    run: str, action: str, n: AttemptNumber, p: Plane, _: AttemptRuntime
) -> Response:
    p.runs.attempt_heartbeat(run, action, n)
    return Response(status_code=204)


@router.post("/runs/{run}/actions/{action}/attempts/{n}/finished")
def attempt_finished(
    run: str, action: str, n: AttemptNumber, result: wire.AttemptResult, p: Plane, _: AttemptRuntime
) -> wire.ActionInfo:
    """The runtime's result for attempt ``n``. A repeat of an accepted report is ignored;
    a report for a stale attempt, or one the server already ended, gets 409."""
    return p.runs.attempt_finished(run, action, n, result)


@router.put("/runs/{run}/actions/{action}/attempts/{n}/checkpoint")
async def put_checkpoint(
    run: str,
    action: str,
    n: AttemptNumber,
    request: Request,
    p: Plane,
    _: AttemptRuntime,
    kind: wire.CheckpointKind = wire.CheckpointKind.FILE,
) -> wire.CheckpointInfo:
    """Attempt ``n``'s checkpoint (the body), for the next attempt of the action to resume
    from; it replaces the attempt's earlier one. For that attempt's runtime only."""
    limit = p.checkpoints.max_bytes
    too_big = (
        f"checkpoint is over the limit of {limit} bytes (LOOM_MAX_DATA_BYTES on the server, "
        f"at most {wire.MAX_CHECKPOINT_BYTES}); save only the state needed to resume"
    )
    async with _received(request, p, limit, too_big) as (path, size, sha):
        return await to_thread.run_sync(p.checkpoints.save, run, action, n, kind, path, size, sha)


@router.get("/runs/{run}/actions/{action}/attempts/{n}/checkpoint/info")
def checkpoint_info(
    run: str, action: str, n: AttemptNumber, p: Plane, _: AttemptRuntime
) -> wire.CheckpointInfo:
    """The checkpoint attempt ``n`` resumes from, without its bytes (404 if there is none).
    For that attempt's runtime."""
    info, _key = p.checkpoints.latest_before(run, action, n)
    return info


@router.get(
    "/runs/{run}/actions/{action}/attempts/{n}/checkpoint",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def get_checkpoint(
    run: str, action: str, n: AttemptNumber, p: Plane, _: AttemptRuntime
) -> Response:
    """The checkpoint attempt ``n`` resumes from: the latest an earlier attempt of the action
    saved (404 if none), described by the ``CHECKPOINT_HEADER``. For that attempt's runtime."""
    info, key = p.checkpoints.latest_before(run, action, n)
    headers = {wire.CHECKPOINT_HEADER: info.model_dump_json()}
    local, chunks = p.checkpoints.source(key)
    if local is not None:
        return FileResponse(local, media_type="application/octet-stream", headers=headers)
    assert chunks is not None
    return StreamingResponse(chunks, media_type="application/octet-stream", headers=headers)


@router.get(
    "/runs/{run}/actions/{action}/logs",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/plain": {}}}},
)
async def get_logs(
    run: str,
    action: str,
    p: Plane,
    _: RunViewer,
    attempt: Annotated[int | None, Query(ge=1, le=wire.MAX_NUMBER)] = None,
    follow: bool = False,
) -> StreamingResponse:
    """An attempt's output (default: the latest attempt); ``follow`` streams it until the
    attempt ends."""
    source = await to_thread.run_sync(p.runs.log_source, run, action, attempt)
    return StreamingResponse(
        _log_chunks(p, run, action, source.attempt, follow),
        media_type="text/plain; charset=utf-8",
    )


async def _log_chunks(
    p: ControlPlane, run: str, action: str, number: int, follow: bool
) -> AsyncIterator[bytes]:
    offset = 0
    missing_since: float | None = None
    kept = False
    loop = asyncio.get_running_loop()
    while True:
        if number == 0:  # no attempt yet: wait for the first, unless the action ended
            source = await to_thread.run_sync(p.runs.log_source, run, action, None)
            if source.attempt == 0:
                if source.ended or not follow or p.bus.stopping.is_set():
                    return
                await asyncio.sleep(_LOG_POLL_S)
                continue
            number = source.attempt
        source = await to_thread.run_sync(p.runs.log_source, run, action, number)
        if source.log_key is not None:  # over and stored: the rest comes from the store
            chunks = await to_thread.run_sync(_read_stored, p, source.log_key, offset)
            for chunk in chunks:
                yield chunk
            return
        path = p.live_log(run, action, number)
        data = await to_thread.run_sync(_read_from, path, offset)
        if data:
            offset += len(data)
            yield data
            continue
        if p.bus.stopping.is_set():
            return
        if source.ended and not path.exists():
            if p.log_kept(run, action, number):
                if kept:
                    return  # its process exited without a log: it printed nothing
                kept = True
                continue  # look once more: the log may have been stored since
            # the log is on its way to the object store (moved, its key not yet recorded), or
            # there never was one (the process did not start): give the former a moment, then
            # stop; with or without follow, or a reader in that moment would get nothing
            missing_since = missing_since or loop.time()
            if loop.time() - missing_since > _LOG_GRACE_S:
                return
        elif not follow:
            return
        await asyncio.sleep(_LOG_POLL_S)


def _read_stored(p: ControlPlane, key: str, offset: int) -> list[bytes]:
    return list(p.store.iter_bytes(key, offset))


def _read_from(path: Path, offset: int, limit: int = 1 << 20) -> bytes:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read(limit)
    except FileNotFoundError:
        return b""


# -- events -------------------------------------------------------------------------------


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def events(
    p: Plane,
    caller: Any_,
    run: str | None = None,
    after: Annotated[int | None, Query(ge=0, le=wire.MAX_SEQ)] = None,
    last_event_id: Annotated[str | None, Header(max_length=19)] = None,
) -> StreamingResponse:
    """Server-sent events, one ``wire.Event`` per ``data:`` line, ``id:`` = its ``seq``.

    Resumes after ``after`` (or the ``Last-Event-ID`` header); without either, a ``run``
    stream starts at that run's first event and an unfiltered one at the next new event.
    """
    visible = visible_projects(caller)
    if run is not None:
        await to_thread.run_sync(check_view, p, caller, run)
    elif caller.attempt is not None:
        run = caller.attempt.run  # a runtime follows its own run only
    start = after
    if start is None and last_event_id and last_event_id.isdigit():
        start = min(int(last_event_id), wire.MAX_SEQ)
    if start is None:
        start = 0 if run is not None else await to_thread.run_sync(p.runs.last_event_seq)
    return StreamingResponse(
        _event_stream(p, run, start, visible),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _event_stream(
    p: ControlPlane, run: str | None, seq: int, projects: frozenset[str] | None
) -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    last_sent = loop.time()
    while not p.bus.stopping.is_set():
        changed = p.bus.next_change()  # before reading, so no change slips between
        batch = await to_thread.run_sync(p.runs.events_after, seq, run, _EVENTS_PER_READ, projects)
        if batch:
            seq = batch[-1].seq
            # one write for the batch: a busy run's stream is thousands of events
            yield "".join(f"id: {e.seq}\ndata: {e.model_dump_json()}\n\n" for e in batch)
            last_sent = loop.time()
        elif loop.time() - last_sent >= _KEEPALIVE_S:
            # by the time since the last byte: a filtered stream wakes for every other run's
            # change and may find nothing of its own for a long time
            yield ": keep-alive\n\n"
            last_sent = loop.time()
        if len(batch) == _EVENTS_PER_READ:
            continue  # catching up
        if changed.is_set():
            # up to date, and more has happened: let it gather for a moment, rather than
            # reading it one commit at a time (which costs the server more than the run)
            await asyncio.sleep(_STREAM_PACE_S)
            continue
        stopping = asyncio.ensure_future(p.bus.stopping.wait())
        waiter = asyncio.ensure_future(changed.wait())
        try:
            await asyncio.wait(
                {waiter, stopping},
                timeout=max(0.0, _KEEPALIVE_S - (loop.time() - last_sent)),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            stopping.cancel()
            waiter.cancel()


# -- interactive sessions -----------------------------------------------------------------


@router.post("/runs/{run}/actions/{action}/session")
def register_session(
    run: str, action: str, spec: wire.SessionRegister, p: Plane, caller: ActionRuntime
) -> wire.SessionInfo:
    """The runtime started an IDE for the current attempt: the action goes INTERACTIVE."""
    if caller.attempt is not None and caller.attempt.attempt != spec.attempt:
        raise PermissionDeniedError(
            f"a runtime credential registers sessions of its own attempt "
            f"({caller.attempt.attempt}) only, not of attempt {spec.attempt}"
        )
    return p.sessions.register(run, action, spec)


@router.get("/runs/{run}/actions/{action}/session")
def get_session(run: str, action: str, p: Plane, _: RunViewer) -> wire.SessionInfo:
    """The action's latest session (404 if it never had one)."""
    return p.sessions.get(run, action)


@router.post("/runs/{run}/actions/{action}/session/open")
def open_session(run: str, action: str, p: Plane, caller: RunMember) -> wire.SessionOpen:
    """A one-time URL that signs the caller's browser in to the action's open session, on
    the sessions' own origin (the UI's Open button; ``loom open``)."""
    info = p.sessions.get(run, action)
    if info.ended_at is not None:
        raise ConflictError(f"the session of action {action!r} of run {run!r} has ended")
    ticket = p.session_access.ticket(info.id, caller.key_id)
    return wire.SessionOpen(
        url=f"{p.origin_of_session(info.id)}{ENTER}?ticket={ticket}", expires_in=TICKET_TTL_S
    )


@router.get("/runs/{run}/actions/{action}/session/command")
async def session_command(
    run: str,
    action: str,
    p: Plane,
    _: ActionRuntime,
    timeout: Annotated[float, Query(ge=0)] = sessions.MAX_COMMAND_WAIT_S,
) -> wire.SessionCommand:
    """The runtime's long-poll: ``resume``/``fail`` once asked, ``abort`` once the action
    ended, ``idle`` past the idle limit, else ``none`` after ``timeout`` s (at most 30 s)."""
    return await sessions.wait_command(p.sessions, p.bus, run, action, timeout)


@router.post("/runs/{run}/actions/{action}/session/resume")
async def resume_session(
    run: str, action: str, body: wire.SessionResume, p: Plane, _: ActionMember
) -> wire.ResumeOutcome:
    """Ask the runtime to resume the task with the code as edited (or, with ``fail``, to
    give up), and wait for how it went: up to 10 minutes, then 504."""
    return await sessions.resume(p.sessions, p.bus, run, action, body)


@router.post("/runs/{run}/actions/{action}/session/outcome", status_code=204)
def session_outcome(
    run: str, action: str, outcome: wire.ResumeOutcome, p: Plane, _: ActionRuntime
) -> Response:
    """The runtime's answer to a resume or fail request."""
    p.sessions.record_outcome(run, action, outcome)
    return Response(status_code=204)


@router.post("/runs/{run}/actions/{action}/session/ended")
def session_ended(
    run: str, action: str, body: wire.SessionEnded, p: Plane, _: ActionRuntime
) -> wire.SessionInfo:
    """The runtime stopped the IDE."""
    return p.sessions.ended(run, action, body)
