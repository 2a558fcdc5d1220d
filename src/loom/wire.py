"""The wire schema: versioned JSON models shared by the SDK, the runtime and the server.

This module is the only code the SDK and the control plane share (DESIGN §4, rule 1): the SDK
and ``loom.runtime`` build requests from these models, ``loom.server`` validates them. Field
names are the JSON names. Every change must be backwards compatible within ``API_VERSION``.

Endpoints (all under ``/api/v1``, all need ``Authorization: Bearer <api key>``; the response
model follows the arrow):

- ``GET  /health``
  → ``Health`` (no key needed)
- ``GET  /whoami``
  → ``ApiKeyInfo`` of the caller
- ``POST /api-keys`` ``ApiKeyCreate``
  → ``ApiKeyCreated`` (the secret, shown once)
- ``GET  /api-keys``
  → ``list[ApiKeyInfo]``
- ``DELETE /api-keys/{name}``
  → 204
- ``POST /projects`` ``ProjectCreate``
  → ``ProjectInfo``
- ``GET  /projects``
  → ``list[ProjectInfo]``
- ``PUT  /bundles/{digest}`` (body: tar.gz bytes)
  → ``BundleInfo`` (idempotent per digest)
- ``HEAD /bundles/{digest}``
  → 200 if stored, 404 if not
- ``GET  /bundles/{digest}``
  → the tar.gz bytes
- ``POST /runs`` ``RunCreate``
  → ``RunInfo``
- ``GET  /runs?project=&domain=&phase=&task=&limit=``
  → ``list[RunInfo]`` (newest first)
- ``GET  /runs/{run}``
  → ``RunInfo``
- ``POST /runs/{run}/abort``
  → ``RunInfo``
- ``GET  /runs/{run}/actions``
  → ``list[ActionInfo]``
- ``POST /runs/{run}/actions`` ``ActionCreate``
  → ``ActionInfo`` (idempotent per name)
- ``GET  /runs/{run}/actions/{action}``
  → ``ActionInfo``
- ``GET  /runs/{run}/actions/{action}/spec``
  → ``ActionSpec`` (for the runtime)
- ``GET  /runs/{run}/actions/{action}/outputs``
  → ``Outputs``
- ``GET  /runs/{run}/actions/{action}/wait?timeout=``
  → ``ActionInfo`` once terminal or at timeout
- ``POST /runs/{run}/actions/{action}/attempts/{n}/started``
  → ``ActionInfo``
- ``POST /runs/{run}/actions/{action}/attempts/{n}/heartbeat`
  → ` 204
- ``POST /runs/{run}/actions/{action}/attempts/{n}/finished``
  → ``AttemptResult`` -> ``ActionInfo``
- ``GET  /runs/{run}/actions/{action}/logs?attempt=&follow=``
  → text/plain, streamed while following
- ``GET  /events?run=`` (server-sent events)
  → one ``Event`` per ``data:`` line

Interactive sessions (the runtime registers the IDE it started; people resume or give up):

- ``POST /runs/{run}/actions/{action}/session`` ``SessionRegister``
  → ``SessionInfo`` (by the runtime; the action goes RUNNING -> INTERACTIVE)
- ``GET  /runs/{run}/actions/{action}/session``
  → ``SessionInfo`` (404 if the action never had one)
- ``GET  /runs/{run}/actions/{action}/session/command?timeout=``
  → ``SessionCommand`` (the runtime long-polls; ``idle`` once the idle limit has passed)
- ``POST /runs/{run}/actions/{action}/session/resume`` ``SessionResume``
  → ``ResumeOutcome`` once the runtime has tried (the action goes INTERACTIVE -> RUNNING
  while it does; on failure back to INTERACTIVE and the session stays open)
- ``POST /runs/{run}/actions/{action}/session/outcome`` ``ResumeOutcome``
  → 204 (by the runtime: how the resume it was asked for went)
- ``POST /runs/{run}/actions/{action}/session/ended`` ``SessionEnded``
  → ``SessionInfo`` (by the runtime, once the IDE is stopped)
- ``POST /runs/{run}/actions/{action}/abort``
  → ``ActionInfo`` (ends one action and its descendants; its session closes)
- ``POST /login`` ``Login`` → 204 and an HTTP-only cookie the UI and the session proxy accept;
  ``POST /logout`` → 204

The session proxy lives outside ``/api/v1``: ``/sessions/{id}/...`` (HTTP and WebSocket) for a
caller with an API key (header) or the login cookie; anything else gets 401 (HTTP) or 403
(WebSocket upgrade). Every proxied request and frame counts as activity.

Run and action names are unique within the server; action names are unique within their run.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

API_VERSION = "v1"
API_PREFIX = f"/api/{API_VERSION}"

#: Inputs and outputs larger than this (encoded JSON bytes) are refused with 413.
MAX_INLINE_BYTES = 10 * 1024 * 1024

DOMAINS = ("development", "staging", "production")

Phase = Literal[
    "QUEUED",  # accepted, waiting for capacity
    "RUNNING",  # an attempt is executing
    "INTERACTIVE",  # an attempt waits in an interactive session (VS Code or Jupyter)
    "RETRYING",  # an attempt failed and another will start after the backoff
    "SUCCEEDED",
    "FAILED",
    "ABORTED",
]
TERMINAL_PHASES: frozenset[str] = frozenset({"SUCCEEDED", "FAILED", "ABORTED"})


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Health(_Model):
    status: Literal["ok"] = "ok"
    version: str
    api: str = API_VERSION


class ApiKeyCreate(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    admin: bool = False


class ApiKeyInfo(_Model):
    name: str
    admin: bool
    created_at: datetime


class ApiKeyCreated(ApiKeyInfo):
    key: str  # shown once; the server keeps only its hash


class ProjectCreate(_Model):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    description: str = ""


class ProjectInfo(_Model):
    name: str
    description: str
    domains: list[str]
    created_at: datetime


class BundleInfo(_Model):
    digest: str
    size: int


class ResourceSpec(_Model):
    cpu: float | None = None
    memory_bytes: int | None = None
    gpu: int | None = None
    disk_bytes: int | None = None


class RetrySpec(_Model):
    count: int = 0
    backoff_s: float = 0.1
    backoff_factor: float = 2.0
    max_backoff_s: float = 30.0


class SecretRef(_Model):
    key: str
    env_var: str | None = None
    mount: str | None = None


class CacheSpec(_Model):
    key: str  # task identity + version + inputs digest, computed by the caller
    serialize: bool = False


class ReuseSpec(_Model):
    min_replicas: int = 1
    max_replicas: int = 1
    concurrency: int = 1
    idle_ttl_s: float | None = None


SessionKind = Literal["vscode", "jupyter"]


class InteractiveSpec(_Model):
    """How an action runs interactively: set by ``@vscode``/``@jupyter`` or ``--debug``."""

    kind: SessionKind = "vscode"
    max_idle_seconds: float | None = 36000.0  # None: never time out
    run_task_first: bool = False
    notebook_dir: str | None = None


class TaskSpec(_Model):
    """What to run: a task found by module and attribute in the run's code bundle."""

    module: str
    attr: str
    name: str  # the task's full name, "<environment>.<function>"
    environment: str
    resources: ResourceSpec = ResourceSpec()
    env_vars: dict[str, str] = {}
    secrets: list[SecretRef] = []
    retries: RetrySpec = RetrySpec()
    timeout_s: float | None = None
    cache: CacheSpec | None = None
    reuse: ReuseSpec | None = None
    interactive: InteractiveSpec | None = None


