"""Secrets in local mode: ``LOOM_SECRET_<KEY>`` variables, then the local secrets file."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

from .._settings import Settings, read_yaml_mapping, secret_env_name
from ..errors import MissingSecretError

log = logging.getLogger("loom")


class LocalSecrets:
    """Resolves secret values for one local run; the file is read at most once."""

    def __init__(self, settings: Settings) -> None:
        self._env = settings.env_secrets
        self._file = settings.secrets_file
        self._from_file: dict[str, str] | None = None

    def get(self, key: str) -> str:
        var = secret_env_name(key)
        if var in self._env:
            return self._env[var]
        values = self._file_values()
        if key in values:
            return values[key]
        raise MissingSecretError(
            f"secret {key!r} is not set. In local mode, export {var}=... or add "
            f"'{key}: ...' to {self._file}"
        )

    def _file_values(self) -> dict[str, str]:
        if self._from_file is None:
            self._from_file = _read_secrets_file(self._file)
        return self._from_file


def _read_secrets_file(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("secrets file %s is readable by others; run: chmod 600 %s", path, path)
    return {k: str(v) for k, v in read_yaml_mapping(path, "secrets file").items()}
