"""A reference to a named secret a task needs."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from .errors import TaskDefinitionError


@dataclass(frozen=True, slots=True)
class Secret:
    """A secret made available to a task; the fields are Flyte 2's, in its order.

    ``key`` names the secret in loom's store. ``as_env_var`` names the environment variable the
    value appears in; when neither it nor ``mount`` is given, the variable is ``key`` (or, with
    a ``group``, ``<group>_<key>``, as in Flyte 2) upper-cased with non-alphanumerics turned
    into ``_``. ``group`` only names that variable: loom's store has no groups (it scopes
    secrets by project and domain instead). ``mount`` asks for the value as a file instead,
    whose path is ``loom.ctx().secrets.path(key)`` (loom does not write to the given
    directory, which Flyte 2 fixes to ``/etc/flyte/secrets``).
    In local mode values come from ``LOOM_SECRET_<KEY>`` or the local secrets file.
    """

    key: str
    group: str | None = None
    mount: str | os.PathLike[str] | None = None
    as_env_var: str | None = None

    def __post_init__(self) -> None:
        if not self.key or not isinstance(self.key, str):
            raise TaskDefinitionError(f"Secret key must not be empty (a string), got {self.key!r}")
        if self.group is not None and (not isinstance(self.group, str) or not self.group):
            raise TaskDefinitionError(
                f"Secret {self.key!r}: group must be a non-empty string, got {self.group!r}"
            )
        if self.mount is not None and not isinstance(self.mount, str):
            object.__setattr__(self, "mount", os.fspath(self.mount))  # (a Path, as in Flyte)
        if self.as_env_var is not None and not re.fullmatch(
            r"[A-Za-z_][A-Za-z0-9_]*", self.as_env_var
        ):
            raise TaskDefinitionError(
                f"Secret {self.key!r}: as_env_var {self.as_env_var!r} is not a valid variable name"
            )

    @property
    def env_var(self) -> str | None:
        """The environment variable this secret is exposed as, if any."""
        if self.as_env_var is not None:
            return self.as_env_var
        if self.mount is not None:
            return None
        name = f"{self.group}_{self.key}" if self.group else self.key
        return re.sub(r"[^A-Za-z0-9]", "_", name).upper()
