"""Tracebacks trimmed to the user's own frames: of a live exception (local runs), or as text
(a remote action's reported traceback), the same way the web UI trims them."""

from __future__ import annotations

import re
import traceback
from pathlib import Path

#: Frames of loom's own machinery, asyncio's, and the CLI's: the user did not write them.
_INTERNAL_FRAME = re.compile(
    r"/(site-packages|src)/loom/|/asyncio/|/concurrent/futures/|/threading\.py$|"
    r"/(site|dist)-packages/click/|/dist-packages/loom/"
)
_LOOM_DIR = str(Path(__file__).resolve().parent) + "/"
#: loom's notes on an exception (the action that raised it, its remote traceback)
_NOTE_MARK = "[loom] "
_FRAME_LINE = re.compile(r'^\s*File "([^"]+)", line \d+')
#: A remote action's code runs from a content-addressed bundle: its paths, as the user knows them.
_BUNDLE_PATH = re.compile(r'"[^"]*/bundles/[0-9a-f]{64}/')


def _internal(filename: str) -> bool:
    return filename.startswith(_LOOM_DIR) or bool(_INTERNAL_FRAME.search(filename))


def _trim(tbe: traceback.TracebackException) -> None:
    frames = [f for f in tbe.stack if not _internal(f.filename)]
    tbe.stack = traceback.StackSummary.from_list(frames or list(tbe.stack))
    for linked in (tbe.__cause__, tbe.__context__):
        if linked is not None:
            _trim(linked)


def format_user_traceback(error: BaseException) -> str:
    """The traceback of ``error`` without loom's, asyncio's and click's frames."""
    tbe = traceback.TracebackException.from_exception(error)
    _trim(tbe)
    return trim_traceback_text("".join(tbe.format()))


def trim_traceback_text(text: str) -> str:
    """A formatted traceback without internal frames (each with its source and caret
    lines), with bundle paths made relative; a traceback of internal frames only stays."""
    out: list[str] = []
    skipping = False
    kept_frames = hidden = 0
    notes: set[str] = set()
    for line in text.splitlines():
        if line.startswith(_NOTE_MARK):
            if line in notes:  # a child's note, repeated in its remote traceback
                continue
            notes.add(line)
        frame = _FRAME_LINE.match(line)
        if frame:
            skipping = _internal(frame.group(1))
            if skipping:
                hidden += 1
            else:
                kept_frames += 1
                out.append(_BUNDLE_PATH.sub('"', line))
            continue
        if skipping and re.match(r"^\s{4,}\S", line):
            continue  # the hidden frame's source and carets
        skipping = False
        out.append(line)
    if hidden and not kept_frames:
        return text  # nothing of the user's in it: loom's frames are the story
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")
