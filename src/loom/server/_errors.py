"""The server's exceptions; each maps to one HTTP status (see the package docstring)."""

from __future__ import annotations


class ServerError(Exception):
    """Root of every error the control plane raises on its own account."""

    status_code = 500


class ConfigurationError(ServerError):
    """The server's settings are invalid; raised before it starts serving."""


class BadRequestError(ServerError):
    """The request is well-formed JSON but cannot be honoured as asked."""

    status_code = 400


class AuthenticationError(ServerError):
    """No API key, or one the server does not know."""

    status_code = 401


class PermissionDeniedError(ServerError):
    """The API key is valid but may not do this."""

    status_code = 403


class NotFoundError(ServerError):
    """A named project, run, action, attempt, bundle or key does not exist."""

    status_code = 404


class ConflictError(ServerError):
    """The request contradicts the current state (a stale attempt, a duplicate name...)."""

    status_code = 409


class UnprocessableError(ServerError):
    """A value the wire models cannot check (inputs, outputs) is not valid JSON."""

    status_code = 422


class PayloadTooLargeError(ServerError):
    """Inputs, outputs or a bundle exceed a size limit."""

    status_code = 413


class StorageFullError(ServerError):
    """The server's disk (its database or object store) has no room left."""

    status_code = 507
