"""The server's one typed settings object. Nothing else in the server reads ``os.environ``.

Precedence, highest first: command-line arguments (passed as overrides), ``LOOM_*`` environment
variables, defaults.

==========================  ==============================================================
``LOOM_HOME``               default data directory (``~/.loom``)
``LOOM_CONFIG``             client configuration file written at first start
                            (default ``<data-dir>/config.yaml``)
``LOOM_DATABASE_URL``       SQLAlchemy URL (default SQLite in WAL mode at
                            ``<data-dir>/server.db``), e.g. ``postgresql+psycopg://...``
``LOOM_OBJECT_STORE``       ``s3://bucket/prefix`` or a directory (default
                            ``<data-dir>/objects``)
``LOOM_S3_ENDPOINT_URL``    endpoint of an S3-compatible store (MinIO, moto...)
``LOOM_S3_REGION``          region of the S3 store (optional)
``LOOM_EXECUTOR_SLOTS``     most attempts running at once (default: no limit but the
                            resources their requests add up to, see below)
``LOOM_EXECUTOR_GPUS``      GPUs the executor hands out, numbered from 0 (default: the
                            NVIDIA GPUs found, one per ``/dev/nvidiaN``)
``LOOM_DEFAULT_CPU``        the CPU request of a task that makes none (default 0.01): the
                            scheduler packs attempts by their requests against the machine
``LOOM_DEFAULT_MEMORY``     the memory request of a task that makes none (default
                            ``128Mi``); it is not enforced, an explicit request is
``LOOM_SYSTEM_RETRIES``     attempts lost to the infrastructure (a worker lost, the server
                            restarted) retried on top of a task's own ``retries`` (default 3)
``LOOM_RUNTIME_COMMAND``    the command that runs one attempt (default
                            ``<python> -m loom.runtime``), split like a shell would
``LOOM_MAX_BUNDLE_BYTES``   largest code bundle accepted (default 1 GiB)
``LOOM_MAX_DATA_BYTES``     largest ``File``/``Dir``/``DataFrame`` object accepted by
                            ``PUT /data`` (default 10 GiB; a ``Dir`` counts as its archive)
``LOOM_HEARTBEAT_TIMEOUT``  seconds without a heartbeat after which a running attempt is
                            declared lost and its process killed (default 90)
``LOOM_SESSION_PORT``       the port interactive sessions are served on, apart from the
                            API and the UI (default: the API's port + 1; 0 picks a free one)
``LOOM_SESSION_URL``        the sessions' public origin, where a browser reaches that port;
                            ``{id}`` in it gives each session an origin of its own (default
                            ``http://{id}.localhost:<session port>`` on loopback, else
                            ``http://<host>:<session port>``); see ``docs/security.md``
``LOOM_SESSION_ROOT``       where the attempts' IDE sockets go, a private directory each
                            (default ``$TMPDIR/loom-<uid>-<digest of the data dir>``: short)
==========================  ==============================================================
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import shlex
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import wire
from ._errors import ConfigurationError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8377


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """Every knob the control plane reads, resolved once at start."""

    data_dir: Path
    config_path: Path
    database_url: str
    object_store: str
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    allow_remote: bool = False
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    executor_slots: int | None = None
    executor_gpus: int | None = None
    system_retries: int = 3
    default_cpu: float = 0.01
    default_memory_bytes: int = 128 << 20
    runtime_command: tuple[str, ...] = ()
    max_bundle_bytes: int = 1 << 30
    max_data_bytes: int = 10 << 30
    heartbeat_timeout_s: float = 90.0
    #: the sessions' own listener (``None``: the API's port + 1, or a free one with port 0)
    session_port: int | None = None
    #: the sessions' public origin, ``{id}`` for the session's id (``None``: see the table)
    session_url: str | None = None
    #: where the attempts' IDE sockets go, a directory each: short, as a socket's path must
    #: be (``None``: a private directory under the system's temporary one)
    session_root: Path | None = None
    #: where `loom ide install` put code-server and JupyterLab; interactive actions use them
    ide_dir: Path | None = None
    #: the environment action processes start from: the server's own, without ``LOOM_*``
    #: (those configure the server, e.g. a database password, and must not leak into tasks)
    child_env: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ServerSettings:
        """Read ``environ`` (default ``os.environ``) and apply non-``None`` ``overrides``
        (``data_dir``, ``host``, ``port``, ``allow_remote`` and any other field)."""
        env = os.environ if environ is None else environ
        overrides = {k: v for k, v in overrides.items() if v is not None}
        data_dir = Path(
            overrides.pop("data_dir", None) or env.get("LOOM_HOME") or Path.home() / ".loom"
        ).expanduser()
        values: dict[str, Any] = {
            "data_dir": data_dir,
            "config_path": Path(env.get("LOOM_CONFIG") or data_dir / "config.yaml").expanduser(),
            "database_url": env.get("LOOM_DATABASE_URL") or f"sqlite:///{data_dir / 'server.db'}",
            "object_store": env.get("LOOM_OBJECT_STORE") or str(data_dir / "objects"),
            "s3_endpoint_url": env.get("LOOM_S3_ENDPOINT_URL") or None,
            "s3_region": env.get("LOOM_S3_REGION") or None,
            "executor_slots": (
                _int(env, "LOOM_EXECUTOR_SLOTS", 0) if env.get("LOOM_EXECUTOR_SLOTS") else None
            ),
            "executor_gpus": (
                _int(env, "LOOM_EXECUTOR_GPUS", 0) if env.get("LOOM_EXECUTOR_GPUS") else None
            ),
            "system_retries": _int(env, "LOOM_SYSTEM_RETRIES", 3),
            "default_cpu": _float(env, "LOOM_DEFAULT_CPU", 0.01),
            "default_memory_bytes": _bytes(env, "LOOM_DEFAULT_MEMORY", 128 << 20),
            "max_bundle_bytes": _int(env, "LOOM_MAX_BUNDLE_BYTES", 1 << 30),
            "max_data_bytes": _int(env, "LOOM_MAX_DATA_BYTES", 10 << 30),
            "heartbeat_timeout_s": _float(env, "LOOM_HEARTBEAT_TIMEOUT", 90.0),
            "session_port": (
                _int(env, "LOOM_SESSION_PORT", 0) if env.get("LOOM_SESSION_PORT") else None
            ),
            "session_url": env.get("LOOM_SESSION_URL") or None,
            "session_root": Path(v) if (v := env.get("LOOM_SESSION_ROOT")) else None,
            "runtime_command": tuple(
                shlex.split(env["LOOM_RUNTIME_COMMAND"])
                if env.get("LOOM_RUNTIME_COMMAND")
                else (sys.executable, "-m", "loom.runtime")
            ),
            # the user's IDE installs, whatever --data-dir says (the SDK's default place)
            "ide_dir": Path(
                env.get("LOOM_IDE_DIR")
                or Path(env.get("LOOM_HOME") or Path.home() / ".loom") / "ide"
            ).expanduser(),
            "child_env": {k: v for k, v in env.items() if not k.startswith("LOOM_")},
        }
        values.update(overrides)
        settings = cls(**values)
        settings.validate()
        return settings

    def with_overrides(self, **overrides: Any) -> ServerSettings:
        """A copy with the given non-``None`` fields replaced."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def validate(self) -> None:
        """Raise :class:`ConfigurationError` for settings the server cannot run with."""
        if self.executor_slots is not None and self.executor_slots < 1:
            raise ConfigurationError("LOOM_EXECUTOR_SLOTS must be at least 1")
        if self.system_retries < 0:
            raise ConfigurationError("LOOM_SYSTEM_RETRIES cannot be negative")
        if self.executor_gpus is not None and self.executor_gpus < 0:
            raise ConfigurationError("LOOM_EXECUTOR_GPUS cannot be negative")
        if not 0 < self.default_cpu <= 1024:
            raise ConfigurationError(
                f"LOOM_DEFAULT_CPU must be more than 0 (a share of one CPU, such as 0.01), "
                f"got {self.default_cpu:g}"
            )
        if self.default_memory_bytes < 1:
            raise ConfigurationError("LOOM_DEFAULT_MEMORY must be more than 0, such as 128Mi")
        if not 0 <= self.port <= 65535:
            raise ConfigurationError(f"port must be between 0 and 65535, got {self.port}")
        if not self.heartbeat_timeout_s > 0:
            raise ConfigurationError("LOOM_HEARTBEAT_TIMEOUT must be more than 0 seconds")
        if self.session_port is not None and not 0 <= self.session_port <= 65535:
            raise ConfigurationError(
                f"LOOM_SESSION_PORT must be between 0 and 65535, got {self.session_port}"
            )
        if self.session_url is not None and not self.session_url.startswith(
            ("http://", "https://")
        ):
            raise ConfigurationError(
                f"LOOM_SESSION_URL must be an http:// or https:// origin, got {self.session_url!r}"
            )
        if not self.runtime_command:
            raise ConfigurationError("LOOM_RUNTIME_COMMAND must not be empty")
        if not self.allow_remote and not is_loopback(self.host):
            raise ConfigurationError(
                f"refusing to listen on {self.host!r}: the API would be reachable from other "
                "machines. Use a loopback address (127.0.0.1, ::1, localhost), or pass "
                "--allow-remote if that is what you want (put TLS in front of it)"
            )

    def session_sockets_dir(self) -> Path:
        """The root of the attempts' IDE socket directories (a socket's path has at most
        about 100 bytes, which a data directory's may already take)."""
        if self.session_root is not None:
            return self.session_root
        digest = hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:8]
        return Path(tempfile.gettempdir()) / f"loom-{os.getuid()}-{digest}"

    def session_bind_port(self) -> int:
        """The port to listen on for sessions."""
        if self.session_port is not None:
            return self.session_port
        return self.port + 1 if self.port else 0

    def session_origin(self, port: int, host: str | None = None) -> str:
        """The sessions' public origin (maybe with ``{id}``), once the listener's ``port``
        is known."""
        if self.session_url:
            return self.session_url.rstrip("/")
        host = host or self.host
        if is_loopback(host):
            # a host per session: each IDE is its own origin, and none shares the UI's site
            return f"http://{{id}}.localhost:{port}"
        return f"http://{self.client_host(host)}:{port}"

    @property
    def heartbeat_interval_s(self) -> float:
        """How often action processes beat: several beats fit in the timeout, so one late
        or lost request is no reason to declare an attempt lost."""
        return min(10.0, self.heartbeat_timeout_s / 6)

    @property
    def sqlite(self) -> bool:
        """Whether the metadata database is the embedded SQLite file."""
        return self.database_url.startswith("sqlite")

    def client_host(self, host: str | None = None) -> str:
        """The host a client on this machine should use to reach the server."""
        host = host or self.host
        if host in ("0.0.0.0", ""):  # a wildcard bind answers on loopback too
            return "127.0.0.1"
        if host == "::":
            return "[::1]"
        return f"[{host}]" if ":" in host else host


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as e:
        raise ConfigurationError(f"{name} must be a whole number, got {raw!r}") from e


def _bytes(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        return wire.parse_bytes(raw)
    except ValueError as e:
        raise ConfigurationError(f"{name}: {e}") from e


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError as e:
        raise ConfigurationError(f"{name} must be a number, got {raw!r}") from e
