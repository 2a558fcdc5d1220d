"""The wire schema: versioned JSON models shared by the SDK, the runtime and the server.

This module is the only code the SDK and the control plane share (DESIGN §4, rule 1): the SDK
and ``loom.runtime`` build requests from these models, ``loom.server`` validates them. Field
names are the JSON names. Every change must be backwards compatible within ``API_VERSION``.

Endpoints (all under ``/api/v1``, all need ``Authorization: Bearer <api key or attempt
credential>`` and are authorised by the project of what they touch, see
``loom.server._authz``; the response model follows the arrow):

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
- ``POST /secrets`` ``SecretCreate``
  → ``SecretInfo`` (admin; 409 if it exists and ``overwrite`` is false; the value is never
  returned by any endpoint but the runtime's below)
- ``GET  /secrets?project=&domain=``
  → ``list[SecretInfo]`` (admin; names and scopes, no values)
- ``DELETE /secrets/{key}?project=&domain=``
  → 204 (admin)
- ``GET  /runs/{run}/actions/{action}/secrets``
  → ``SecretValues`` (the running attempt's own credential only: the secrets the action's
  task declares, resolved in its run's project and domain)
- ``PUT  /bundles/{digest}`` (body: tar.gz bytes)
  → ``BundleInfo`` (idempotent per digest)
- ``HEAD /bundles/{digest}``
  → 200 if stored, 404 if not
- ``GET  /bundles/{digest}``
  → the tar.gz bytes
- ``PUT  /data/{digest}?project=`` (body: the bytes; ``digest``: ``sha256:<hex>`` or
  ``<hex>`` of them)
  → ``DataInfo`` (a member of ``project``, default ``default``; a runtime's upload goes to
  its run's project; idempotent per digest; 400 if the body's SHA-256 differs, 413 over the
  server's ``LOOM_MAX_DATA_BYTES``)
- ``HEAD /data/{digest}?project=``
  → 200 if ``project`` has it, 404 if not (upload it)
- ``GET  /data/{digest}``
  → the bytes, streamed, for a caller with a role in a project that has them (404 if none)
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
- ``PUT  /runs/{run}/actions/{action}/attempts/{n}/checkpoint?kind=file|dir`` (the bytes, at
  most ``MAX_CHECKPOINT_BYTES`` and the server's ``LOOM_MAX_DATA_BYTES``)
  → ``CheckpointInfo`` (by that attempt's runtime: its checkpoint, replacing its earlier one;
  413 over the limit)
- ``GET  /runs/{run}/actions/{action}/attempts/{n}/checkpoint``
  → the bytes of the latest checkpoint an attempt before ``n`` saved, its ``CheckpointInfo``
  as JSON in the ``CHECKPOINT_HEADER`` header (for attempt ``n``'s runtime only; 404 if none)
- ``GET  /runs/{run}/actions/{action}/attempts/{n}/checkpoint/info``
  → ``CheckpointInfo`` of that checkpoint, without its bytes (404 if none)
- ``GET  /runs/{run}/actions/{action}/logs?attempt=&follow=``
  → text/plain, streamed while following
- ``PUT  /runs/{run}/actions/{action}/report`` (text/html, at most ``MAX_REPORT_BYTES``)
  → 204 (by the action's runtime: the report so far; the last upload wins)
- ``GET  /runs/{run}/actions/{action}/report``
  → text/html, served sandboxed (404 until the task flushes a report)
- ``GET  /events?run=`` (server-sent events)
  → one ``Event`` per ``data:`` line

Batches (one request and one transaction for many actions; what fans out uses these):

- ``POST /runs/{run}/actions:batch`` ``list[ActionCreate]`` (at most ``MAX_BATCH``)
  → ``list[ActionCreated]``, one per item in request order: the action (idempotent per name,
  like the one-action create) or the status and detail the one-action create would have
  answered (``ItemError``); one item's refusal leaves the others alone
- ``POST /runs/{run}/actions:wait`` ``ActionsWait``
  → ``ActionsWaited``: those of ``names`` that have ended (in the order asked), as soon as at
  least one has, or none after ``timeout`` s (at most 30 s), and the event ``seq`` to pass as
  ``after`` to wait again for the rest; a SUCCEEDED action's outputs come inline while the
  response stays under ``MAX_INLINE_OUTPUTS`` bytes of them (else ``GET .../outputs``); 404 if
  the run or (without ``after``) one of the names does not exist
- ``POST /attempts:heartbeat`` ``list[AttemptRef]`` (at most ``MAX_BATCH``)
  → ``list[ItemStatus]``, one per attempt in request order (200, or 409/404 as
  ``.../attempts/{n}/heartbeat`` would answer)
- ``POST /attempts:finish`` ``list[AttemptReport]`` (at most ``MAX_BATCH``)
  → ``list[ItemStatus]``, one per report in request order, each with the status the
  ``.../attempts/{n}/finished`` endpoint would have answered (200 accepted or a repeat of an
  accepted report; 409 for a stale attempt or one the server already ended; 404, 400, 413)

Interactive sessions (the runtime registers the IDE it started; people resume or give up):

- ``POST /runs/{run}/actions/{action}/session`` ``SessionRegister``
  → ``SessionInfo`` (by the runtime; the action goes RUNNING -> INTERACTIVE)
- ``GET  /runs/{run}/actions/{action}/session``
  → ``SessionInfo`` (404 if the action never had one)
- ``GET  /runs/{run}/actions/{action}/session/command?timeout=``
  → ``SessionCommand`` (the runtime long-polls; ``idle`` once the idle limit has passed)
- ``POST /runs/{run}/actions/{action}/session/open``
  → ``SessionOpen`` (a member of the run's project, with an API key or the login cookie: a
  one-time URL that signs a browser in to this session on the sessions' own origin)
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

Web UI (read models for the browser app the server serves at ``/``; any client may use them):

- ``GET  /views/runs?project=&domain=&phase=&task=&q=&offset=&limit=``
  → ``RunPage`` (newest first; ``q``: a case-insensitive substring of the run or task name)
- ``GET  /views/runs/{run}``
  → ``RunView`` (the run, all its actions, and the event ``seq`` to follow from)
- ``GET  /views/runs/{run}/actions/{action}``
  → ``ActionDetail`` (inputs, outputs, the task, the commands that run it again)
- ``GET  /runs/{run}/actions/{action}/files?of=inputs|outputs&path=``
  → the bytes of a ``File`` the action's inputs or outputs refer to (only those, by their
  ``ValueKind`` tag), from the object store (a ``Dir`` as its ``.tar.gz``); never a file of
  the server's machine (404 for a value that names one)
- ``POST /runs/{run}/actions/{action}/debug?kind=vscode|jupyter``
  → ``RunInfo``: a new run of the same bundle, task and inputs, interactive and uncached
  (what ``loom debug`` does)
- ``GET  /login/local`` → ``LocalLogin`` (no key needed); ``POST /login/local`` → 204 and the
  login cookie of the local admin key, for a browser on the server's own machine (loopback
  only; see ``loom.server._auth.check_local_login``)

The session proxy is served on its own listener, the sessions' origin (never the UI's and the
API's; see ``loom.server._session_access``): ``/sessions/{id}/...`` (HTTP and WebSocket) for a
member of the run's project with an API key (header) or the session's own cookie, which
``/_loom/enter?ticket=`` sets once for a ticket from ``.../session/open``; anything else gets
401 (HTTP) or 403 (WebSocket upgrade). The UI's login cookie is not accepted there. Every
proxied request and frame counts as activity.

Run and action names are unique within the server; action names are unique within their run.

Data (``File``, ``Dir`` and ``DataFrame`` values of remote runs) travels through the object
store by reference: the encoded value's path is ``loom://data/<sha256>/<name>`` for a file, and
``loom://data/<sha256>/<name>/`` (a trailing slash) for a directory, whose object is a
gzip-compressed tar of the tree's contents. ``<sha256>`` is the hex SHA-256 of the object's
bytes, uploaded once per content with ``PUT /data/{digest}``; ``<name>`` is the file's or
directory's name (one path component).
"""

