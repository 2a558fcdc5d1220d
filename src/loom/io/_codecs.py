"""Type-engine codecs for the io types (registered when ``loom.io`` is imported)."""

from __future__ import annotations

import base64
from typing import Any

from ..types import BlobStore, Codec, register_codec_factory
from ..wire import VALUE_TAG, ValueKind
from ._dataframe import DataFrame, frame_kind, from_parquet_bytes, to_parquet_bytes
from ._dir import Dir
from ._file import File
from ._remote import fetch, is_data_uri


class _RefCodec(Codec):
    """``File`` / ``Dir``: the store keeps a content-addressed copy when there is a store (in
    remote mode, the server's object store: ``path`` becomes a ``loom://data/`` reference)."""

    __slots__ = ()
    by_reference = True

    def check(self, value: Any) -> bool:
        return isinstance(value, self.tp)

    def encode(self, value: Any, store: BlobStore | None) -> Any:
        path = value.path
        # a reference names stored, immutable content already: passed on as it is
        if store is not None and not is_data_uri(path):
            path = store.put_file(path) if self.tp is File else store.put_dir(path)
        kind = ValueKind.FILE if self.tp is File else ValueKind.DIR
        data = {VALUE_TAG: kind.value, "path": path, "name": value.name}
        # only when set: the values (and cache keys) of plain files stay as they were
        if value.format:
            data["format"] = value.format
        if value.hash is not None:
            data["hash"] = value.hash
        return data

    def decode(self, data: Any, store: BlobStore | None) -> Any:
        return self.tp(
            path=data["path"],
            name=data.get("name"),
            format=data.get("format", ""),
            hash=data.get("hash"),
        )


class _FrameCodec(Codec):
    """``loom.io.DataFrame``, or a pandas/polars frame or pyarrow table, as Parquet."""

    __slots__ = ("kind",)

    def __init__(self, tp: Any, kind: str | None) -> None:
        super().__init__(tp)
        self.kind = kind  # None: wrapped in loom.io.DataFrame

    def check(self, value: Any) -> bool:
        return isinstance(value, self.tp)

    def coerce(self, value: Any) -> Any:
        # as Flyte 2's type engine does at a task's boundary: a loom DataFrame where a frame
        # type is declared becomes that type, and a frame where a DataFrame is, is wrapped
        if self.kind is not None and isinstance(value, DataFrame):
            return value.open(self.tp).all_sync()
        if self.kind is None and frame_kind(type(value)) is not None:
            return DataFrame(df=value)
        return value

    coerce_output = coerce  # the same conversion for what a task returns

    def encode(self, value: Any, store: BlobStore | None) -> Any:
        data = value.parquet_bytes() if self.kind is None else to_parquet_bytes(value)
        encoded: dict[str, Any] = {VALUE_TAG: ValueKind.DATAFRAME.value}
        if store is None:
            encoded["parquet_b64"] = base64.b64encode(data).decode()
        else:
            encoded["parquet"] = store.put_bytes(data, "data.parquet")
        if self.kind is None and value.hash is not None:
            encoded["hash"] = value.hash  # what a cache key counts (see cache_key)
        return encoded

    def decode(self, data: Any, store: BlobStore | None) -> Any:
        if "parquet" in data:
            path = data["parquet"]
            if is_data_uri(path):
                path = fetch(path, tree=False, store=store)
            with open(path, "rb") as f:
                raw = f.read()
        else:
            raw = base64.b64decode(data["parquet_b64"])
        if self.kind is None:
            return DataFrame(df=from_parquet_bytes(raw), hash=data.get("hash"))
        return from_parquet_bytes(raw, self.kind)


def _io_codecs(tp: Any) -> Codec | None:
    if tp is File or tp is Dir:
        return _RefCodec(tp)
    if tp is DataFrame:
        return _FrameCodec(tp, None)
    kind = frame_kind(tp)
    if kind is not None:
        return _FrameCodec(tp, kind)
    return None


register_codec_factory(_io_codecs)
