"""Tracebacks trimmed to the user's own frames."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import traceback
from pathlib import Path

import click

# Frames from these places are machinery, not the user's code.
_INTERNAL_DIRS = (
    str(Path(__file__).resolve().parent.parent) + "/",  # the loom package
    str(Path(asyncio.__file__).resolve().parent) + "/",
    str(Path(concurrent.futures.__file__).resolve().parent) + "/",
    str(Path(click.__file__).resolve().parent) + "/",
    threading.__file__,
)


def _user_frames(tbe: traceback.TracebackException) -> None:
    frames = [f for f in tbe.stack if not f.filename.startswith(_INTERNAL_DIRS)]
    tbe.stack = traceback.StackSummary.from_list(frames or list(tbe.stack))
    for linked in (tbe.__cause__, tbe.__context__):
        if linked is not None:
            _user_frames(linked)


def format_user_traceback(error: BaseException) -> str:
    """The traceback of ``error`` without loom's, asyncio's and click's frames."""
    tbe = traceback.TracebackException.from_exception(error)
    _user_frames(tbe)
    return "".join(tbe.format())