from __future__ import annotations

import math
import re
import secrets
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, GetCoreSchemaHandler
from pydantic_core import CoreSchema

from ._runtime import (
    WORKER_LEDGER as WORKER_LEDGER,
)
from ._runtime import (
    ZYGOTE_ARGV as ZYGOTE_ARGV,
)
from ._runtime import (
    AttemptArgs as AttemptArgs,
)
from ._runtime import (
    ChildExited as ChildExited,
)
from ._runtime import (
    Spawned as Spawned,
)
from ._runtime import (
    SpawnFailed as SpawnFailed,
)
from ._runtime import (
    SpawnRequest as SpawnRequest,
)
from ._runtime import (
    WorkerArgs as WorkerArgs,
)
from ._runtime import (
    WorkerCancel as WorkerCancel,
)
from ._runtime import (
    WorkerDone as WorkerDone,
)
from ._runtime import (
    WorkerHello as WorkerHello,
)
from ._runtime import (
    WorkerJob as WorkerJob,
)
from ._runtime import (
    WorkerReport as WorkerReport,
)
from ._runtime import (
    WorkerReported as WorkerReported,
)
from ._runtime import (
    WorkerStop as WorkerStop,
)
from ._runtime import (
    ZygoteReady as ZygoteReady,
)
from ._runtime import (
    decode as decode,
)
from ._runtime import (
    encode as encode,
)
from ._runtime import (
    ledger_line as ledger_line,
)
from ._runtime import (
    ledger_running as ledger_running,
)
from ._runtime import (
    parse_runtime_argv as parse_runtime_argv,
)
from ._runtime import (
    worker_job_marker as worker_job_marker,
)

