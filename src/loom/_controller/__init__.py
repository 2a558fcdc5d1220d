"""Controllers decide where the task calls of a run execute. Local mode: in this process."""

from ._cache_store import LocalCacheStore, cache_store
from ._local import ROOT_ACTION, LocalRun, TraceRecord

__all__ = ["ROOT_ACTION", "LocalCacheStore", "LocalRun", "TraceRecord", "cache_store"]
