"""``run.outputs()``: loom's value, which integer indexing reads the Flyte 2 way."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path

import pandas as pd
import pytest

import loom
from loom.remote import ActionOutputs
from loom.remote._outputs import outputs_view

env = loom.TaskEnvironment("outputs-view")


@env.task
async def squares(n: int) -> list[int]:
    return [i * i for i in range(n)]


@env.task
async def pair() -> tuple[int, str]:
    return 7, "seven"


@env.task
async def totals() -> dict[str, int]:
    return {"total": 3}


@env.task
async def greet(name: str) -> str:
    return f"hello {name}"


@env.task
async def nothing() -> None:
    return None


def test_flyte_indexing_of_a_local_run_is_the_output_not_an_item_of_it() -> None:
    # Flyte 2: outputs()[0] is the task's (only) output; indexing the value gave "h"
    out = loom.with_runcontext(mode="local").run(greet, name="Ada").outputs()
    assert out[0] == "hello Ada" and out[-1] == "hello Ada"
    assert out.o0 == "hello Ada" and out.named_outputs == {"o0": "hello Ada"}
    assert loom.run(totals).outputs()[0] == {"total": 3}  # (the dict has no key 0)


def test_a_returned_list_keeps_its_own_integer_index() -> None:
    # loom code reads a list's items by index (tests/test_run.py does): Flyte's is .o0
    out = loom.run(squares, n=3).outputs()
    assert out[0] == 0 and out[2] == 4 and out.o0 == [0, 1, 4]


def test_the_value_is_still_loom_s_documented_result() -> None:
    out = loom.with_runcontext(mode="local").run(squares, n=3).outputs()
    assert out == [0, 1, 4] and isinstance(out, list) and isinstance(out, ActionOutputs)
    assert list(out) == [0, 1, 4] and len(out) == 3 and 4 in out and out[1:] == [1, 4]
    assert repr(out) == "[0, 1, 4]" and json.dumps(out) == "[0, 1, 4]"
    assert type(out.value) is list and out.value[2] == 4
    assert loom.run(totals).outputs()["total"] == 3
    assert loom.run(nothing).outputs() is None


def test_a_returned_tuple_is_flyte_s_several_outputs() -> None:
    out = loom.run(pair).outputs()
    first, second = out
    assert (first, second) == (7, "seven") and out[0] == 7 and out[1] == "seven"
    assert out == (7, "seven") and out.named_outputs == {"o0": 7, "o1": "seven"}


def test_an_integer_past_the_outputs_says_how_to_index_the_value() -> None:
    out = loom.run(greet, name="Ada").outputs()
    with pytest.raises(IndexError, match=r"\.value\[1\]"):
        out[1]
    assert out.value[1] == "e"


def test_views_are_their_builtin_types_and_copy_as_plain_values() -> None:
    for value in ("abc", b"xy", 5, 2.5, 1j, [1], {"k": 1}, {1}, frozenset({2}), (1, 2)):
        view = outputs_view(value)
        assert view == value and isinstance(view, type(value)) and repr(view) == repr(value)
        assert type(pickle.loads(pickle.dumps(view))) is type(value)
        assert type(copy.deepcopy(view)) is type(value)
    assert outputs_view("abc")[0] == "abc" and outputs_view(5)[0] == 5
    assert outputs_view({0: "zero"})[0] == {0: "zero"}  # an integer is Flyte's output number
    for bare in (None, True, object()):  # no subclass can stand for them: as they are
        assert outputs_view(bare) is bare


@env.task
async def a_file(path: str) -> loom.io.File:
    return loom.io.File.from_local_sync(path)


def test_flyte_indexing_of_a_returned_file_is_the_file(tmp_path: Path) -> None:
    # Flyte 2 examples print run.outputs()[0] of a task returning a File: it raised TypeError
    path = tmp_path / "data.txt"
    path.write_text("x")
    out = loom.run(a_file, path=str(path)).outputs()
    assert out[0] is out and out[0].path == str(path)
    with pytest.raises(IndexError, match="one output"):
        out[1]


@env.task
async def frame() -> pd.DataFrame:
    return pd.DataFrame({"a": [1, 2], 1: [3, 4]})


def test_flyte_indexing_of_a_returned_pandas_frame_is_the_frame() -> None:
    out = loom.run(frame).outputs()
    assert isinstance(out, pd.DataFrame) and type(out[0]) is pd.DataFrame
    assert out[0].equals(pd.DataFrame({"a": [1, 2], 1: [3, 4]}))  # was KeyError: 0
    assert list(out["a"]) == [1, 2] and list(out[1]) == [3, 4]  # columns stay columns
    assert type(out + 1) is pd.DataFrame and type(pickle.loads(pickle.dumps(out))) is pd.DataFrame
    with pytest.raises(IndexError, match="1 output"):
        out[2]