API_VERSION = "v1"
API_PREFIX = f"/api/{API_VERSION}"

#: Inputs and outputs larger than this (encoded JSON bytes) are refused with 413.
MAX_INLINE_BYTES = 10 * 1024 * 1024
#: The most items one batch request (``actions:batch``, ``attempts:finish``) may carry.
MAX_BATCH = 5000
#: ``actions:wait`` inlines outputs up to this many bytes in all, per response.
MAX_INLINE_OUTPUTS = 4 * 1024 * 1024
#: Bytes of one action's report (HTML) the server stores.
MAX_REPORT_BYTES = 16 * 1024 * 1024

#: How an encoded ``File``/``Dir``/``DataFrame`` refers to data in the object store (see above).
DATA_URI_PREFIX = "loom://data/"

#: The key of the type tag on encoded values that are not plain JSON (see :class:`ValueKind`).
VALUE_TAG = "__loom__"


class ValueKind(StrEnum):
    """What an encoded value that is not plain JSON is: a JSON object with ``VALUE_TAG`` set to
    one of these. The server and the UI read the tag; they never guess from a value's shape.

    - ``file`` / ``dir``: ``{"__loom__": "file", "path": P, "name": N}``; in remote runs ``P``
      is a ``loom://data/`` reference (a ``dir``'s ends with ``/``);
    - ``dataframe``: ``{"__loom__": "dataframe", "parquet": P}`` (``P`` as for a file) or
      ``"parquet_b64"`` (the bytes, base64, in local runs);
    - ``pickle``: ``{"__loom__": "pickle", "data": B}``, ``B`` the base64 of a cloudpickle.
      Only the SDK unpickles, and only values of its own run: the server never does.
    """

    FILE = "file"
    DIR = "dir"
    DATAFRAME = "dataframe"
    PICKLE = "pickle"


def value_kind(value: Any) -> ValueKind | None:
    """The kind a tagged encoded value declares; ``None`` for plain JSON (or an unknown tag)."""
    if isinstance(value, dict):
        tag = value.get(VALUE_TAG)
        if isinstance(tag, str):
            try:
                return ValueKind(tag)
            except ValueError:
                return None
    return None


DOMAINS = ("development", "staging", "production")


class Phase(StrEnum):
    """Where a run or an action is in its life (a run's phase is its root action's; the
    transitions are in ``loom.server._state``). Compares equal to its name as a string."""

    QUEUED = "QUEUED"  # accepted, waiting for capacity
    RUNNING = "RUNNING"  # an attempt is executing
    INTERACTIVE = "INTERACTIVE"  # an attempt waits in an interactive session (VS Code, Jupyter)
    RETRYING = "RETRYING"  # an attempt failed and another will start after the backoff
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    ABORTED = "ABORTED"


TERMINAL_PHASES: frozenset[Phase] = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.ABORTED})


class ErrorKind(StrEnum):
    """Why an attempt or an action failed: whose fault it was decides what is retried, and
    from which allowance (see ``loom.server._state``)."""

    USER = "user"  # the task's code raised
    SYSTEM = "system"  # loom could not run it (bad input, a missing bundle, no room ever)
    TIMEOUT = "timeout"  # it ran past its timeout and was killed
    WORKER_LOST = "worker_lost"  # its process died, or the server lost it in a restart
    ABORTED = "aborted"  # somebody aborted it, or its parent ended
    OOM = "oom"  # it held more memory than its limit
    NON_RECOVERABLE = "non_recoverable"  # the task raised NonRecoverableError: never retried


# -- what every model accepts: checked at the wire, before anything is stored -------------

#: Longest names the server stores (its database columns): of projects and runs, of domains,
#: of actions, and of everything else named (tasks, secrets, groups, variables, modules).
MAX_PROJECT_NAME = 63
MAX_DOMAIN_NAME = 32
MAX_ACTION_NAME = 200
MAX_NAME = 255
#: Largest attempt number or request id (a 32-bit column), and event ``seq`` (64-bit).
MAX_NUMBER = 2**31 - 1
MAX_SEQ = 2**63 - 1
#: What a string may hold: anything but NUL, which PostgreSQL cannot store in text and which
#: no name, path or message needs. (Strings with a pattern of their own exclude it already.)
NUL_FREE_PATTERN = r"^[^\x00]*$"
_NOT_SCHEMAS = frozenset({"metadata", "serialization", "default", "expected", "config", "cls"})


def _forbid_nul(schema: Any) -> None:
    """Give every string of a core schema without a pattern :data:`NUL_FREE_PATTERN`: checked
    by pydantic-core as it validates, so a large batch costs no Python per string."""
    if isinstance(schema, list):
        for item in schema:
            _forbid_nul(item)
    elif isinstance(schema, dict):
        if schema.get("type") == "str" and "pattern" not in schema:
            schema["pattern"] = NUL_FREE_PATTERN
        for key, value in schema.items():
            if key not in _NOT_SCHEMAS:
                _forbid_nul(value)