class ActionCreate(_Model):
    """A task call to run as an action. ``name`` is deterministic, so re-submitting after a
    crash attaches to the existing action instead of running it twice."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
    parent: str | None = None
    group: list[str] = []
    task: TaskSpec
    inputs: dict[str, Any] = {}


class RunCreate(_Model):
    project: str = "default"
    domain: str = "development"
    name: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    bundle: str  # digest of an uploaded code bundle
    root: ActionCreate
    env_vars: dict[str, str] = {}
    overwrite_cache: bool = False


class ErrorInfo(_Model):
    """A failure, portable across processes; ``pickled`` restores the original exception."""

    type: str  # qualified name, e.g. "ValueError" or "mypkg.errors.QuotaError"
    message: str
    traceback: str = ""
    kind: Literal["user", "system", "timeout", "worker_lost", "aborted"] = "user"
    pickled: str | None = None  # base64 cloudpickle of the exception, when it pickles


class AttemptInfo(_Model):
    number: int
    phase: Phase
    started_at: datetime | None = None
    ended_at: datetime | None = None
    error: ErrorInfo | None = None


class ActionInfo(_Model):
    run: str
    name: str
    parent: str | None
    group: list[str]
    task: str
    phase: Phase
    attempts: list[AttemptInfo] = []
    created_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    error: ErrorInfo | None = None
    cache: Literal["disabled", "miss", "hit", "overwritten"] = "disabled"
    session: SessionInfo | None = None  # the latest interactive session, if it had any


class ActionSpec(_Model):
    """Everything a runtime needs to execute one attempt of an action."""

    run: str
    action: str
    attempt: int
    project: str
    domain: str
    bundle: str
    task: TaskSpec
    inputs: dict[str, Any]
    env_vars: dict[str, str]  # run-level variables, on top of the task's own
    overwrite_cache: bool = False


SessionState = Literal["starting", "ready", "resuming", "ended"]


class SessionRegister(_Model):
    """The runtime started an IDE for attempt ``attempt`` and tells the server where it is.

    ``id`` lets the runtime choose the session's id (random, url-safe) when the IDE must know
    its URL before it starts: Jupyter's ``--ServerApp.base_url=/sessions/<id>/``. Without it
    the server picks one. Registering the same id again for the same attempt is a no-op.
    """

    id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{16,64}$")
    attempt: int
    kind: SessionKind
    socket: str  # the IDE's private Unix socket: the proxy's only way in
    token: str | None = Field(default=None, repr=False)  # Jupyter's; the proxy adds it
    max_idle_seconds: float | None = None
    workspace: str  # where the session's files are, on the worker


class SessionInfo(_Model):
    id: str
    run: str
    action: str
    attempt: int
    kind: SessionKind
    state: SessionState
    url: str  # the proxied path, e.g. "/sessions/<id>/"
    workspace: str
    max_idle_seconds: float | None
    started_at: datetime
    last_activity_at: datetime
    idle_deadline: datetime | None  # None: no idle limit
    ended_at: datetime | None = None
    end_reason: str | None = None


class SessionCommand(_Model):
    """What the runtime waiting in a session should do next."""

    command: Literal["none", "resume", "fail", "abort", "idle"]
    id: int = 0  # of a resume or fail request, echoed in its ``ResumeOutcome``


class SessionResume(_Model):
    fail: bool = False  # give up instead: fail the action and close the session


class ResumeOutcome(_Model):
    id: int = 0
    ok: bool
    error: ErrorInfo | None = None  # why the resumed code could not run (the session stays)


class SessionEnded(_Model):
    reason: str  # e.g. "resumed", "idle for 36000 s", "aborted", "the IDE exited with code 1"


class Login(_Model):
    api_key: str = Field(repr=False)


class Outputs(_Model):
    value: Any


class AttemptResult(_Model):
    outputs: Outputs | None = None
    error: ErrorInfo | None = None


class RunInfo(_Model):
    name: str
    project: str
    domain: str
    task: str
    phase: Phase
    created_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    created_by: str
    error: ErrorInfo | None = None
    actions: int = 0


class Event(_Model):
    """A phase change, delivered at least once over ``/events``; ``seq`` orders them."""

    seq: int
    kind: Literal["run", "action"]
    run: str
    action: str | None = None
    phase: Phase
    at: datetime
