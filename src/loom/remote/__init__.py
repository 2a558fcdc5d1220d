"""Talking to a loom control plane: the API client and code bundles."""

from ._bundle import Bundle, extract_bundle, make_bundle, task_location
from ._client import Client, warm_up

__all__ = ["Bundle", "Client", "extract_bundle", "make_bundle", "task_location", "warm_up"]