def _show_nul(value: Any) -> Any:
    return value.replace("\x00", "\\x00") if isinstance(value, str) else value


#: Text a task chose (an exception's message or traceback): a NUL in it is shown as ``\x00``
#: rather than refused, so that a failure is always reported.
ReportedText = Annotated[str, BeforeValidator(_show_nul)]

#: The longest wait between attempts, whatever the policy says: it keeps the next attempt's
#: time (and a local ``sleep``) representable.
MAX_RETRY_BACKOFF_S = 24 * 3600.0
_LOG_LARGEST_FLOAT = 700.0  # about log(1.8e308), with room for rounding


_BYTE_UNITS = {
    "": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
    "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40,
}  # fmt: skip


def parse_bytes(value: str | int) -> int:
    """Bytes in a Kubernetes-style quantity such as ``"512Mi"`` or ``"2G"`` (a task's memory
    request, the server's default one); :class:`ValueError` for anything else."""
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative, got {value}")
        return value
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]i?)?\s*", value)
    if not m:
        raise ValueError(f"expected a size such as '512Mi', '4Gi' or '2G', got {value!r}")
    return int(float(m.group(1)) * _BYTE_UNITS[(m.group(2) or "").lower()])


def retry_backoff_s(
    backoff_s: float, backoff_factor: float, max_backoff_s: float, failed_attempt: int
) -> float:
    """Seconds to wait before the attempt after ``failed_attempt`` (numbered from 1):
    ``backoff_s * backoff_factor ** (failed_attempt - 1)``, at most ``max_backoff_s`` (and
    :data:`MAX_RETRY_BACKOFF_S`). The one rule of local and remote retries; it never
    overflows, whatever the policy (a thousand retries doubling from 0.1 s wait the cap)."""
    cap = min(max_backoff_s, MAX_RETRY_BACKOFF_S)
    if not (backoff_s > 0 and cap > 0):  # (NaN too)
        return 0.0
    exponent = max(failed_attempt - 1, 0)
    factor = backoff_factor if backoff_factor > 0 else 0.0
    if factor > 1:
        # in log space: the power alone overflows a float (2.0 ** 1100) long after the cap wins
        growth = exponent * math.log(factor)
        log_delay = math.log(backoff_s) + growth
        if log_delay >= math.log(cap):
            return cap
        if growth > _LOG_LARGEST_FLOAT:  # under the cap only with a backoff_s near 1e-300
            return math.exp(log_delay)
    return min(backoff_s * factor**exponent, cap)


class _Model(BaseModel):
    # no NaN or Infinity in any float field: JSON has neither, and PostgreSQL refuses them
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[BaseModel], handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        schema = handler(source)
        _forbid_nul(schema)
        return schema


class ErrorBody(_Model):
    """The body of an error response; but that of a request that does not match the schema
    (422), whose ``detail`` is a list of ``{loc, msg, type}``."""

    detail: str


class Health(_Model):
    status: Literal["ok"] = "ok"
    version: str
    api: str = API_VERSION


class Role(StrEnum):
    """What an API key may do in a project it is granted (DESIGN §7)."""

    VIEWER = "viewer"  # read runs, actions, logs, values and reports
    MEMBER = "member"  # a viewer who also starts, aborts, resumes and debugs runs, opens
    # sessions, and whose runs use the project's secrets


#: Prefix of a per-attempt runtime credential (the server mints one per attempt; it is valid
#: only while that attempt runs). API keys start with ``loom_``.
ATTEMPT_CREDENTIAL_PREFIX = "loomat_"


class ApiKeyCreate(_Model):
    """A new key: an ``admin`` key, or one with a role in each of ``projects`` (one of the
    two; the server refuses a key with neither)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    admin: bool = False
    projects: dict[str, Role] = {}


class ApiKeyInfo(_Model):
    name: str
    admin: bool
    created_at: datetime
    projects: dict[str, Role] = {}  # the key's role in each project it is granted


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


#: Largest secret value the server stores.
MAX_SECRET_BYTES = 64 * 1024
#: What a secret's key may be: letters, digits, ``_ . -``, not starting with ``.`` or ``-``.
SECRET_KEY_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}$"


class SecretCreate(_Model):
    """A secret for every project and domain, one domain, one project, or one project's
    domain; the most specific one a run's project and domain match wins."""

    key: str = Field(pattern=SECRET_KEY_PATTERN)
    value: str = Field(max_length=MAX_SECRET_BYTES, repr=False)
    project: str | None = Field(default=None, max_length=MAX_PROJECT_NAME)
    domain: str | None = Field(default=None, max_length=MAX_DOMAIN_NAME)
    overwrite: bool = False


