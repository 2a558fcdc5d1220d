"""Who may do what (DESIGN §7): every route's rule, decided by the resource's project.

Principals (``_keys.Principal``):

- an **admin** key may do anything but read secret values;
- a key with **grants** has a role in named projects: ``viewer`` reads that project's runs,
  actions, logs, values and reports; ``member`` also starts, aborts, resumes and debugs runs
  and opens their sessions. A run of a project the key cannot see is a 404, exactly as a run
  that does not exist, so names do not leak;
- an **attempt's runtime credential** may act for its own attempt (report its start,
  heartbeats and result, read its spec and the secrets its task declares, register and serve
  its session), create and wait for actions of its own run, read that run, and move data.
  Nothing else: no other run, no key management, no login.

Each route depends on exactly one of the policies below (a FastAPI dependency); the
authorisation matrix test finds every route's policy through :data:`POLICIES` and fails for a
route that has none.

The policies (and :func:`principal`) are plain functions run on the event loop with the
database out of reach (``_db.without_blocking``): caches answer them almost always, and a
worker thread per dependency cost every request more than the check itself. One that needs
the database after all is run again in a worker thread.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

from anyio import to_thread
from fastapi import Depends, Query, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from .. import wire
from ._auth import COOKIE_NAME
from ._db import WouldBlock, without_blocking
from ._errors import AuthenticationError, NotFoundError, PermissionDeniedError
from ._keys import Principal
from ._plane import ControlPlane
from ._runs import normalize_digest
from ._scopes import RunScope


class Policy(StrEnum):
    """The rule a route follows; the matrix test's expectations are keyed by it."""

    PUBLIC = "public"  # no credential needed
    ANY = "any"  # any principal, attempt credentials included
    SIGNED_IN = "signed-in"  # any API key or login (listings show what the key may see)
    ADMIN = "admin"
    MEMBER_SOMEWHERE = "member-somewhere"  # member of some project, or an attempt (uploads)
    RUN_VIEWER = "run-viewer"  # viewer of the run's project, or an attempt of that run
    RUN_MEMBER = "run-member"  # member of the run's project
    ACTION_MEMBER = "action-member"  # member of the run's project, or the action's own attempt
    RUN_RUNTIME = "run-runtime"  # an attempt of that run (or admin): creates its actions
    ACTION_RUNTIME = "action-runtime"  # the action's current attempt (or admin)
    ACTION_SECRETS = "action-secrets"  # the action's current attempt, and nobody else
    ATTEMPT_RUNTIME = "attempt-runtime"  # exactly that attempt (or admin)
    ITEM_RUNTIME = "item-runtime"  # each item of a batch by its own attempt (or admin)
    BUNDLE_READER = "bundle-reader"  # who may see a run of that code bundle
    DATA_WRITER = "data-writer"  # a member of the ``project`` named (an attempt: its own)
    DATA_READER = "data-reader"  # who has a role in a project the data was uploaded in


_bearer = HTTPBearer(
    auto_error=False,
    description="an API key, or an attempt's runtime credential: `Authorization: Bearer <key>`",
)
# declared for the OpenAPI schema; the cookie is read and checked in `principal`
_cookie = APIKeyCookie(
    name=COOKIE_NAME, auto_error=False, description="the login cookie (POST /api/v1/login)"
)


async def plane(request: Request) -> ControlPlane:
    # (async: a plain function would cost every request a trip to a worker thread)
    p: ControlPlane = request.app.state.plane
    return p


Plane = Annotated[ControlPlane, Depends(plane)]


