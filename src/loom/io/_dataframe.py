"""``DataFrame``: tabular data that travels as Parquet (needs ``loom[dataframe]``).

pandas is the in-memory form; polars frames and pyarrow tables are written and read as
Parquet too when those libraries are installed (``DataFrame.open(polars.DataFrame).all()``).
"""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator, Generator
from typing import Any

from ..errors import LoomError


def require_pandas() -> Any:
    try:
        import pandas
    except ImportError as e:
        raise LoomError(
            "DataFrame support needs pandas and pyarrow: pip install 'loom[dataframe]'"
        ) from e
    return pandas


def frame_kind(tp: Any) -> str | None:
    """``"pandas"``, ``"polars"`` or ``"arrow"`` for a frame type loom can carry, else None."""
    if not isinstance(tp, type):
        return None
    module = tp.__module__.split(".")[0]
    if module == "pandas" and tp.__name__ == "DataFrame":
        return "pandas"
    if module == "polars" and tp.__name__ == "DataFrame":
        return "polars"
    if module == "pyarrow" and tp.__name__ == "Table":
        return "arrow"
    return None


def to_parquet_bytes(df: Any) -> bytes:
    buf = io.BytesIO()
    kind = frame_kind(type(df))
    if kind == "polars":
        df.write_parquet(buf)
    elif kind == "arrow":
        import pyarrow.parquet as pq

        pq.write_table(df, buf)
    else:
        df.to_parquet(buf)
    return buf.getvalue()


def from_parquet_bytes(data: bytes, kind: str = "pandas") -> Any:
    if kind == "polars":
        import polars

        return polars.read_parquet(io.BytesIO(data))
    if kind == "arrow":
        import pyarrow.parquet as pq

        return pq.read_table(io.BytesIO(data))
    return require_pandas().read_parquet(io.BytesIO(data))


def _is_path(value: Any) -> bool:
    return isinstance(value, str | os.PathLike)


class DataFrame:
    """A table passed between tasks: Parquet on the wire.

    ``DataFrame.from_df(frame)`` (or Flyte 2's ``wrap_df``) wraps a pandas or polars frame or a
    pyarrow table; ``DataFrame.from_local("x.parquet")`` references a Parquet file. Read it
    with ``to_pandas()``, or as Flyte 2 code does: ``await df.open(pandas.DataFrame).all()``
    (``all_sync()`` in sync code). Parameters annotated as ``pandas.DataFrame`` or
    ``polars.DataFrame`` work directly too.
    """

    __slots__ = ("_df", "_open_as", "hash", "path")

    def __init__(self, df: Any = None, path: str | None = None, hash: str | None = None) -> None:
        if (df is None) == (path is None):
            raise ValueError("DataFrame needs exactly one of df= or path=")
        self._df = df
        self.path = path
        self.hash = hash
        self._open_as: Any = None

    @classmethod
    def from_df(cls, val: Any = None, uri: str | None = None) -> DataFrame:
        """Wrap an in-memory frame (or, with ``uri``, reference a Parquet file)."""
        if val is None and uri is not None:
            return cls.from_existing_remote(uri)
        return cls(df=val)

    @classmethod
    def wrap_df(cls, val: Any = None, uri: str | None = None) -> DataFrame:
        """Flyte 2's name for :meth:`from_df`."""
        return cls.from_df(val, uri)

    @classmethod
    def from_local_sync(
        cls,
        df: Any,
        columns: Any = None,
        remote_destination: str | None = None,
        hash_method: Any = None,
    ) -> DataFrame:
        """A frame, or the path of a Parquet file. ``hash_method`` (a string, or a function of
        the frame returning one) is what cached tasks key this input on."""
        del columns, remote_destination  # Flyte's; loom stores the data itself
        if _is_path(df):
            if not os.path.isfile(df):
                raise FileNotFoundError(f"DataFrame.from_local: {df} is not an existing file")
            frame = cls(path=os.path.abspath(df))
        else:
            frame = cls(df=df)
        if isinstance(hash_method, str):
            frame.hash = hash_method
        elif hash_method is not None:  # a HashFunction (update/result), or a plain function
            if hasattr(hash_method, "update"):
                hash_method.update(df)
                frame.hash = str(hash_method.result())
            else:
                frame.hash = str(hash_method(df))
        return frame

    @classmethod
    def from_local(
        cls,
        df: Any,
        columns: Any = None,
        remote_destination: str | None = None,
        hash_method: Any = None,
    ) -> DataFrame:
        """:meth:`from_local_sync`, also awaitable: Flyte 2 code awaits it, loom's does not."""
        return cls.from_local_sync(df, columns, remote_destination, hash_method)

    def __await__(self) -> Generator[Any, None, DataFrame]:
        async def itself() -> DataFrame:
            return self

        return itself().__await__()  # awaiting a DataFrame gives it at once

    @classmethod
    def from_existing_remote(cls, remote_path: str, format: str = "parquet", **_: Any) -> DataFrame:
        """Reference Parquet data already stored (a local path or a ``loom://data/`` URI)."""
        if format != "parquet":
            raise ValueError(
                f"DataFrame.from_existing_remote: only parquet is supported, got {format!r}"
            )
        return cls(path=remote_path)

    def open(self, dataframe_type: Any) -> DataFrame:
        """Choose the type :meth:`all` gives: ``pandas.DataFrame``, ``polars.DataFrame`` or
        ``pyarrow.Table``."""
        if frame_kind(dataframe_type) is None:
            raise TypeError(
                f"DataFrame.open: cannot give {dataframe_type!r}; use pandas.DataFrame, "
                "polars.DataFrame or pyarrow.Table"
            )
        self._open_as = dataframe_type
        return self

    def to_pandas(self) -> Any:
        return self._as("pandas")

    def _as(self, kind: str) -> Any:
        df = self._df
        if df is not None and frame_kind(type(df)) == kind:
            return df
        if df is None:
            assert self.path is not None
            with open(self._local_path(), "rb") as f:
                converted = from_parquet_bytes(f.read(), kind)
            if kind == "pandas":
                self._df = converted  # the usual case: read once
            return converted
        return from_parquet_bytes(to_parquet_bytes(df), kind)

    def _local_path(self) -> str:
        assert self.path is not None
        from ._remote import fetch, is_data_uri

        return str(fetch(self.path, tree=False)) if is_data_uri(self.path) else self.path

    def parquet_bytes(self) -> bytes:
        """The table as Parquet, as it travels."""
        if self._df is not None:
            return to_parquet_bytes(self._df)
        with open(self._local_path(), "rb") as f:
            return f.read()

    def all_sync(self) -> Any:
        """The whole table, as the type given to :meth:`open` (default: pandas)."""
        return self._as(frame_kind(self._open_as) or "pandas")

    async def all(self) -> Any:
        """Async form of :meth:`all_sync`."""
        import asyncio

        return await asyncio.to_thread(self.all_sync)

    async def iter(self) -> AsyncIterator[Any]:
        """The table in parts (one part: loom reads Parquet whole)."""
        yield await self.all()

    def __getitem__(self, index: int) -> DataFrame:
        """Flyte 2's ``run.outputs()[0]`` when a task returns one table: the table itself
        (a table is not otherwise indexable)."""
        if index in (0, -1):
            return self
        raise IndexError("a run whose task returns a DataFrame has one output, [0]")

    def __repr__(self) -> str:
        return f"DataFrame(path={self.path!r})" if self.path else "DataFrame(<in memory>)"