class SecretInfo(_Model):
    key: str
    project: str | None = None
    domain: str | None = None
    created_at: datetime
    updated_at: datetime


class SecretValues(_Model):
    """The values of an action's secrets, and the keys that are set nowhere it can see."""

    values: dict[str, str] = Field(default_factory=dict, repr=False)
    missing: list[str] = []


class BundleInfo(_Model):
    digest: str
    size: int


class DataInfo(_Model):
    """Data stored under a digest (``PUT /data/{digest}``)."""

    digest: str
    size: int


#: Bytes of one checkpoint (``loom.ctx().checkpoint``); the server may hold them to less.
MAX_CHECKPOINT_BYTES = 4 * 1024**3
#: The response header of ``GET .../attempts/{n}/checkpoint`` with its ``CheckpointInfo``.
CHECKPOINT_HEADER = "X-Loom-Checkpoint"


class CheckpointKind(StrEnum):
    """What a checkpoint's bytes are: ``file``, as saved (bytes or a file), or ``dir``, a
    gzip-compressed tar of a directory's contents, which the SDK unpacks (the server never
    does)."""

    FILE = "file"
    DIR = "dir"


class CheckpointInfo(_Model):
    """A checkpoint an attempt saved: the next attempt of the same action resumes from it."""

    attempt: int = Field(ge=1, le=MAX_NUMBER)
    kind: CheckpointKind
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class ResourceSpec(_Model):
    cpu: float | None = Field(default=None, ge=0)
    memory_bytes: int | None = Field(default=None, ge=0)
    gpu: int | None = Field(default=None, ge=0)
    disk_bytes: int | None = Field(default=None, ge=0)


class RetrySpec(_Model):
    """Retry a failed attempt up to ``count`` times; see :func:`retry_backoff_s`."""

    count: int = Field(default=0, ge=0)
    backoff_s: float = Field(default=0.1, ge=0)
    backoff_factor: float = Field(default=2.0, ge=0)
    max_backoff_s: float = Field(default=30.0, ge=0)


class SecretRef(_Model):
    key: str = Field(max_length=MAX_NAME)
    env_var: str | None = Field(default=None, max_length=MAX_NAME)
    mount: str | None = None


class CacheSpec(_Model):
    key: str  # task identity + version + inputs digest, computed by the caller
    serialize: bool = False


class ReuseSpec(_Model):
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=1, ge=1)
    concurrency: int = Field(default=1, ge=1)
    idle_ttl_s: float | None = Field(default=None, ge=0)


SessionKind = Literal["vscode", "jupyter"]


class InteractiveSpec(_Model):
    """How an action runs interactively: set by ``@vscode``/``@jupyter`` or ``--debug``."""

    kind: SessionKind = "vscode"
    max_idle_seconds: float | None = Field(default=36000.0, ge=0)  # None: never time out
    run_task_first: bool = False
    notebook_dir: str | None = None


#: A requirements file in an image spec, inline: its content names the environment.
MAX_REQUIREMENTS_BYTES = 256 * 1024


class RequirementsFile(_Model):
    """A file ``Image.with_requirements`` read: ``requirements.txt`` style, a
    ``pyproject.toml`` (its ``[project] dependencies``), or a ``uv.lock`` with the
    ``pyproject.toml`` of its project (installed exactly as locked)."""

    name: str = Field(max_length=MAX_NAME)  # its file name: says which kind it is
    content: str = Field(max_length=MAX_REQUIREMENTS_BYTES)
    project: str | None = Field(default=None, max_length=MAX_REQUIREMENTS_BYTES)


class ImageSpec(_Model):
    """A task's environment as ``loom.Image`` describes it. The Python side (``python``,
    packages, requirements, indexes) is realised as a Python environment built with uv, one
    per :func:`environment_digest`; ``env_vars`` are set in its processes. ``base``,
    ``apt_packages`` and ``commands`` need a container: an executor that cannot run one
    refuses the task at submission (see :func:`container_parts`)."""

    python: str = Field(pattern=r"^3\.[0-9]{1,2}$")  # "3.12"
    #: requirement specifiers: never an option (``-e``, ``--index-url``...) for the installer
    packages: list[Annotated[str, Field(max_length=1024, pattern=r"^[A-Za-z0-9]")]] = []
    requirements: list[RequirementsFile] = []
    index_url: str | None = Field(default=None, max_length=2048, pattern=r"^https?://")
    extra_index_urls: list[Annotated[str, Field(max_length=2048, pattern=r"^https?://")]] = []
    pre: bool = False  # pre-releases allowed
    env_vars: dict[Annotated[str, Field(max_length=MAX_NAME)], str] = {}
    base: str | None = Field(default=None, max_length=1024)  # ``Image.from_base``
    apt_packages: list[Annotated[str, Field(max_length=MAX_NAME)]] = []
    commands: list[Annotated[str, Field(max_length=4096)]] = []


