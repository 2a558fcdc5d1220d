"""The one typed settings object. Nothing else in loom reads environment variables.

Precedence, highest first: explicit arguments (``loom.init(...)``), ``LOOM_*`` environment
variables, the configuration file (``LOOM_CONFIG``, default ``~/.loom/config.yaml``), defaults.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError

_SECRET_PREFIX = "LOOM_SECRET_"


def secret_env_name(key: str) -> str:
    """The environment variable that holds secret ``key`` in local mode."""
    return _SECRET_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", key).upper()


@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob loom reads from its environment, resolved once."""

    home: Path
    config_path: Path
    secrets_file: Path
    cache_dir: Path
    ide_dir: Path
    #: inside an interactive session: the session's ``.loom/session.json`` (who to resume)
    session_file: Path | None = None
    #: where a remote interactive attempt's IDE puts its socket: a private directory the
    #: server made for the attempt (the session proxy connects nowhere else)
    session_dir: Path | None = None
    project: str = "default"
    domain: str = "development"
    endpoint: str | None = None
    api_key: str | None = None
    local_threads: int = 64
    #: seconds between an action process's heartbeats (the server sets it for its runtimes)
    heartbeat_interval_s: float = 10.0
    #: seconds an action process keeps trying to reach a server that is away (restarting)
    #: before it gives up: its reports are held meanwhile, and delivered when it is back
    server_patience_s: float = 600.0
    env_secrets: dict[str, str] = field(default_factory=dict, repr=False)
    #: the data directory of the server ``loom server start`` started for this configuration
    #: (how ``loom server stop|status`` find it without flags)
    server_data_dir: Path | None = None
    #: the top of the source tree remote runs ship (``init(root_dir=...)``); ``None``: found
    #: from the task's file (the first directory above it that is not a package)
    root_dir: Path | None = None

    @classmethod
    def load(cls, config_path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
        """Read the environment and the configuration file, then apply ``overrides``."""
        env = os.environ
        home = Path(env.get("LOOM_HOME") or Path.home() / ".loom").expanduser()
        explicit_config = config_path is not None
        cfg_path = Path(config_path or env.get("LOOM_CONFIG") or home / "config.yaml").expanduser()
        values: dict[str, Any] = {
            "home": home,
            "config_path": cfg_path,
            "secrets_file": Path(env.get("LOOM_SECRETS_FILE") or home / "secrets.yaml"),
            "cache_dir": Path(env.get("LOOM_CACHE_DIR") or home / "cache"),
            "ide_dir": Path(env.get("LOOM_IDE_DIR") or home / "ide").expanduser(),
            "session_file": Path(v) if (v := env.get("LOOM_SESSION_FILE")) else None,
            "session_dir": Path(v) if (v := env.get("LOOM_SESSION_DIR")) else None,
        }
        values.update(_read_config_file(cfg_path, required=explicit_config))
        if values.get("server_data_dir"):
            values["server_data_dir"] = Path(values["server_data_dir"]).expanduser()
        for name, var in (
            ("project", "LOOM_PROJECT"),
            ("domain", "LOOM_DOMAIN"),
            ("endpoint", "LOOM_ENDPOINT"),
            ("api_key", "LOOM_API_KEY"),
            ("local_threads", "LOOM_LOCAL_THREADS"),
            ("heartbeat_interval_s", "LOOM_HEARTBEAT_INTERVAL"),
            ("server_patience_s", "LOOM_SERVER_PATIENCE"),
        ):
            if env.get(var):
                values[name] = env[var]
        values["env_secrets"] = {k: v for k, v in env.items() if k.startswith(_SECRET_PREFIX)}
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            values["local_threads"] = int(values.get("local_threads", 64))
        except ValueError as e:
            raise ConfigError(
                f"LOOM_LOCAL_THREADS must be a whole number, got {values['local_threads']!r}"
            ) from e
        if values["local_threads"] < 1:
            raise ConfigError("LOOM_LOCAL_THREADS must be at least 1")
        values["heartbeat_interval_s"] = _seconds(values, "heartbeat_interval_s", 10.0)
        if not values["heartbeat_interval_s"] > 0:
            raise ConfigError("LOOM_HEARTBEAT_INTERVAL must be more than 0 seconds")
        values["server_patience_s"] = _seconds(values, "server_patience_s", 600.0)
        if not values["server_patience_s"] >= 0:
            raise ConfigError("LOOM_SERVER_PATIENCE cannot be negative")
        return cls(**values)

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with the given non-``None`` fields replaced."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


_from_init: Settings | None = None


def remember_init(settings: Settings) -> None:
    """Keep what ``loom.init``/``init_from_config`` configured, for every layer to read."""
    global _from_init
    _from_init = settings


def from_init() -> Settings | None:
    """The settings ``loom.init``/``init_from_config`` configured, if either was called."""
    return _from_init


_SECONDS_VARS = {
    "heartbeat_interval_s": "LOOM_HEARTBEAT_INTERVAL",
    "server_patience_s": "LOOM_SERVER_PATIENCE",
}


def _seconds(values: dict[str, Any], name: str, default: float) -> float:
    """A number of seconds read as text, or a :class:`ConfigError` naming its variable."""
    try:
        return float(values.get(name, default))
    except ValueError as e:
        raise ConfigError(
            f"{_SECONDS_VARS[name]} must be a number of seconds, got {values[name]!r}"
        ) from e


_CONFIG_KEYS = {f.name for f in fields(Settings)} & {
    "project",
    "domain",
    "endpoint",
    "api_key",
    "server_data_dir",
}


def read_yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    """A YAML file that must hold a mapping, or a :class:`ConfigError` saying what is wrong."""
    import yaml  # only paid for when such a file exists

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read {what} {path}: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must hold a mapping of keys to values")
    return {str(k): v for k, v in data.items()}


def _read_config_file(path: Path, *, required: bool) -> dict[str, Any]:
    if not path.exists():
        if required:
            raise ConfigError(
                f"configuration file {path} does not exist; create it or omit the path to use "
                "the defaults"
            )
        return {}
    data = read_yaml_mapping(path, "configuration file")
    unknown = sorted(set(data) - _CONFIG_KEYS)
    if unknown:
        raise ConfigError(
            f"configuration file {path} has unknown keys {unknown}; "
            f"known keys are {sorted(_CONFIG_KEYS)}"
        )
    return {k: str(v) for k, v in data.items() if v is not None}
