"""The API endpoints the web UI needs beyond the core ones (listed in :mod:`loom.wire`, "Web
UI"): pages of runs, a run with its actions, an action in detail, files an action refers to,
the interactive re-run, and the one-click local sign-in. Any client may use them."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse, StreamingResponse

from .. import wire
from ._auth import check_local_login, local_login_refusal, login_response
from ._authz import (
    Plane,
    RunMember,
    RunViewer,
    SignedIn,
    listing_scope,
    principal,
)
from ._authz import public as public_policy
from ._errors import AuthenticationError, NotFoundError, PermissionDeniedError
from ._plane import ControlPlane
from ._views import ViewService

public = APIRouter(prefix=wire.API_PREFIX, dependencies=[Depends(public_policy)])
router = APIRouter(prefix=wire.API_PREFIX, dependencies=[Depends(principal)])


async def views(request: Request) -> ViewService:
    # (async: a plain function would cost every request a trip to a worker thread)
    v: ViewService = request.app.state.views
    return v


Views = Annotated[ViewService, Depends(views)]


# -- read models ------------------------------------------------------------------------


@router.get("/views/runs")
def run_page(
    v: Views,
    caller: SignedIn,
    project: str | None = None,
    domain: str | None = None,
    phase: str | None = None,
    task: str | None = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
    offset: Annotated[int, Query(ge=0, le=wire.MAX_SEQ)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> wire.RunPage:
    """A page of the runs the caller may see, newest first; ``q`` matches part of the run's
    or its task's name."""
    visible = listing_scope(caller, project)
    return v.run_page(
        projects=visible,
        project=project,
        domain=domain,
        phase=phase,
        task=task,
        q=q,
        offset=offset,
        limit=limit,
    )


@router.get("/views/runs/{run}", response_model=wire.RunView, response_class=Response)
def run_view(run: str, v: Views, _: RunViewer) -> Response:
    """The run and all its actions, and the event ``seq`` to follow changes from."""
    # serialized here: FastAPI would validate thousands of actions again on the way out
    return Response(v.run_view(run).model_dump_json(), media_type="application/json")


@router.get("/views/runs/{run}/actions/{action}")
def action_detail(run: str, action: str, v: Views, _: RunViewer) -> wire.ActionDetail:
    """One action with its task, inputs, outputs and the commands that run it again."""
    return v.action_detail(run, action)


@router.get("/runs/{run}/actions/{action}/files", response_class=FileResponse)
def action_file(
    run: str,
    action: str,
    v: Views,
    p: Plane,
    _: RunViewer,
    of: Annotated[str, Query(pattern="^(inputs|outputs)$")],
    path: Annotated[str, Query(min_length=1)],
) -> Response:
    """Download a file the action's inputs or outputs refer to (a ``loom.io.File``; a
    ``Dir`` in the object store comes as its ``.tar.gz``)."""
    found = v.file_path(run, action, of, path)
    if not p.data.readable(found.digest, frozenset({p.scopes.run(run).project})):
        # a value may name any digest: only what was uploaded in the run's project is served
        raise NotFoundError(f"data {path!r} not found in this run's project")
    nosniff = {"X-Content-Type-Options": "nosniff"}
    filename = f"{found.name}.tar.gz" if found.tree else found.name
    media_type = "application/gzip" if found.tree else None
    local, chunks = p.data.source(found.digest)
    if local is not None:
        return FileResponse(
            local,
            filename=filename,
            media_type=media_type,
            content_disposition_type="attachment",
            headers=nosniff,
        )
    assert chunks is not None
    return StreamingResponse(
        chunks,
        media_type=media_type or "application/octet-stream",
        headers={**nosniff, "Content-Disposition": _attachment(filename)},
    )


def _attachment(filename: str) -> str:
    """A Content-Disposition that saves the download as ``filename`` (RFC 6266: non-ASCII
    names go percent-encoded in ``filename*``)."""
    quoted = quote(filename)
    if quoted == filename:
        return f'attachment; filename="{filename}"'
    return f"attachment; filename*=utf-8''{quoted}"


@router.post("/runs/{run}/actions/{action}/debug", status_code=201)
def debug_action(
    run: str,
    action: str,
    v: Views,
    caller: RunMember,
    kind: wire.SessionKind = "vscode",
) -> wire.RunInfo:
    """Re-run the action interactively: a new run of its bundle, task and inputs that opens
    a VS Code (or Jupyter) session, uncached. Its root action is ``a0``."""
    return v.debug_run(run, action, kind, created_by=caller.name)


# -- signing in as the local admin --------------------------------------------------------


def _local_admin_key(p: ControlPlane) -> str:
    """The admin key of the server's client configuration file (what the CLI here uses)."""
    import yaml

    path = p.settings.config_path
    try:
        data: Any = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        data = None
    key = data.get("api_key") if isinstance(data, dict) else None
    if not isinstance(key, str) or not key:
        raise NotFoundError(
            f"no local admin key: {path} holds none (restart the server with --new-admin-key "
            "to write one), or sign in with an API key"
        )
    return key


def _ends(request: Request) -> tuple[tuple[str, int] | None, tuple[str, int] | None]:
    """The connection's client and server ends (host, port), as the ASGI server saw them."""
    client = (request.client.host, request.client.port) if request.client else None
    server = request.scope.get("server")
    return client, (str(server[0]), int(server[1])) if server else None


@public.get("/login/local")
def local_login_info(request: Request, p: Plane) -> wire.LocalLogin:
    """Whether this caller could sign in as the local admin (the UI shows the button then)."""
    client, server = _ends(request)
    reason = local_login_refusal(
        p.settings.host, client, server, request.headers, check_origin_header=False
    )
    if reason is None:
        try:
            principal, _ = p.auth.login(_local_admin_key(p))
        except (NotFoundError, AuthenticationError):
            reason = "the server has no usable local admin key"
        else:
            if not principal.admin:
                reason = "the key in the server's configuration file is not an admin key"
    return wire.LocalLogin(available=reason is None, reason=reason or "")


@public.post("/login/local", status_code=204)
def local_login(request: Request, p: Plane) -> Response:
    """Sign a browser on the server's own machine in as the local admin: the login cookie of
    the admin key in the server's client configuration (see ``_auth.check_local_login``)."""
    client, server = _ends(request)
    check_local_login(p.settings.host, client, server, request.headers)
    try:
        principal, token = p.auth.login(_local_admin_key(p))
    except AuthenticationError:
        raise NotFoundError(
            "no local admin key: the key in the server's configuration file is not valid any "
            "more; sign in with an API key"
        ) from None
    if not principal.admin:
        raise PermissionDeniedError(
            "the key in the server's configuration file is not an admin key; sign in with an "
            "API key"
        )
    return login_response(request, token)