class ImagesBuild(_Model):
    """``POST /images:build``: build these images' environments now (ahead of their runs)."""

    images: list[ImageSpec] = Field(default=[], max_length=100)


class ImageInfo(_Model):
    """A built image environment: ``key`` names it (``loom delete image KEY``)."""

    key: str
    python: str
    packages: list[str]
    requirements: list[str]  # the requirement files' names
    size_bytes: int
    built_at: datetime
    last_used_at: datetime | None = None


def environment_digest(spec: ImageSpec) -> str:
    """The sha-256 of what makes ``spec``'s Python environment: the same for the same
    packages, requirement files' contents, indexes and Python, whatever the image's name."""
    import hashlib
    import json

    content = {
        "python": spec.python,
        "packages": spec.packages,
        "requirements": [[r.name, r.content, r.project] for r in spec.requirements],
        "index_url": spec.index_url,
        "extra_index_urls": spec.extra_index_urls,
        "pre": spec.pre,
    }
    data = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(data).hexdigest()


def index_options(spec: ImageSpec) -> list[str]:
    """``uv pip install``'s options for where ``spec``'s packages come from (the server's
    build and ``loom image dockerfile`` install the same way)."""
    options = []
    if spec.index_url:
        options += ["--index-url", spec.index_url]
    for url in spec.extra_index_urls:
        options += ["--extra-index-url", url]
    if spec.pre:
        options += ["--prerelease", "allow"]
    return options


#: ``uv export``'s command (after ``uv``) for the requirements a uv.lock pins, its project aside
LOCK_EXPORT = ("export", "--frozen", "--no-hashes", "--no-emit-project")


def needs_environment(spec: ImageSpec, python: str) -> bool:
    """Whether ``spec`` asks for more than an interpreter ``python`` (``"3.11"``) with the
    loom runtime: packages, requirements, or another Python."""
    return bool(spec.packages or spec.requirements or spec.python != python)


def container_parts(spec: ImageSpec) -> list[str]:
    """The parts of ``spec`` only a container can realise, as the calls that made them."""
    parts = []
    if spec.base is not None:
        parts.append(f"from_base({spec.base!r})")
    if spec.apt_packages:
        parts.append(f"with_apt_packages({', '.join(map(repr, spec.apt_packages))})")
    parts.extend(f"with_commands({command!r})" for command in spec.commands)
    return parts


class TaskSpec(_Model):
    """What to run: a task found by module and attribute in the run's code bundle."""

    module: str = Field(max_length=MAX_NAME)
    attr: str = Field(max_length=MAX_NAME)
    name: str = Field(max_length=MAX_NAME)  # the task's full name, "<environment>.<function>"
    environment: str = Field(max_length=MAX_NAME)
    resources: ResourceSpec = ResourceSpec()
    env_vars: dict[Annotated[str, Field(max_length=MAX_NAME)], str] = {}
    secrets: list[SecretRef] = []
    retries: RetrySpec = RetrySpec()
    timeout_s: float | None = Field(default=None, ge=0)  # ``Timeout.max_runtime``: per attempt
    #: ``Timeout.max_queued_time``: how long the action may wait to start an attempt (QUEUED,
    #: or RETRYING once its backoff is over) before it fails with MaxQueuedTimeExceededError
    max_queued_s: float | None = Field(default=None, gt=0)
    #: ``Timeout.deadline``: how long after its creation the action must have ended, across
    #: all attempts, or fail with DeadlineExceededError (its running attempt killed)
    deadline_s: float | None = Field(default=None, gt=0)
    cache: CacheSpec | None = None
    reuse: ReuseSpec | None = None
    interactive: InteractiveSpec | None = None
    #: ``TaskEnvironment(image=...)``: ``None`` runs in the runtime's own environment
    image: ImageSpec | None = None


#: ``ctx().custom_context``: a few short key-value pairs (Flyte 2's limits, roughly)
CustomContext = Annotated[
    dict[Annotated[str, Field(max_length=MAX_NAME)], Annotated[str, Field(max_length=4096)]],
    Field(max_length=64),
]


