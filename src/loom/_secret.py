"""A reference to a named secret a task needs."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import TaskDefinitionError


@dataclass(frozen=True, slots=True)
class Secret:
    """A secret made available to a task.

    ``as_env_var`` names the environment variable the value appears in; when neither it nor
    ``mount`` is given, the variable is the key upper-cased with non-alphanumerics turned into
    ``_``. ``mount`` asks for the value as a file instead (see ``loom.ctx().secrets.path``).
    In local mode values come from ``LOOM_SECRET_<KEY>`` or the local secrets file.
    """

    key: str
    as_env_var: str | None = None
    mount: str | None = None

    def __post_init__(self) -> None:
        if not self.key:
            raise TaskDefinitionError("Secret key must not be empty")
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
        return re.sub(r"[^A-Za-z0-9]", "_", self.key).upper()
