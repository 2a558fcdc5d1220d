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
    ├── BaseRuntimeError (RuntimeError) a task's attempt failed; ``.code`` names why, as in
    │   │                              Flyte 2
    │   ├── RuntimeUserError           the task's own code failed (see below)
    │   │   ├── TaskTimeoutError (TimeoutError) the action outlived a bound of its ``Timeout``
    │   │   │   ├── MaxRuntimeExceededError   an attempt ran longer than ``max_runtime``
    │   │   │   ├── MaxQueuedTimeExceededError an attempt waited longer than
    │   │   │   │                              ``max_queued_time`` to start
    │   │   │   └── DeadlineExceededError     the action (all attempts) outlived ``deadline``
    │   │   ├── OOMError (MemoryError) a remote attempt held more memory than its request
    │   │   ├── NonRecoverableError    raise it to fail at once: no retry can help
    │   │   ├── InlineIOMaxBytesBreached inputs or outputs over ``max_inline_io_bytes``
    │   │   └── RemoteTaskError        a remote action failed with an exception that cannot be
    │   │                              rebuilt here (its type, message and traceback are kept)
    │   └── RuntimeSystemError         loom could not run the attempt
    ├── SerializationError             a value could not be encoded or decoded by the type engine
    ├── TaskLoadError                  a task file could not be found, imported or searched
    ├── BundleError                    the source tree could not be packaged or unpacked
    ├── IdeInstallError                code-server, JupyterLab or an extension could not be
    │                                  installed (the message names the command that fixes it)
    └── ApiError                       the control plane refused a request or cannot be reached
        ├── ServerUnreachableError     nothing answers at the configured endpoint
        ├── AuthenticationError        the API key is missing or wrong (HTTP 401)
        ├── NotFoundError (LookupError) the run, action, project or key does not exist (HTTP 404)
        └── PayloadTooLargeError       inputs or outputs exceed the server's limit (HTTP 413)

Exceptions raised by *user code* inside a task are never wrapped: they reach the caller with
their own type, message and traceback. Once they leave the task they are *also* instances of
:class:`RuntimeUserError`, with ``.code`` the name of their type, so both ``except ValueError``
and Flyte 2's ``except RuntimeUserError as e: if e.code == "ValueError"`` catch them.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ApiError",
    "AuthenticationError",
    "BaseRuntimeError",
    "BundleError",
    "ConfigError",
    "DeadlineExceededError",
    "IdeInstallError",
    "InlineIOMaxBytesBreached",
    "InputError",
    "LoomError",
    "MaxQueuedTimeExceededError",
    "MaxRuntimeExceededError",
    "MissingSecretError",
    "NonRecoverableError",
    "NotFoundError",
    "OOMError",
    "OutputTypeError",
    "PayloadTooLargeError",
    "RemoteTaskError",
    "RuntimeSystemError",
    "RuntimeUserError",
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


