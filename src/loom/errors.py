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
    ├── SerializationError             a value could not be encoded or decoded by the type engine
    └── TaskLoadError                  a task file could not be found, imported or searched

Exceptions raised by *user code* inside a task are never wrapped: they reach the caller with
their own type, message and traceback.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "InputError",
    "LoomError",
    "MissingSecretError",
    "OutputTypeError",
    "SerializationError",
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


class SerializationError(LoomError):
    """A value could not be encoded or decoded by the type engine."""


class TaskLoadError(LoomError):
    """A task file could not be found or imported, or does not define the task asked for."""
