"""Controllers decide where the task calls of a run execute. Local mode: in this process."""

from ._cache_store import LocalCacheStore, cache_store
from ._local import ROOT_ACTION, LocalRun

__all__ = ["ROOT_ACTION", "LocalCacheStore", "LocalRun", "cache_store"]