class BaseRuntimeError(LoomError, RuntimeError):
    """A task's attempt failed. ``code`` names the failure (an exception's type name, or a
    loom code such as ``"OOMError"``); ``kind`` is ``"user"`` or ``"system"``; ``worker`` is
    where it ran, when known."""

    kind = "unknown"

    def __init__(self, code: str, message: str, worker: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.worker = worker


class RuntimeUserError(BaseRuntimeError):
    """The task's own code failed. Exceptions a task raises are instances of this class too
    once they reach the caller (see the module docstring); ``.code`` is their type's name."""

    kind = "user"


class RuntimeSystemError(BaseRuntimeError):
    """loom could not run the attempt (not the task's fault)."""

    kind = "system"


class _NamedUserError(RuntimeUserError):
    """Base of loom's own user errors that take just a message, like built-in exceptions."""

    def __init__(self, message: str = "", code: str | None = None) -> None:
        super().__init__(code or type(self).__name__, message)

    def __reduce__(self) -> Any:  # rebuilt from the message, as the class's signature says
        return (type(self), (str(self), self.code), self.__dict__)


class TaskTimeoutError(_NamedUserError, TimeoutError):
    """An action outlived a bound of its task's ``Timeout``; the subclasses say which one
    (this class itself when the bound is not known)."""


class MaxRuntimeExceededError(TaskTimeoutError):
    """An attempt ran longer than ``Timeout(max_runtime=...)`` (retried if retries are left)."""


class MaxQueuedTimeExceededError(TaskTimeoutError):
    """An attempt waited longer than ``Timeout(max_queued_time=...)`` to start running (for
    capacity on the control plane; locally for a thread or a serialized cache's holder)."""


class DeadlineExceededError(TaskTimeoutError):
    """The action did not end within ``Timeout(deadline=...)`` of being called, across all its
    attempts; never retried."""


class OOMError(_NamedUserError, MemoryError):
    """A remote attempt held more memory than its ``Resources(memory=...)`` and was killed;
    the message names the limit and the peak. Catch it in a parent to retry with more."""


class NonRecoverableError(_NamedUserError):
    """Raise it in a task to fail the action at once, without spending its retries."""


class InlineIOMaxBytesBreached(_NamedUserError):
    """A task's inputs or outputs, encoded, are larger than its ``max_inline_io_bytes``."""


# -- user exceptions as RuntimeUserError ------------------------------------------------------

_USER_ERROR_CLASSES: dict[type[BaseException], type[BaseException]] = {}


def _user_error_class(cls: type[BaseException]) -> type[BaseException] | None:
    """``cls`` that is also a :class:`RuntimeUserError`, named like ``cls`` (cached)."""
    made = _USER_ERROR_CLASSES.get(cls)
    if made is None:
        try:
            made = type(
                cls.__name__,
                (cls, RuntimeUserError),
                {
                    "__module__": cls.__module__,
                    "__qualname__": cls.__qualname__,
                    "__reduce__": _reduce_user_error,
                    "code": cls.__name__,
                    "worker": None,
                    "_loom_original": cls,
                },
            )
        except TypeError:  # incompatible layouts or metaclass: leave the exception as it is
            return None
        _USER_ERROR_CLASSES[cls] = made
    return made


def as_user_error(error: BaseException) -> BaseException:
    """``error`` made also a :class:`RuntimeUserError`: in place where Python allows it (for
    classes defined in Python), else as a copy of it (built-in types), keeping its message,
    attributes, cause and traceback. Raise the returned object."""
    if isinstance(error, BaseRuntimeError) or not isinstance(error, Exception):
        return error
    made = _user_error_class(type(error))
    if made is None:
        return error
    try:
        error.__class__ = made  # type: ignore[assignment]
        return error
    except TypeError:  # a built-in exception's class cannot change: copy it
        pass
    try:
        cls = type(error)  # built-in: its constructor takes exactly its args
        copy = cls.__new__(made, *error.args)
        cls.__init__(copy, *error.args)
        if isinstance(error, OSError):  # its fields are not all rebuilt from args
            for field in ("errno", "strerror", "filename", "filename2"):
                if getattr(error, field) is not None:
                    setattr(copy, field, getattr(error, field))
        copy.__dict__.update(error.__dict__)
    except Exception:
        return error
    copy.__cause__ = error.__cause__
    copy.__suppress_context__ = True  # raising the copy must not chain the original
    return copy.with_traceback(error.__traceback__)


def raised_by_user_code(error: BaseException) -> bool:
    """Whether ``error`` came from a task's own code (also when it is marked as a
    :class:`RuntimeUserError`), rather than from loom itself."""
    return (
        not isinstance(error, LoomError)
        or type(error) in _USER_ERROR_CLASSES.values()
        or isinstance(error, RemoteTaskError)
    )


def _reduce_user_error(self: BaseException) -> Any:
    # Pickled as the original class (importable anywhere), marked again when unpickled.
    original: type[BaseException] = type(self)._loom_original  # type: ignore[attr-defined]
    reduced = list(original.__reduce__(self))
    if reduced[0] is type(self):
        reduced[0] = original
    return (_rebuild_user_error, (tuple(reduced),))


def _rebuild_user_error(reduced: Any) -> BaseException:
    rebuild, args, *rest = reduced
    error: BaseException = rebuild(*args)
    state = rest[0] if rest else None
    if state:
        if hasattr(error, "__setstate__"):
            error.__setstate__(state)
        else:
            error.__dict__.update(state)
    return as_user_error(error)


class SerializationError(LoomError):
    """A value could not be encoded or decoded by the type engine."""


class TaskLoadError(LoomError):
    """A task file could not be found or imported, or does not define the task asked for."""


class BundleError(LoomError):
    """The source tree could not be packaged, or a bundle could not be unpacked safely."""


class RemoteTaskError(RuntimeUserError):
    """A remote action failed with an exception whose type cannot be rebuilt in this process;
    ``code`` is that type's name, ``type_name`` its qualified name."""

    def __init__(self, type_name: str, message: str, traceback: str = "") -> None:
        super().__init__(type_name.rpartition(".")[2], f"{type_name}: {message}")
        self.type_name = type_name
        self.remote_traceback = traceback

    def __reduce__(self) -> Any:
        message = str(self).removeprefix(f"{self.type_name}: ")
        return (type(self), (self.type_name, message, self.remote_traceback), self.__dict__)


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