class ActionCreate(_Model):
    """A task call to run as an action. ``name`` is deterministic, so re-submitting after a
    crash attaches to the existing action instead of running it twice."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
    parent: str | None = Field(default=None, max_length=MAX_ACTION_NAME)
    group: list[Annotated[str, Field(max_length=MAX_NAME)]] = []
    task: TaskSpec
    inputs: dict[str, Any] = {}
    #: ``loom.custom_context``: key-value pairs the action sees in ``ctx().custom_context``,
    #: and passes on to the actions it starts
    custom_context: CustomContext = {}


# -- run names: readable and unique, whichever side makes them (client or server) ----------

_ADJECTIVES = (
    "amber", "bold", "brisk", "calm", "clever", "crisp", "daring", "eager", "fair", "fancy",
    "gentle", "glad", "grand", "happy", "hardy", "keen", "kind", "lively", "lucky", "merry",
    "mighty", "nimble", "noble", "proud", "quick", "quiet", "rapid", "bright", "sharp", "shy",
    "silent", "sleek", "smooth", "snappy", "steady", "sunny", "swift", "tidy", "vivid", "witty",
)  # fmt: skip
_NOUNS = (
    "badger", "beaver", "bison", "crane", "falcon", "ferret", "finch", "gecko", "heron", "ibis",
    "jaguar", "koala", "lemur", "lynx", "marten", "moose", "newt", "ocelot", "otter", "owl",
    "panda", "puffin", "quail", "raven", "robin", "salmon", "seal", "shrew", "sparrow", "stoat",
    "tapir", "tern", "tiger", "toucan", "trout", "vole", "walrus", "weasel", "wren", "yak",
)  # fmt: skip
_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def new_run_name() -> str:
    """A run name such as ``brisk-otter-4k7q2m``: an adjective, an animal and six random
    characters (about 2 billion per pair); it fits ``RunCreate.name``."""
    suffix = "".join(secrets.choice(_ALPHABET) for _ in range(6))
    return f"{secrets.choice(_ADJECTIVES)}-{secrets.choice(_NOUNS)}-{suffix}"


class RunCreate(_Model):
    project: str = Field(default="default", max_length=MAX_PROJECT_NAME)
    domain: str = Field(default="development", max_length=MAX_DOMAIN_NAME)
    name: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    bundle: str  # digest of an uploaded code bundle
    root: ActionCreate
    env_vars: dict[Annotated[str, Field(max_length=MAX_NAME)], str] = {}
    overwrite_cache: bool = False


class ErrorInfo(_Model):
    """A failure, portable across processes; ``pickled`` restores the original exception."""

    type: ReportedText  # qualified name, e.g. "ValueError" or "mypkg.errors.QuotaError"
    message: ReportedText
    traceback: ReportedText = ""
    #: ``oom``: the attempt held more memory than its task's request and was killed
    kind: ErrorKind = ErrorKind.USER
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
    #: ``waiting``: QUEUED behind an identical call of a ``Cache(serialize=True)`` task, whose
    #: result it gets (``hit``), or whose place it takes if that call fails
    cache: Literal["disabled", "miss", "hit", "overwritten", "waiting"] = "disabled"
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
    custom_context: dict[str, str] = {}
    run_started_at: datetime | None = None  # when the run was created (``ctx().run_start_time``)


SessionState = Literal["starting", "ready", "resuming", "ended"]


class SessionRegister(_Model):
    """The runtime started an IDE for attempt ``attempt`` and tells the server where it is.

    ``id`` lets the runtime choose the session's id (random, url-safe) when the IDE must know
    its URL before it starts: Jupyter's ``--ServerApp.base_url=/sessions/<id>/``. Without it
    the server picks one. Registering the same id again for the same attempt is a no-op.
    """

    id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{16,64}$")
    attempt: int = Field(ge=0, le=MAX_NUMBER)
    kind: SessionKind
    socket: str  # the IDE's private Unix socket: the proxy's only way in
    token: str | None = Field(default=None, repr=False)  # Jupyter's; the proxy adds it
    max_idle_seconds: float | None = Field(default=None, ge=0)
    workspace: str  # where the session's files are, on the worker


class SessionInfo(_Model):
    id: str
    run: str
    action: str
    attempt: int
    kind: SessionKind
    state: SessionState
    url: str  # the proxied path on the session's origin, e.g. "/sessions/<id>/"
    #: the session's own origin (not the UI's nor the API's), e.g. "http://<label>.localhost:8378":
    #: a browser gets in with a ticket from ``POST .../session/open``
    origin: str = ""
    workspace: str
    max_idle_seconds: float | None
    started_at: datetime
    last_activity_at: datetime
    idle_deadline: datetime | None  # None: no idle limit
    ended_at: datetime | None = None
    end_reason: str | None = None


class SessionOpen(_Model):
    """A one-time way into a session for the caller's browser: ``url`` (on the session's own
    origin) signs the browser in to that session only, once, before ``expires_in`` s."""

    url: str = Field(repr=False)
    expires_in: float


class SessionCommand(_Model):
    """What the runtime waiting in a session should do next."""

    command: Literal["none", "resume", "fail", "abort", "idle"]
    id: int = 0  # of a resume or fail request, echoed in its ``ResumeOutcome``


class SessionResume(_Model):
    fail: bool = False  # give up instead: fail the action and close the session


class ResumeOutcome(_Model):
    id: int = Field(default=0, ge=0, le=MAX_NUMBER)
    ok: bool
    error: ErrorInfo | None = None  # why the resumed code could not run (the session stays)


class SessionEnded(_Model):
    # e.g. "resumed", "idle for 36000 s", "aborted", "the IDE exited with code 1"
    reason: ReportedText


class Login(_Model):
    api_key: str = Field(repr=False)


class Outputs(_Model):
    value: Any


class AttemptResult(_Model):
    outputs: Outputs | None = None
    error: ErrorInfo | None = None


class ItemError(_Model):
    """Why the server refused one item of a batch: the HTTP status and detail that the
    one-item endpoint would have answered."""

    status: int
    detail: str


class ActionCreated(_Model):
    """One item of the answer to ``POST /runs/{run}/actions:batch``: exactly one field set."""

    action: ActionInfo | None = None
    error: ItemError | None = None


class ActionsWait(_Model):
    """Wait for any of these actions of one run to end.

    ``after`` is the ``seq`` of an earlier answer about all of ``names``: none of them had
    ended by then, so the server only looks at what ended since (and does not check again
    that they exist). A thousand children cost a thousand lookups once, not at every poll.
    """

    names: list[str] = Field(max_length=100_000)
    timeout: float = Field(default=25.0, ge=0)
    after: int | None = Field(default=None, ge=0, le=MAX_SEQ)


class ActionOutcome(_Model):
    """An action that has ended, with its outputs inline when it SUCCEEDED and they fitted
    (``outputs`` is ``None`` then: fetch them with ``GET .../outputs``)."""

    name: str
    phase: Phase
    error: ErrorInfo | None = None
    outputs: Outputs | None = None


class ActionsWaited(_Model):
    """The answer to ``POST /runs/{run}/actions:wait``."""

    actions: list[ActionOutcome]  # those that have ended, in the order asked
    seq: int  # none of the others had ended by this event: ``after`` for the next wait


class AttemptRef(_Model):
    """One attempt of one action, as an item of ``POST /attempts:heartbeat``; a warm worker
    sends each attempt's own ``credential`` along (the request's bearer is one of them)."""

    run: str
    action: str
    attempt: int = Field(ge=0, le=MAX_NUMBER)
    credential: str | None = Field(default=None, repr=False)


class AttemptReport(_Model):
    """A runtime's result for one attempt, as one item of ``POST /attempts:finish``."""

    run: str
    action: str
    attempt: int = Field(ge=0, le=MAX_NUMBER)
    result: AttemptResult
    credential: str | None = Field(default=None, repr=False)  # as in ``AttemptRef``


