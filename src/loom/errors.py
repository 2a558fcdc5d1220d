"""Exceptions raised by loom.

Every error loom raises on its own account derives from :class:`LoomError`. Where an error
also means something to plain Python, it derives from the matching built-in too, so ordinary
``except`` clauses keep working::

    LoomError
    ├── ConfigError                    bad configuration file or settings
    ├── TaskDefinitionError            a task or environment is declared wrongly
    ├── InputError (TypeError)         a task got missing, unexpected or ill-typed inputs
    ├── OutputTypeError (TypeError)    a task returned a value that does not match its annotation
    ├── MissingSecretError (KeyError)  a secret the task asks for is not available
    ├── TaskTimeoutError (TimeoutError) an attempt outlived the task's timeout
    ├── OOMError (MemoryError)         a remote attempt held more memory than its request
    ├── SerializationError             a value could not be encoded or decoded by the type engine
    ├── TaskLoadError                  a task file could not be found, imported or searched
    ├── BundleError                    the source tree could not be packaged or unpacked
    ├── RemoteTaskError                a remote action failed with an exception that cannot be
    │                                  rebuilt here (its type, message and traceback are kept)
    ├── IdeInstallError                code-server, JupyterLab or an extension could not be
    │                                  installed (the message names the command that fixes it)
    └── ApiError                       the control plane refused a request or cannot be reached
        ├── ServerUnreachableError     nothing answers at the configured endpoint
        ├── AuthenticationError        the API key is missing or wrong (HTTP 401)
        ├── NotFoundError (LookupError) the run, action, project or key does not exist (HTTP 404)
        └── PayloadTooLargeError       inputs or outputs exceed the server's limit (HTTP 413)

Exceptions raised by *user code* inside a task are never wrapped: they reach the caller with
their own type, message and traceback.
"""

from __future__ import annotations

__all__ = [
    "ApiError",
    "AuthenticationError",
    "BundleError",
    "ConfigError",
    "IdeInstallError",
    "InputError",
    "LoomError",
    "MissingSecretError",
    "NotFoundError",
    "OOMError",
    "OutputTypeError",
    "PayloadTooLargeError",
    "RemoteTaskError",
    "SerializationError",
    "ServerUnreachableError",
    "TaskDefinitionError",
    "TaskLoadError",
    "TaskTimeoutError",
]


class LoomError(Exception):
    """Root of every error loom raises itself."""


class ConfigError(LoomError):
    """The configuration file or a setting is invalid."""


class TaskDefinitionError(LoomError):
    """A task, environment or one of their settings is declared wrongly."""


class InputError(LoomError, TypeError):
    """A task was called with missing, unexpected or ill-typed inputs."""


class OutputTypeError(LoomError, TypeError):
    """A task returned a value that does not match its return annotation."""


class MissingSecretError(LoomError, KeyError):
    """A secret requested by a task is not available."""

    def __str__(self) -> str:  # KeyError would otherwise print the message quoted
        return str(self.args[0]) if self.args else ""


class TaskTimeoutError(LoomError, TimeoutError):
    """An attempt of a task ran longer than its timeout."""


class OOMError(LoomError, MemoryError):
    """A remote attempt held more memory than its ``Resources(memory=...)`` and was killed;
    the message names the limit and the peak. Catch it in a parent to retry with more."""


class SerializationError(LoomError):
    """A value could not be encoded or decoded by the type engine."""


class TaskLoadError(LoomError):
    """A task file could not be found or imported, or does not define the task asked for."""


class BundleError(LoomError):
    """The source tree could not be packaged, or a bundle could not be unpacked safely."""


class RemoteTaskError(LoomError):
    """A remote action failed with an exception whose type cannot be rebuilt in this process."""

    def __init__(self, type_name: str, message: str, traceback: str = "") -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.remote_traceback = traceback


class IdeInstallError(LoomError):
    """code-server, JupyterLab or an editor extension could not be installed or found."""


class ApiError(LoomError):
    """The control plane refused a request."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ServerUnreachableError(ApiError):
    """Nothing answers at the configured endpoint."""


class AuthenticationError(ApiError):
    """The API key is missing or wrong."""


class NotFoundError(ApiError, LookupError):
    """The run, action, project or key does not exist."""


class PayloadTooLargeError(ApiError):
    """Inputs or outputs exceed the server's size limit."""
