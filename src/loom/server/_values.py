"""Where the server keeps an action's inputs and outputs (JSON): by a key of ``values/``.

Values are content-addressed: identical inputs or outputs are stored once, and a key never
changes meaning, so a re-submitted action can never clobber another's inputs. A small value
(most of them: a number, a short string, a file's reference) is its own key, ``=`` and its
JSON, and needs no object at all: a file (or an object in a remote store) per value costs
more than the action that made it.
"""

from __future__ import annotations

import hashlib

from ._objects import ObjectStore

#: The longest JSON kept in its key (keys are columns of 255 characters).
INLINE_BYTES = 240
_INLINE = "="


def put_value(store: ObjectStore, data: bytes) -> str:
    """Keep ``data`` (JSON), in its key if it is small, else in ``store``; return the key."""
    if len(data) <= INLINE_BYTES:
        return _INLINE + data.decode()
    key = f"values/{hashlib.sha256(data).hexdigest()}.json"
    store.put_content(key, data)
    return key


def read_value(store: ObjectStore, key: str) -> bytes:
    """The value kept under ``key`` (``NotFoundError`` if its object is gone)."""
    if key.startswith(_INLINE):
        return key[len(_INLINE) :].encode()
    return store.get_bytes(key)
