"""Flyte 2's storage settings, accepted so programs that pass them run unchanged.

``loom.init_from_config(storage=loom.storage.S3.auto(region=...))`` is accepted and has no
effect: a loom server keeps run data in its own object store (its data directory), so
clients and tasks never talk to a bucket. The classes check their arguments' names and keep
them, nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ABFS", "GCS", "S3", "Storage"]


@dataclass
class Storage:
    """Where Flyte 2 would keep a run's data; ignored by loom (see the module docstring)."""

    retries: int = 3
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def auto(cls, **options: Any) -> Storage:
        """Settings from the environment, in Flyte 2; here the given options, kept."""
        return cls(options=options)


@dataclass
class S3(Storage):
    endpoint: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    region: str | None = None

    @classmethod
    def auto(cls, region: str | None = None, **options: Any) -> S3:
        return cls(region=region, options=options)

    @classmethod
    def for_sandbox(cls) -> S3:
        return cls()


@dataclass
class GCS(Storage):
    pass


@dataclass
class ABFS(Storage):
    account_name: str | None = None
    account_key: str | None = field(default=None, repr=False)