class ItemStatus(_Model):
    """How the server took one item of a batch: 200, or the status and detail the one-item
    endpoint would have answered."""

    status: int = 200
    detail: str = ""


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


# -- the web UI's views (issue 5) ---------------------------------------------------------
# Read models shaped for the browser UI served at ``/`` (see the endpoint list above, "Web
# UI"). Additions only: the SDK does not use them.

#: Encoded inputs or outputs larger than this (JSON bytes) are not inlined in an
#: ``ActionDetail``: the UI links to the full value instead.
VIEW_VALUE_BYTES = 256 * 1024


class RunPage(_Model):
    """One page of runs, newest first, with the total that match the filters."""

    runs: list[RunInfo]
    total: int
    offset: int
    limit: int
    tasks: list[str] = []  # the task names of runs in the project/domain (for a filter menu)


class RunView(_Model):
    """A run and all its actions; ``seq`` is the newest event before they were read, so
    ``GET /events?run=&after=seq`` continues exactly where this leaves off."""

    run: RunInfo
    actions: list[ActionInfo]
    seq: int


class ValueView(_Model):
    """Encoded inputs or outputs (the type engine's JSON), or why they are not inlined."""

    value: Any = None
    size: int  # bytes of encoded JSON
    truncated: bool = False  # over VIEW_VALUE_BYTES: ``value`` is left out


class EnvironmentView(_Model):
    """The environment of an action's image, as the UI shows it (``loom get image`` lists it
    by ``key``): whether it is built, and the end of its build log."""

    key: str
    built: bool
    log: str = ""  # the last VIEW_LOG_BYTES of its build output (URL credentials hidden)


#: Of an environment's build log, what the action page shows (its end).
VIEW_LOG_BYTES = 64 * 1024


class ActionDetail(_Model):
    """What the UI shows for one action: its state, task, values and how to run it again."""

    action: ActionInfo
    task: TaskSpec
    inputs: ValueView
    outputs: ValueView | None = None  # once SUCCEEDED
    # a `loom run --remote ...` command that runs the task again with these inputs (a NUL in
    # one, which no command line can hold, is shown as \x00)
    rerun: ReportedText
    rerun_note: str = ""  # why the command is incomplete (e.g. a pickled input), if it is
    debug: str  # the `loom debug RUN ACTION` command (the interactive re-run)
    #: its image's environment, when it has one to build
    environment: EnvironmentView | None = None


class LocalLogin(_Model):
    """Whether ``POST /login/local`` would sign this caller in as the local admin."""

    available: bool
    reason: str = ""
