"""What the remote objects share: phases by name, time filters, settings and JSON."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from .. import wire
from .._settings import Settings, from_init
from ..errors import ConfigError
from ._client import Client


@dataclass(frozen=True)
class TimeFilter:
    """Keep what happened at or after ``after`` and before ``before`` (either may be left
    out); naive datetimes are taken as UTC."""

    after: datetime | None = None
    before: datetime | None = None

    def admits(self, at: datetime | None) -> bool:
        if at is None:
            return self.after is None and self.before is None
        at = utc(at)
        if self.after is not None and at < utc(self.after):
            return False
        return self.before is None or at < utc(self.before)


def utc(at: datetime) -> datetime:
    """``at`` with a time zone (naive datetimes from the wire are UTC)."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


def phases(names: Iterable[str | wire.Phase] | None) -> frozenset[wire.Phase] | None:
    """Phases from their names in any case (Flyte writes ``"running"``, loom ``RUNNING``)."""
    if names is None:
        return None
    if isinstance(names, str):  # in_phase="running": a one-phase filter, not six letters
        names = (names,)
    found = set()
    for name in names:
        try:
            found.add(wire.Phase(str(name).upper()))
        except ValueError:
            known = ", ".join(p.value.lower() for p in wire.Phase)
            raise ValueError(f"unknown phase {name!r}: one of {known}") from None
    return frozenset(found)


# -- settings: ``loom.init`` keeps them in the run layer, which this package sits below ----


def _initialised_or_loaded() -> Settings:
    return from_init() or Settings.load()


_settings_source: Callable[[], Settings] = _initialised_or_loaded


def use_settings(source: Callable[[], Settings]) -> None:
    """Where remote objects get the process's settings (``loom.init``'s), for the layer above
    to say: this package may not import it."""
    global _settings_source
    _settings_source = source


def current_settings() -> Settings:
    """The settings remote objects use: ``loom.init``'s once the run layer said where they
    are (see :func:`use_settings`), else read from ``LOOM_*`` and the config file."""
    return _settings_source()


def client_for(settings: Settings) -> Client:
    """A client for the configured endpoint, or a clear error saying how to configure one."""
    if not settings.endpoint:
        raise ConfigError(
            "no loom server is configured: start one with `loom server start` (it writes "
            f"{settings.config_path}), or set LOOM_ENDPOINT and LOOM_API_KEY"
        )
    return Client(settings.endpoint, settings.api_key)


def run_url(settings: Settings, run: str) -> str:
    """Where the server's UI shows run ``run``."""
    assert settings.endpoint is not None
    return f"{settings.endpoint.rstrip('/')}/runs/{run}"


def dump_json(models: dict[str, BaseModel | Any], indent: int | None) -> str:
    """JSON of named parts (models as their wire JSON; datetimes as ISO 8601)."""
    doc = {
        k: v.model_dump(mode="json") if isinstance(v, BaseModel) else v for k, v in models.items()
    }
    return json.dumps(doc, indent=indent, default=str)
