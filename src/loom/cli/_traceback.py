"""Tracebacks trimmed to the user's own frames (see :mod:`loom._tracebacks`)."""

from __future__ import annotations

from .._tracebacks import format_user_traceback, trim_traceback_text

__all__ = ["format_user_traceback", "trim_traceback_text"]
