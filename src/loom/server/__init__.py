"""loom's control plane: the HTTP API, the state machine, the scheduler (DESIGN §3, §4).

Run it with ``python -m loom.server``; it talks to SDKs and runtimes only through the wire
schema (:mod:`loom.wire`) over HTTP, and imports nothing from loom but the wire schema and the
executors.

Exceptions (each maps to an HTTP status; the response body is ``{"detail": "..."}``)::

    ServerError                       root of every error the server raises itself
    ├── ConfigurationError            bad settings; the server does not start
    ├── BadRequestError         400   a request that cannot be honoured as asked
    ├── AuthenticationError     401   missing or unknown API key
    ├── PermissionDeniedError   403   the key may not do this (not an admin key)
    ├── NotFoundError           404   unknown project, run, action, attempt, bundle or key
    ├── ConflictError           409   a stale attempt, a duplicate name, a run that ended
    ├── PayloadTooLargeError    413   inputs or outputs over wire.MAX_INLINE_BYTES, big bundles
    └── StorageFullError        507   the server's disk is full (nothing was recorded)
"""

from ._app import create_app, create_session_app
from ._cli import main
from ._errors import (
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ServerError,
)
from ._plane import ControlPlane
from ._settings import ServerSettings

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "ConfigurationError",
    "ConflictError",
    "ControlPlane",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "ServerError",
    "ServerSettings",
    "create_app",
    "create_session_app",
    "main",
]
