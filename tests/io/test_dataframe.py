"""DataFrame: tables that travel as Parquet, wrapped (loom.io.DataFrame) or plain pandas."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

import loom
from loom.io import DataFrame
from loom.types import LocalBlobStore, codec_for


def roundtrip(tp: Any, value: Any, store: LocalBlobStore | None) -> Any:
    codec = codec_for(tp)
    return codec.decode(json.loads(json.dumps(codec.encode(value, store))), store)


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "store")


def simple_frame() -> pd.DataFrame:
    return pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})


def rich_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ints": [1, 2, 3],
            "floats": [0.5, float("nan"), -1.25],
            "strs": ["a", None, "c"],
            "bools": [True, False, True],
            "when": pd.to_datetime(
                ["2024-01-01T00:00:00", "2024-06-30T12:00:00", "1999-12-31T00:00:00"]
            ),
            "when_tz": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"]).tz_localize(
                "UTC"
            ),
            "cat": pd.Categorical(["lo", "hi", "lo"]),
            "nullable": pd.array([1, None, 3], dtype="Int64"),
        },
        index=pd.Index([10, 20, 30], name="key"),
    )


FRAMES = [
    pytest.param(simple_frame, id="simple"),
    pytest.param(rich_frame, id="rich"),
    pytest.param(lambda: pd.DataFrame({"a": pd.Series([], dtype="int64")}), id="empty"),
    pytest.param(
        lambda: pd.DataFrame(
            {"v": [1, 2]}, index=pd.MultiIndex.from_tuples([("a", 1), ("b", 2)], names=["k", "n"])
        ),
        id="multiindex",
    ),
]


@pytest.mark.parametrize("make", FRAMES)
@pytest.mark.parametrize("use_store", [False, True], ids=["inline", "store"])
def test_wrapped_dataframe_round_trip(make: Any, use_store: bool, store: LocalBlobStore) -> None:
    df = make()
    result = roundtrip(DataFrame, DataFrame.from_df(df), store if use_store else None)
    assert type(result) is DataFrame
    assert_frame_equal(result.to_pandas(), df)


@pytest.mark.parametrize("make", FRAMES)
@pytest.mark.parametrize("use_store", [False, True], ids=["inline", "store"])
def test_plain_pandas_dataframe_round_trip(
    make: Any, use_store: bool, store: LocalBlobStore
) -> None:
    df = make()
    result = roundtrip(pd.DataFrame, df, store if use_store else None)
    assert type(result) is pd.DataFrame
    assert_frame_equal(result, df)


def test_inline_encoding_is_base64_parquet() -> None:
    data = codec_for(DataFrame).encode(DataFrame.from_df(simple_frame()), None)
    assert set(data) == {"__loom__", "parquet_b64"} and data["__loom__"] == "dataframe"
    raw = base64.b64decode(data["parquet_b64"])
    assert raw[:4] == b"PAR1"
    assert_frame_equal(pd.read_parquet(io.BytesIO(raw)), simple_frame())


def test_store_encoding_writes_a_parquet_file_into_the_store(store: LocalBlobStore) -> None:
    data = codec_for(pd.DataFrame).encode(simple_frame(), store)
    assert set(data) == {"__loom__", "parquet"} and data["__loom__"] == "dataframe"
    path = Path(data["parquet"])
    assert path.is_relative_to(store.root)
    assert path.name == "data.parquet"
    assert_frame_equal(pd.read_parquet(path), simple_frame())
    # content-addressed: the same frame is stored once, another frame elsewhere
    assert codec_for(pd.DataFrame).encode(simple_frame(), store) == data
    assert codec_for(pd.DataFrame).encode(rich_frame(), store) != data


def test_dataframe_codecs_check_their_own_type() -> None:
    df = simple_frame()
    assert codec_for(DataFrame).check(DataFrame.from_df(df))
    assert not codec_for(DataFrame).check(df)
    assert codec_for(pd.DataFrame).check(df)
    assert not codec_for(pd.DataFrame).check(DataFrame.from_df(df))
    assert not codec_for(pd.DataFrame).check(df.to_dict())
    assert not codec_for(pd.DataFrame).check(df["a"])  # a Series is not a frame


def test_dataframes_inside_containers(store: LocalBlobStore) -> None:
    frames = [simple_frame(), rich_frame()]
    result = roundtrip(list[DataFrame], [DataFrame.from_df(f) for f in frames], store)
    for got, expected in zip(result, frames, strict=True):
        assert_frame_equal(got.to_pandas(), expected)
    assert roundtrip(pd.DataFrame | None, None, store) is None
    mapping = roundtrip(dict[str, pd.DataFrame], {"t": simple_frame()}, None)
    assert_frame_equal(mapping["t"], simple_frame())


# -- DataFrame itself -------------------------------------------------------------------------


def test_from_local_reads_a_parquet_file(tmp_path: Path) -> None:
    path = tmp_path / "table.parquet"
    rich_frame().to_parquet(path)
    frame = DataFrame.from_local(path)
    assert frame.path == str(path.resolve())
    assert "table.parquet" in repr(frame)
    assert_frame_equal(frame.to_pandas(), rich_frame())
    assert_frame_equal(asyncio.run(frame.all()), rich_frame())


@pytest.mark.parametrize("use_store", [False, True], ids=["inline", "store"])
def test_from_local_round_trips_through_the_codec(
    tmp_path: Path, store: LocalBlobStore, use_store: bool
) -> None:
    path = tmp_path / "table.parquet"
    simple_frame().to_parquet(path)
    result = roundtrip(DataFrame, DataFrame.from_local(path), store if use_store else None)
    path.unlink()  # the encoded value does not depend on the original file
    assert_frame_equal(result.to_pandas(), simple_frame())


def test_from_local_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    simple_frame().to_parquet(tmp_path / "t.parquet")
    monkeypatch.chdir(tmp_path)
    frame = DataFrame.from_local("t.parquet")
    assert Path(frame.path).is_absolute()  # type: ignore[arg-type]
    assert_frame_equal(frame.to_pandas(), simple_frame())


def test_from_local_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"DataFrame\.from_local: .*missing\.parquet"):
        DataFrame.from_local(tmp_path / "missing.parquet")
    with pytest.raises(FileNotFoundError):
        DataFrame.from_local(tmp_path)  # a directory is not a file


def test_from_df_keeps_the_frame_in_memory() -> None:
    df = simple_frame()
    frame = DataFrame.from_df(df)
    assert frame.to_pandas() is df
    assert frame.path is None
    assert repr(frame) == "DataFrame(<in memory>)"
    assert asyncio.run(frame.all()) is df


@pytest.mark.parametrize(
    "kwargs", [{}, {"df": pd.DataFrame(), "path": "x.parquet"}], ids=["neither", "both"]
)
def test_constructor_needs_exactly_one_source(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="exactly one of df= or path="):
        DataFrame(**kwargs)


def test_flyte_style_reading_open_all_and_from_local_awaited_or_not(tmp_path: Path) -> None:
    import pyarrow as pa

    from loom.io import HashFunction

    frame = DataFrame.from_df(simple_frame())
    assert_frame_equal(asyncio.run(frame.open(pd.DataFrame).all()), simple_frame())
    assert frame.open(pa.Table).all_sync().column_names == ["a", "b"]
    with pytest.raises(TypeError, match="pandas.DataFrame"):
        frame.open(dict)

    async def awaited() -> DataFrame:
        return await DataFrame.from_local(simple_frame(), hash_method="v1")

    assert asyncio.run(awaited()).hash == "v1"  # Flyte 2 awaits it ...
    path = tmp_path / "t.parquet"
    simple_frame().to_parquet(path)
    assert_frame_equal(DataFrame.from_local(path).to_pandas(), simple_frame())  # ... loom not
    hashed = DataFrame.from_local_sync(
        simple_frame(), hash_method=HashFunction.from_fn(lambda df: f"n{len(df)}")
    )
    assert hashed.hash == "n3"
    assert DataFrame.wrap_df(pa.table({"y": [1]})).to_pandas().y.tolist() == [1]


_boundary = loom.TaskEnvironment("frame-boundary")


@_boundary.task
def wrapped_to_pandas(df: DataFrame) -> pd.DataFrame:
    return df  # type: ignore[return-value]  (converted at the boundary, as Flyte 2 does)


@_boundary.task
def pandas_to_wrapped(df: pd.DataFrame) -> DataFrame:
    return df  # type: ignore[return-value]


@_boundary.task
def takes_pandas(df: pd.DataFrame) -> int:
    return len(df)


def test_frames_convert_between_declared_frame_types_at_task_boundaries() -> None:
    out = loom.run(wrapped_to_pandas, df=DataFrame.from_df(simple_frame())).outputs()
    assert_frame_equal(out.value, simple_frame())
    wrapped = loom.run(pandas_to_wrapped, df=simple_frame()).outputs()
    assert isinstance(wrapped, DataFrame)
    assert_frame_equal(wrapped.to_pandas(), simple_frame())
    assert loom.run(takes_pandas, df=DataFrame.from_df(simple_frame())).outputs() == 3