def on_loop_first(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` as a FastAPI dependency run on the event loop, without the database (in a
    worker thread if it needs it after all); its signature is what FastAPI resolves."""

    @functools.wraps(function)
    async def dependency(*args: Any, **kwargs: Any) -> Any:
        try:
            return without_blocking(function, *args, **kwargs)
        except WouldBlock:
            return await to_thread.run_sync(functools.partial(function, *args, **kwargs))

    return dependency


def _principal(
    request: Request,
    p: Plane,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    cookie: Annotated[str | None, Depends(_cookie)],
) -> Principal:
    """The caller, from ``Authorization: Bearer <key>`` or the login cookie; 401 with a hint
    otherwise (403 for a cross-site request riding on the cookie)."""
    hint = (
        f"The server's admin key is in {p.settings.config_path} (written at its first start; "
        "`loom` reads it from there). Create more keys with `loom create api-key NAME`."
    )
    if (credentials is None or not credentials.credentials) and not cookie:
        raise AuthenticationError(f"missing API key: send 'Authorization: Bearer <key>'. {hint}")
    try:
        return p.auth.authenticate(request.method, request.headers, request.cookies)
    except AuthenticationError as e:
        if credentials is not None and credentials.credentials:
            if credentials.credentials.startswith(wire.ATTEMPT_CREDENTIAL_PREFIX):
                raise
            raise AuthenticationError(f"invalid API key. {hint}") from None
        raise AuthenticationError(f"{e} {hint}") from None


principal = on_loop_first(_principal)
Caller = Annotated[Principal, Depends(principal)]


# -- the rules, as plain functions (the routes' dependencies below call them) --------------


def role_in(who: Principal, project: str) -> wire.Role | None:
    """The principal's role in ``project`` (an admin is a member everywhere)."""
    if who.admin:
        return wire.Role.MEMBER
    if who.attempt is not None:
        return None
    return who.grants.get(project)


def visible_projects(who: Principal) -> frozenset[str] | None:
    """The projects whose runs ``who`` may list; ``None`` for all of them (an admin)."""
    if who.admin:
        return None
    if who.attempt is not None:
        return frozenset({who.attempt.project})
    return frozenset(who.grants)


def listing_scope(who: Principal, project: str | None) -> frozenset[str] | None:
    """The projects a listing filtered by ``project`` may show ``who`` (``None``: all): 404
    for a named project it has no role in, as for one that does not exist."""
    visible = visible_projects(who)
    if project and visible is not None and project not in visible:
        raise NotFoundError(f"project {project!r} not found")
    return visible


def can_view_run(who: Principal, run: RunScope) -> bool:
    if who.attempt is not None:
        return who.attempt.run == run.name
    return role_in(who, run.project) is not None


def check_view(p: ControlPlane, who: Principal, run: str) -> RunScope:
    """The run's scope if ``who`` may see it; 404 (as for a run that does not exist) if not."""
    scope = p.scopes.run(run)
    if not can_view_run(who, scope):
        raise NotFoundError(f"run {run!r} not found")
    return scope


def check_member(who: Principal, project: str, doing: str) -> None:
    """403 unless ``who`` is a member of ``project`` (the caller checked it may see it)."""
    if role_in(who, project) == wire.Role.MEMBER:
        return
    if who.attempt is not None:
        raise PermissionDeniedError(f"a runtime credential may not {doing}")
    raise PermissionDeniedError(
        f"API key {who.name!r} is a {role_in(who, project) or 'stranger'} in project "
        f"{project!r}; to {doing} it needs the member role (an admin can create a key with "
        f"`loom create api-key NAME --project {project} --role member`)"
    )


def check_project_member(who: Principal, project: str, doing: str) -> None:
    """For a project named in a request body: 404 if ``who`` cannot see it, 403 if it may
    only read it."""
    if role_in(who, project) is None:
        if who.attempt is not None:
            raise PermissionDeniedError(f"a runtime credential may not {doing}")
        raise NotFoundError(f"project {project!r} not found")
    check_member(who, project, doing)


def is_own_attempt(who: Principal, run: str, action: str, attempt: int | None = None) -> bool:
    a = who.attempt
    return (
        a is not None
        and a.run == run
        and a.action == action
        and (attempt is None or a.attempt == attempt)
    )


# -- the policies, as FastAPI dependencies --------------------------------------------------

POLICIES: dict[Callable[..., Any], Policy] = {}


def _policy(policy: Policy) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(function: Callable[..., Any]) -> Callable[..., Any]:
        dependency = on_loop_first(function)
        POLICIES[dependency] = policy
        return dependency

    return register


async def public() -> None:
    """No credential needed."""


POLICIES[public] = Policy.PUBLIC


@_policy(Policy.ANY)
def any_caller(caller: Caller) -> Principal:
    return caller


@_policy(Policy.SIGNED_IN)
def signed_in(caller: Caller) -> Principal:
    if caller.attempt is not None:
        raise PermissionDeniedError("a runtime credential may only act for its own attempt")
    return caller


@_policy(Policy.ADMIN)
def admin(caller: Caller) -> Principal:
    if not caller.admin:
        raise PermissionDeniedError(f"API key {caller.name!r} is not an admin key")
    return caller


@_policy(Policy.MEMBER_SOMEWHERE)
def member_somewhere(caller: Caller) -> Principal:
    if caller.admin or caller.attempt is not None:
        return caller
    if wire.Role.MEMBER not in caller.grants.values():
        raise PermissionDeniedError(
            f"API key {caller.name!r} is a member of no project: uploading code or data needs "
            "the member role in a project"
        )
    return caller


@_policy(Policy.RUN_VIEWER)
def run_viewer(run: str, caller: Caller, p: Plane) -> Principal:
    check_view(p, caller, run)
    return caller


@_policy(Policy.RUN_MEMBER)
def run_member(run: str, caller: Caller, p: Plane) -> Principal:
    scope = check_view(p, caller, run)
    check_member(caller, scope.project, "change this run")
    return caller


@_policy(Policy.ACTION_MEMBER)
def action_member(run: str, action: str, caller: Caller, p: Plane) -> Principal:
    scope = check_view(p, caller, run)
    if not is_own_attempt(caller, run, action):
        check_member(caller, scope.project, "act on this action")
    return caller


@_policy(Policy.RUN_RUNTIME)
def run_runtime(run: str, caller: Caller, p: Plane) -> Principal:
    check_view(p, caller, run)
    if not caller.admin and caller.attempt is None:
        raise PermissionDeniedError(
            f"API key {caller.name!r} may not create actions in run {run!r}: only its "
            "runtimes do (start a run with POST /runs)"
        )
    return caller


def _runtime_denied(caller: Caller, what: str) -> PermissionDeniedError:
    if caller.attempt is not None:
        return PermissionDeniedError(
            f"a runtime credential may act only for its own attempt, not {what}"
        )
    return PermissionDeniedError(
        f"API key {caller.name!r} may not act for the runtime of {what}: only that attempt's "
        "runtime (or an admin key) does"
    )


@_policy(Policy.ACTION_RUNTIME)
def action_runtime(run: str, action: str, caller: Caller, p: Plane) -> Principal:
    check_view(p, caller, run)
    if not (caller.admin or is_own_attempt(caller, run, action)):
        raise _runtime_denied(caller, f"{run}/{action}")
    return caller


@_policy(Policy.ACTION_SECRETS)
def action_secrets(run: str, action: str, caller: Caller, p: Plane) -> Principal:
    check_view(p, caller, run)
    if not is_own_attempt(caller, run, action):
        raise PermissionDeniedError(
            f"{caller.name!r} may not read secret values: only the runtime of a running "
            "attempt of this action gets them"
        )
    return caller


@_policy(Policy.ATTEMPT_RUNTIME)
def attempt_runtime(run: str, action: str, n: int, caller: Caller, p: Plane) -> Principal:
    check_view(p, caller, run)
    if not (caller.admin or is_own_attempt(caller, run, action, n)):
        raise _runtime_denied(caller, f"{run}/{action}/{n}")
    return caller


@dataclass(frozen=True)
class BatchSender:
    """Who sent a runtime's batch: an admin, or the holder of a genuine attempt credential,
    ``named`` by it (the attempt may have ended since: its items are then answered 409, and
    the batch's other items, each with its own credential, still go through)."""

    admin: bool
    named: tuple[str, str, int] | None = None


@_policy(Policy.ITEM_RUNTIME)
def item_runtime(
    request: Request,
    p: Plane,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    cookie: Annotated[str | None, Depends(_cookie)],
) -> BatchSender:
    """Each item is then checked by :func:`item_allowed`. A warm worker's bearer is one of
    its attempts' credentials, which dies when that attempt ends; a live one is not needed
    to send the others' reports, a genuine one is."""
    token = credentials.credentials if credentials is not None else ""
    if token.startswith(wire.ATTEMPT_CREDENTIAL_PREFIX):
        named = p.auth.attempts.parse(token)
        if named is None:
            raise AuthenticationError("invalid runtime credential: it is not genuine")
        return BatchSender(admin=False, named=named)
    caller = _principal(request, p, credentials, cookie)
    if not caller.admin:
        raise _runtime_denied(caller, "these attempts")
    return BatchSender(admin=True)


def item_allowed(
    p: ControlPlane,
    sender: BatchSender,
    run: str,
    action: str,
    attempt: int,
    credential: str | None,
) -> bool:
    """Whether a batch item about that attempt is the sender's (or carries that attempt's own,
    genuine credential: a warm worker reports for all of its attempts in one request)."""
    if sender.admin or sender.named == (run, action, attempt):
        return True
    return credential is not None and p.auth.attempts.parse(credential) == (run, action, attempt)


@_policy(Policy.BUNDLE_READER)
def bundle_reader(digest: str, caller: Caller, p: Plane) -> Principal:
    if caller.admin:
        return caller
    hexdigest = normalize_digest(digest)
    if caller.attempt is not None:
        if normalize_digest(caller.attempt.bundle) == hexdigest:
            return caller
    elif p.scopes.bundle_used_in(hexdigest, frozenset(caller.grants)):
        return caller
    raise NotFoundError(f"bundle {digest!r} not found")


@_policy(Policy.DATA_WRITER)
def data_project(
    caller: Caller,
    project: Annotated[str | None, Query(max_length=wire.MAX_PROJECT_NAME)] = None,
) -> str:
    """The project an upload goes to (and may then read it): an attempt's own, whatever it
    names; else the ``project`` named (default ``default``), of which the caller must be a
    member."""
    if caller.attempt is not None:
        return caller.attempt.project
    name = project or "default"
    check_project_member(caller, name, f"upload data to project {name!r}")
    return name


@_policy(Policy.DATA_READER)
def data_reader(digest: str, caller: Caller, p: Plane) -> Principal:
    if not p.data.readable(digest, visible_projects(caller)):
        raise NotFoundError(f"data {digest} not found")
    return caller


Any_ = Annotated[Principal, Depends(any_caller)]
SignedIn = Annotated[Principal, Depends(signed_in)]
Admin = Annotated[Principal, Depends(admin)]
MemberSomewhere = Annotated[Principal, Depends(member_somewhere)]
RunViewer = Annotated[Principal, Depends(run_viewer)]
RunMember = Annotated[Principal, Depends(run_member)]
ActionMember = Annotated[Principal, Depends(action_member)]
RunRuntime = Annotated[Principal, Depends(run_runtime)]
ActionRuntime = Annotated[Principal, Depends(action_runtime)]
ActionSecrets = Annotated[Principal, Depends(action_secrets)]
AttemptRuntime = Annotated[Principal, Depends(attempt_runtime)]
ItemRuntime = Annotated[BatchSender, Depends(item_runtime)]
BundleReader = Annotated[Principal, Depends(bundle_reader)]
DataProject = Annotated[str, Depends(data_project)]
DataReader = Annotated[Principal, Depends(data_reader)]
