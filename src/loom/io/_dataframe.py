"""``DataFrame``: tabular data that travels as Parquet (needs ``loom[dataframe]``)."""

from __future__ import annotations

import io
import os
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


def to_parquet_bytes(df: Any) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf)
    return buf.getvalue()


def from_parquet_bytes(data: bytes) -> Any:
    return require_pandas().read_parquet(io.BytesIO(data))


class DataFrame:
    """A table passed between tasks; pandas in memory, Parquet on the wire.

    ``DataFrame.from_df(pandas_df)`` wraps a frame, ``DataFrame.from_local("x.parquet")``
    references a Parquet file; ``to_pandas()`` gives a ``pandas.DataFrame`` either way.
    Parameters annotated as ``pandas.DataFrame`` work directly too.
    """

    __slots__ = ("_df", "path")

    def __init__(self, df: Any = None, path: str | None = None) -> None:
        if (df is None) == (path is None):
            raise ValueError("DataFrame needs exactly one of df= or path=")
        self._df = df
        self.path = path

    @classmethod
    def from_df(cls, df: Any) -> DataFrame:
        return cls(df=df)

    @classmethod
    def from_local(cls, path: str | os.PathLike[str]) -> DataFrame:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"DataFrame.from_local: {path} is not an existing file")
        return cls(path=os.path.abspath(path))

    def to_pandas(self) -> Any:
        if self._df is None:
            assert self.path is not None
            self._df = require_pandas().read_parquet(self.path)
        return self._df

    async def all(self) -> Any:
        """The whole table as a ``pandas.DataFrame``."""
        return self.to_pandas()

    def __repr__(self) -> str:
        return f"DataFrame(path={self.path!r})" if self.path else "DataFrame(<in memory>)"
