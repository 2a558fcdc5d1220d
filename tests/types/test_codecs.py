"""The type engine's codecs: validation and lossless JSON round trips."""

# The typing.Optional / Union / List spellings are tested on purpose, next to the PEP 604 ones.
# ruff: noqa: UP006, UP007, UP045

import collections
import dataclasses
import datetime as dt
import enum
import json
import threading
import typing
import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path, PurePath
from typing import Annotated, Any, Literal, NamedTuple, Optional, Union
from zoneinfo import ZoneInfo

import pydantic
import pytest

from loom.errors import SerializationError
from loom.types import Codec, LocalBlobStore, _codecs, codec_for, register_codec_factory, type_name

# -- helpers ----------------------------------------------------------------------------------


def encode(tp: Any, value: Any, store: Any = None) -> Any:
    """Encode, and prove the result is JSON-compatible by passing it through ``json``."""
    return json.loads(json.dumps(codec_for(tp).encode(value, store)))


def roundtrip(tp: Any, value: Any, store: Any = None) -> Any:
    return codec_for(tp).decode(encode(tp, value, store), store)


def assert_identical(actual: Any, expected: Any) -> None:
    """Equal, and of exactly the same type all the way down through containers."""
    assert type(actual) is type(expected), f"{actual!r}: {type(actual)} != {type(expected)}"
    assert actual == expected
    if isinstance(expected, list | tuple):
        for a, e in zip(actual, expected, strict=True):
            assert_identical(a, e)
    elif isinstance(expected, dict):
        for (ak, av), (ek, ev) in zip(
            sorted(actual.items(), key=repr), sorted(expected.items(), key=repr), strict=True
        ):
            assert_identical(ak, ek)
            assert_identical(av, ev)
    elif dataclasses.is_dataclass(expected):
        for f in dataclasses.fields(expected):
            assert_identical(getattr(actual, f.name), getattr(expected, f.name))
    elif isinstance(expected, pydantic.BaseModel):
        for name in type(expected).model_fields:
            assert_identical(getattr(actual, name), getattr(expected, name))
    elif isinstance(expected, set | frozenset):
        assert sorted(map(repr, actual)) == sorted(map(repr, expected))
        for a in actual:
            assert type(a) in {type(e) for e in expected}


@pytest.fixture
def fresh_codec_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty codec cache, as in a new process (restored after the test)."""
    monkeypatch.setattr(_codecs, "_cache", {})


# -- types used by the tests ------------------------------------------------------------------


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Priority(enum.Enum):
    LOW = 1
    HIGH = 2


class Level(enum.IntEnum):
    DEBUG = 10
    INFO = 20


class Shape(enum.Enum):
    """Values that are not JSON scalars: encoded by name."""

    SQUARE = (1, 1)
    WIDE = (2, 1)


class Perm(enum.Flag):
    R = 4
    W = 2
    X = 1


@dataclasses.dataclass
class Point:
    x: int
    y: int


@dataclasses.dataclass
class Line:
    start: Point
    end: Point
    label: str = "line"


@dataclasses.dataclass
class WithDefaults:
    name: str
    count: int = 3
    ratio: float = 0.5
    tags: list[str] = dataclasses.field(default_factory=list)
    note: Optional[str] = None


@dataclasses.dataclass
class Polygon:
    name: str
    points: list[Point]
    meta: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Node:
    value: int
    children: list["Node"] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Derived:
    a: int
    doubled: int = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "doubled", self.a * 2)


@dataclasses.dataclass
class Event:
    when: dt.datetime
    day: dt.date
    amount: Decimal
    id: uuid.UUID
    color: Color
    payload: bytes


class User(pydantic.BaseModel):
    name: str
    age: int
    tags: list[str] = []
    joined: dt.datetime | None = None


class Team(pydantic.BaseModel):
    title: str
    members: list[User]
    lead: Optional[User] = None
    scores: dict[str, float] = {}


class Pair(NamedTuple):
    a: int
    b: str


class PointPair(NamedTuple):
    left: Point
    right: Point
    weight: float = 1.0


LegacyPair = collections.namedtuple("LegacyPair", ["a", "b"])


class Thing:
    """An arbitrary class the engine knows nothing about (pickled)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.value == self.value

    def __hash__(self) -> int:
        return hash(self.value)


class SubThing(Thing):
    pass


UTC_PLUS_530 = dt.timezone(dt.timedelta(hours=5, minutes=30))


# -- lossless round trips ---------------------------------------------------------------------

ROUND_TRIPS: list[Any] = [
    pytest.param(int, 42, id="int"),
    pytest.param(int, -(2**70), id="int-big"),
    pytest.param(float, 3.25, id="float"),
    pytest.param(float, float("inf"), id="float-inf"),
    pytest.param(str, 'héllo\n"wörld"', id="str"),
    pytest.param(str, "", id="str-empty"),
    pytest.param(bool, True, id="bool-true"),
    pytest.param(bool, False, id="bool-false"),
    pytest.param(bytes, b"\x00\xffbinary\n", id="bytes"),
    pytest.param(bytes, b"", id="bytes-empty"),
    pytest.param(None, None, id="None"),
    pytest.param(type(None), None, id="NoneType"),
    pytest.param(Optional[int], None, id="optional-none"),
    pytest.param(Optional[int], 7, id="optional-value"),
    pytest.param(int | None, 7, id="pep604-optional"),
    pytest.param(Optional[Point], Point(1, 2), id="optional-dataclass"),
    pytest.param(Optional[dt.date], dt.date(2024, 2, 29), id="optional-date"),
    pytest.param(Union[int, str], 5, id="union-int"),
    pytest.param(Union[int, str], "5", id="union-str-digits"),
    pytest.param(str | int, "5", id="pep604-union-str"),
    pytest.param(Union[int, str, None], None, id="union-none"),
    pytest.param(Union[int, bool], True, id="union-bool-not-int"),
    pytest.param(Union[int, bool], 1, id="union-int-not-bool"),
    pytest.param(Union[dt.date, dt.datetime], dt.datetime(2024, 1, 1, 12), id="union-datetime"),
    pytest.param(Union[dt.date, dt.datetime], dt.date(2024, 1, 1), id="union-date"),
    pytest.param(Union[Point, Pair], Pair(1, "x"), id="union-namedtuple"),
    pytest.param(Union[list[int], dict[str, int]], {"a": 1}, id="union-containers"),
    pytest.param(list[int], [1, 2, 3], id="list"),
    pytest.param(list[int], [], id="list-empty"),
    pytest.param(typing.List[str], ["a"], id="typing-List"),
    pytest.param(Sequence[int], [1, 2], id="Sequence"),
    pytest.param(list, [1, "a", None, Point(1, 2)], id="bare-list"),
    pytest.param(dict[str, int], {"a": 1, "b": 2}, id="dict"),
    pytest.param(dict[str, int], {}, id="dict-empty"),
    pytest.param(Mapping[str, bool], {"a": True}, id="Mapping"),
    pytest.param(dict[int, str], {1: "a", -2: "b"}, id="dict-int-keys"),
    pytest.param(dict[tuple[int, int], str], {(0, 1): "a", (2, 3): "b"}, id="dict-tuple-keys"),
    pytest.param(dict[Color, int], {Color.RED: 1}, id="dict-enum-keys"),
    pytest.param(dict[dt.date, list[int]], {dt.date(2024, 1, 1): [1]}, id="dict-date-keys"),
    pytest.param(dict, {"a": 1, 2: [3], (4,): None}, id="bare-dict"),
    pytest.param(set[int], {3, 1, 2}, id="set"),
    pytest.param(set[str], set(), id="set-empty"),
    pytest.param(frozenset[str], frozenset({"b", "a"}), id="frozenset"),
    pytest.param(set[tuple[int, str]], {(1, "a"), (2, "b")}, id="set-of-tuples"),
    pytest.param(tuple[int, str, float], (1, "a", 2.5), id="tuple-fixed"),
    pytest.param(tuple[int, ...], (5,), id="tuple-variable-one"),
    pytest.param(tuple[int, ...], (3, 1, 2), id="tuple-variable"),
    pytest.param(tuple[str, ...], ("b", "a"), id="tuple-variable-str"),
    pytest.param(tuple[int, ...], (), id="tuple-variable-empty"),
    pytest.param(tuple[Point, Optional[int]], (Point(0, 0), None), id="tuple-mixed"),
    pytest.param(tuple, (1, "a"), id="bare-tuple"),
    pytest.param(
        dict[str, list[tuple[int, Point]]],
        {"a": [(1, Point(1, 2)), (2, Point(3, 4))], "b": []},
        id="nested-dict-list-tuple",
    ),
    pytest.param(list[Optional[int]], [1, None, 3], id="list-optional"),
    pytest.param(list[dict[str, set[int]]], [{"a": {1, 2}}, {}], id="list-dict-set"),
    pytest.param(list[list[list[str]]], [[["a"], []], [["b", "c"]]], id="list-list-list"),
    pytest.param(dict[str, dict[int, frozenset[str]]], {"x": {1: frozenset("ab")}}, id="deep"),
    pytest.param(Color, Color.GREEN, id="enum-str"),
    pytest.param(Priority, Priority.HIGH, id="enum-int"),
    pytest.param(Level, Level.INFO, id="enum-intenum"),
    pytest.param(Shape, Shape.WIDE, id="enum-tuple-values"),
    pytest.param(Perm, Perm.R | Perm.W, id="enum-flag"),
    pytest.param(list[Color], [Color.RED, Color.GREEN], id="list-enum"),
    pytest.param(dt.datetime, dt.datetime(2024, 3, 1, 13, 45, 7, 123456), id="datetime-naive"),
    pytest.param(dt.datetime, dt.datetime(2024, 3, 1, 13, 45, tzinfo=dt.UTC), id="datetime-utc"),
    pytest.param(
        dt.datetime, dt.datetime(1999, 12, 31, 23, 59, tzinfo=UTC_PLUS_530), id="datetime-offset"
    ),
    pytest.param(dt.date, dt.date(2024, 2, 29), id="date"),
    pytest.param(dt.time, dt.time(8, 30, 15, 42), id="time-naive"),
    pytest.param(dt.time, dt.time(8, 30, tzinfo=UTC_PLUS_530), id="time-offset"),
    pytest.param(dt.timedelta, dt.timedelta(days=2, seconds=5, microseconds=7), id="timedelta"),
    pytest.param(dt.timedelta, dt.timedelta(days=-1, microseconds=-1), id="timedelta-negative"),
    pytest.param(Decimal, Decimal("3.14159265358979323846264338327950288"), id="decimal"),
    pytest.param(Decimal, Decimal("-1E+3"), id="decimal-exponent"),
    pytest.param(uuid.UUID, uuid.UUID("12345678-1234-5678-1234-567812345678"), id="uuid"),
    pytest.param(Path, Path("/tmp/some dir/file.txt"), id="path-absolute"),
    pytest.param(Path, Path("relative/file"), id="path-relative"),
    pytest.param(PurePath, PurePath("a/b"), id="purepath"),
    pytest.param(Literal["a", "b"], "b", id="literal-str"),
    pytest.param(Literal[1, 2, 3], 2, id="literal-int"),
    pytest.param(Literal["x", 1, None], None, id="literal-mixed"),
    pytest.param(Point, Point(1, -2), id="dataclass"),
    pytest.param(Line, Line(Point(0, 0), Point(3, 4)), id="dataclass-nested"),
    pytest.param(Line, Line(Point(0, 0), Point(3, 4), label="diag"), id="dataclass-nondefault"),
    pytest.param(WithDefaults, WithDefaults("w"), id="dataclass-defaults"),
    pytest.param(
        WithDefaults,
        WithDefaults("w", count=9, ratio=2.0, tags=["t"], note="n"),
        id="dataclass-defaults-overridden",
    ),
    pytest.param(
        Polygon,
        Polygon("tri", [Point(0, 0), Point(1, 0), Point(0, 1)], {"area": 0.5}),
        id="dataclass-list-of-dataclasses",
    ),
    pytest.param(Node, Node(1, [Node(2), Node(3, [Node(4)])]), id="dataclass-recursive"),
    pytest.param(Derived, Derived(21), id="dataclass-init-false"),
    pytest.param(
        Event,
        Event(
            dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
            dt.date(2024, 1, 2),
            Decimal("1.10"),
            uuid.UUID(int=7),
            Color.RED,
            b"\x00\x01",
        ),
        id="dataclass-rich-fields",
    ),
    pytest.param(list[Point], [Point(1, 2), Point(3, 4)], id="list-dataclass"),
    pytest.param(User, User(name="ann", age=30), id="pydantic"),
    pytest.param(
        User,
        User(name="bob", age=1, tags=["x"], joined=dt.datetime(2024, 1, 1, tzinfo=dt.UTC)),
        id="pydantic-full",
    ),
    pytest.param(
        Team,
        Team(
            title="core",
            members=[User(name="a", age=1), User(name="b", age=2)],
            lead=User(name="a", age=1),
            scores={"q1": 1.5},
        ),
        id="pydantic-nested",
    ),
    pytest.param(list[User], [User(name="a", age=1)], id="list-pydantic"),
    pytest.param(Pair, Pair(1, "one"), id="namedtuple"),
    pytest.param(PointPair, PointPair(Point(1, 2), Point(3, 4)), id="namedtuple-nested"),
    pytest.param(LegacyPair, LegacyPair(1, [2, 3]), id="collections-namedtuple"),
    pytest.param(Thing, Thing({"k": [1, 2]}), id="arbitrary-class"),
    pytest.param(Thing, SubThing(3), id="arbitrary-subclass"),
    pytest.param(complex, 1 + 2j, id="complex-pickled"),
    pytest.param(Annotated[int, "meta"], 5, id="annotated"),
    pytest.param(Annotated[list[Point], "meta"], [Point(1, 1)], id="annotated-container"),
]


@pytest.mark.parametrize(("tp", "value"), ROUND_TRIPS)
def test_round_trip_is_lossless(tp: Any, value: Any, tmp_path: Path) -> None:
    assert codec_for(tp).check(value)
    assert_identical(roundtrip(tp, value), value)
    # a blob store changes nothing for values that are not passed by reference
    assert_identical(roundtrip(tp, value, LocalBlobStore(tmp_path / "store")), value)


def test_int_given_for_float_decodes_to_float() -> None:
    result = roundtrip(float, 3)
    assert type(result) is float
    assert result == 3.0


def test_ints_in_a_float_container_decode_to_floats() -> None:
    assert_identical(roundtrip(list[float], [1, 2.5]), [1.0, 2.5])
    assert_identical(roundtrip(dict[str, float], {"a": 1}), {"a": 1.0})
    assert_identical(roundtrip(tuple[float, int], (1, 1)), (1.0, 1))


def test_float_nan_round_trips() -> None:
    result = roundtrip(float, float("nan"))
    assert type(result) is float
    assert result != result


def test_decimal_keeps_its_exact_representation() -> None:
    for text in ["1.10", "0.000", "-0", "1E+3", "123456789012345678901234567890.5"]:
        result = roundtrip(Decimal, Decimal(text))
        assert type(result) is Decimal
        assert str(result) == text


def test_datetime_keeps_its_utc_offset_and_microseconds() -> None:
    value = dt.datetime(2024, 3, 1, 13, 45, 7, 1, tzinfo=UTC_PLUS_530)
    result = roundtrip(dt.datetime, value)
    assert result.utcoffset() == dt.timedelta(hours=5, minutes=30)
    assert result.microsecond == 1
    naive = roundtrip(dt.datetime, dt.datetime(2024, 3, 1))
    assert naive.tzinfo is None


def test_time_keeps_its_tzinfo() -> None:
    assert roundtrip(dt.time, dt.time(1, 2, tzinfo=dt.UTC)).utcoffset() == dt.timedelta(0)
    assert roundtrip(dt.time, dt.time(1, 2)).tzinfo is None


def test_datetime_keeps_its_zoneinfo() -> None:
    paris = ZoneInfo("Europe/Paris")
    value = dt.datetime(2024, 1, 15, 12, 0, tzinfo=paris)
    result = roundtrip(dt.datetime, value)
    assert result == value
    later = dt.timedelta(days=180)  # crosses into summer time
    assert (result + later).utcoffset() == (value + later).utcoffset()
    assert result.tzinfo == paris


def test_union_preserves_the_member_type() -> None:
    assert_identical(roundtrip(Union[int, str], 1), 1)
    assert_identical(roundtrip(Union[int, str], "1"), "1")
    assert encode(Union[int, str], 1) != encode(Union[int, str], "1")


def test_union_float_int_preserves_an_int(fresh_codec_cache: None) -> None:
    assert_identical(roundtrip(Union[float, int], 3), 3)


def test_union_tags_do_not_depend_on_which_spelling_was_built_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_codecs, "_cache", {})
    data = encode(int | str, "x")  # process A
    monkeypatch.setattr(_codecs, "_cache", {})  # process B
    codec_for(str | int)
    assert codec_for(int | str).decode(data, None) == "x"


def test_encoded_json_native_shapes_stay_readable() -> None:
    assert encode(int, 3) == 3
    assert encode(str, "s") == "s"
    assert encode(bool, True) is True
    assert encode(list[int], [1, 2]) == [1, 2]
    assert encode(dict[str, int], {"a": 1}) == {"a": 1}
    assert encode(Point, Point(1, 2)) == {"x": 1, "y": 2}
    assert encode(Pair, Pair(1, "a")) == {"a": 1, "b": "a"}
    assert encode(User, User(name="n", age=1)) == {
        "name": "n",
        "age": 1,
        "tags": [],
        "joined": None,
    }
    assert encode(Color, Color.RED) == "red"
    assert encode(Priority, Priority.LOW) == 1
    assert encode(Shape, Shape.SQUARE) == "SQUARE"
    assert encode(dt.date, dt.date(2024, 1, 2)) == "2024-01-02"
    assert encode(Optional[int], None) is None
    assert encode(dict[int, str], {1: "a"}) == [[1, "a"]]


def test_set_encoding_is_order_independent() -> None:
    a = {"pear", "apple", "fig", "kiwi", "banana"}
    b: set[str] = set()
    for item in sorted(a, reverse=True):
        b.add(item)
    assert encode(set[str], a) == encode(set[str], b)
    assert encode(frozenset[int], frozenset(range(20))) == encode(
        frozenset[int], frozenset(reversed(range(20)))
    )


# -- Any / unannotated ------------------------------------------------------------------------


@pytest.mark.parametrize("tp", [Any, object])
@pytest.mark.parametrize("value", [0, -3, 1.5, "s", True, False, None])
def test_any_keeps_json_scalars_inline(tp: Any, value: Any) -> None:
    assert_identical(encode(tp, value), value)
    assert_identical(roundtrip(tp, value), value)


@pytest.mark.parametrize(
    "value",
    [
        [1, 2],
        {"a": 1},
        (1, "a"),
        {1, 2},
        Point(1, 2),
        Thing("x"),
        User(name="u", age=1),
        dt.date(2020, 1, 1),
        Decimal("1.5"),
        b"raw",
        Color.RED,
    ],
)
def test_any_pickles_other_objects(value: Any) -> None:
    data = encode(Any, value)
    assert isinstance(data, dict)
    assert set(data) == {"__loom__", "data"} and data["__loom__"] == "pickle"
    assert_identical(roundtrip(Any, value), value)


def test_values_pickled_before_they_carried_a_tag_still_decode() -> None:
    data = encode(Any, Thing(3))
    old = {"__pickle__": data["data"]}
    assert codec_for(Any).decode(old, None).value == 3
    assert codec_for(Thing).decode(old, None).value == 3


def test_any_pickles_locally_defined_classes() -> None:
    @dataclasses.dataclass
    class Local:
        v: int

    result = roundtrip(Any, Local(1))
    assert result.v == 1
    assert type(result).__name__ == "Local"


def test_arbitrary_class_is_pickled_and_checked_with_isinstance() -> None:
    codec = codec_for(Thing)
    assert encode(Thing, Thing(1))["__loom__"] == "pickle"
    assert codec.check(Thing(1))
    assert codec.check(SubThing(1))
    assert not codec.check(1)
    assert not codec.check(None)


def test_unpicklable_value_raises_serialization_error() -> None:
    with pytest.raises(SerializationError, match="cannot pickle a value of type lock"):
        codec_for(Any).encode(threading.Lock(), None)


def test_unpickle_rejects_non_pickle_data() -> None:
    with pytest.raises(SerializationError, match="expected pickled data"):
        codec_for(Thing).decode({"not": "pickle"}, None)


# -- check() ----------------------------------------------------------------------------------


CHECKS: list[Any] = [
    pytest.param(int, 1, True, id="int-int"),
    pytest.param(int, True, False, id="int-rejects-bool"),
    pytest.param(int, False, False, id="int-rejects-False"),
    pytest.param(int, 1.0, False, id="int-rejects-float"),
    pytest.param(int, "1", False, id="int-rejects-str"),
    pytest.param(int, Level.INFO, True, id="int-accepts-intenum"),
    pytest.param(float, 1, True, id="float-accepts-int"),
    pytest.param(float, 1.5, True, id="float-float"),
    pytest.param(float, True, False, id="float-rejects-bool"),
    pytest.param(float, "1.5", False, id="float-rejects-str"),
    pytest.param(float, Decimal("1"), False, id="float-rejects-decimal"),
    pytest.param(str, "s", True, id="str"),
    pytest.param(str, b"s", False, id="str-rejects-bytes"),
    pytest.param(str, 1, False, id="str-rejects-int"),
    pytest.param(bool, True, True, id="bool"),
    pytest.param(bool, 1, False, id="bool-rejects-int"),
    pytest.param(bytes, b"x", True, id="bytes"),
    pytest.param(bytes, "x", False, id="bytes-rejects-str"),
    pytest.param(None, None, True, id="none"),
    pytest.param(None, 0, False, id="none-rejects-0"),
    pytest.param(list[int], [1, 2], True, id="list-int"),
    pytest.param(list[int], [1, "2"], False, id="list-int-rejects-str-item"),
    pytest.param(list[int], [1, True], False, id="list-int-rejects-bool-item"),
    pytest.param(list[int], (1, 2), False, id="list-rejects-tuple"),
    pytest.param(list[int], "12", False, id="list-rejects-str"),
    pytest.param(list, [1, "a", object()], True, id="bare-list-any-items"),
    pytest.param(list[list[int]], [[1], ["x"]], False, id="nested-list-bad-item"),
    pytest.param(dict[str, int], {"a": 1}, True, id="dict"),
    pytest.param(dict[str, int], {"a": "1"}, False, id="dict-bad-value"),
    pytest.param(dict[str, int], {"a": 1, "b": None}, False, id="dict-none-value"),
    pytest.param(dict[str, int], {1: 1}, False, id="dict-bad-key"),
    pytest.param(dict[str, int], [("a", 1)], False, id="dict-rejects-pairs"),
    pytest.param(dict, {1: object()}, True, id="bare-dict"),
    pytest.param(set[int], {1, 2}, True, id="set"),
    pytest.param(set[int], {1, "2"}, False, id="set-bad-item"),
    pytest.param(set[int], frozenset({1}), False, id="set-rejects-frozenset"),
    pytest.param(set[int], [1], False, id="set-rejects-list"),
    pytest.param(frozenset[int], frozenset({1}), True, id="frozenset"),
    pytest.param(tuple[int, str], (1, "a"), True, id="tuple"),
    pytest.param(tuple[int, str], (1, 2), False, id="tuple-bad-item"),
    pytest.param(tuple[int, str], (1, "a", 2), False, id="tuple-too-long"),
    pytest.param(tuple[int, str], (1,), False, id="tuple-too-short"),
    pytest.param(tuple[int, str], [1, "a"], False, id="tuple-rejects-list"),
    pytest.param(tuple[int, ...], (1, 2, 3), True, id="var-tuple"),
    pytest.param(tuple[int, ...], (1, "2"), False, id="var-tuple-bad-item"),
    pytest.param(Optional[int], None, True, id="optional-none"),
    pytest.param(Optional[int], 1, True, id="optional-value"),
    pytest.param(Optional[int], "1", False, id="optional-bad"),
    pytest.param(int | None, True, False, id="optional-bool"),
    pytest.param(Union[int, str], "a", True, id="union-str"),
    pytest.param(Union[int, str], 1.5, False, id="union-float"),
    pytest.param(Union[int, str], None, False, id="union-none"),
    pytest.param(Literal["a", "b"], "a", True, id="literal"),
    pytest.param(Literal["a", "b"], "c", False, id="literal-other"),
    pytest.param(Literal[1, 2], "1", False, id="literal-int-rejects-str"),
    pytest.param(Color, Color.RED, True, id="enum"),
    pytest.param(Color, "red", False, id="enum-rejects-value"),
    pytest.param(Color, Priority.LOW, False, id="enum-rejects-other-enum"),
    pytest.param(dt.date, dt.date(2024, 1, 1), True, id="date"),
    pytest.param(dt.date, dt.datetime(2024, 1, 1), False, id="date-rejects-datetime"),
    pytest.param(Optional[dt.date], dt.datetime(2024, 1, 1), False, id="opt-date-datetime"),
    pytest.param(dt.date, "2024-01-01", False, id="date-rejects-str"),
    pytest.param(dt.datetime, dt.datetime(2024, 1, 1), True, id="datetime"),
    pytest.param(dt.datetime, dt.date(2024, 1, 1), False, id="datetime-rejects-date"),
    pytest.param(dt.time, dt.time(1), True, id="time"),
    pytest.param(dt.timedelta, dt.timedelta(1), True, id="timedelta"),
    pytest.param(dt.timedelta, 1, False, id="timedelta-rejects-int"),
    pytest.param(Decimal, Decimal(1), True, id="decimal"),
    pytest.param(Decimal, 1.0, False, id="decimal-rejects-float"),
    pytest.param(uuid.UUID, uuid.uuid4(), True, id="uuid"),
    pytest.param(uuid.UUID, str(uuid.uuid4()), False, id="uuid-rejects-str"),
    pytest.param(Path, Path("x"), True, id="path"),
    pytest.param(Path, "x", False, id="path-rejects-str"),
    pytest.param(Point, Point(1, 2), True, id="dataclass"),
    pytest.param(Point, {"x": 1, "y": 2}, False, id="dataclass-rejects-dict"),
    pytest.param(Point, (1, 2), False, id="dataclass-rejects-tuple"),
    pytest.param(Point, Line(Point(0, 0), Point(0, 0)), False, id="dataclass-other"),
    pytest.param(User, User(name="a", age=1), True, id="pydantic"),
    pytest.param(User, {"name": "a", "age": 1}, False, id="pydantic-rejects-dict"),
    pytest.param(User, Team(title="t", members=[]), False, id="pydantic-other-model"),
    pytest.param(Pair, Pair(1, "a"), True, id="namedtuple"),
    pytest.param(Pair, (1, "a"), False, id="namedtuple-rejects-tuple"),
    pytest.param(Any, object(), True, id="any"),
    pytest.param(Annotated[int, "m"], 1, True, id="annotated"),
    pytest.param(Annotated[int, "m"], True, False, id="annotated-rejects-bool"),
    pytest.param(Annotated[int, "m"], "1", False, id="annotated-rejects-str"),
]


@pytest.mark.parametrize(("tp", "value", "expected"), CHECKS)
def test_check(tp: Any, value: Any, expected: bool) -> None:
    assert codec_for(tp).check(value) is expected


@pytest.mark.parametrize("value", [True, False, 1.0])
def test_literal_int_rejects_bool_and_float(value: Any) -> None:
    assert not codec_for(Literal[0, 1]).check(value)


def test_literal_of_enum_members_round_trips() -> None:
    assert_identical(roundtrip(Literal[Color.RED, Color.GREEN], Color.RED), Color.RED)


def test_sequence_accepts_a_tuple() -> None:
    assert codec_for(Sequence[int]).check((1, 2))


# -- decoding errors --------------------------------------------------------------------------


def test_enum_decode_unknown_value_names_the_choices() -> None:
    with pytest.raises(SerializationError, match=r"'purple' is not a Color.*'red', 'green'"):
        codec_for(Color).decode("purple", None)


def test_enum_decodes_by_value_then_by_name() -> None:
    assert codec_for(Color).decode("red", None) is Color.RED
    assert codec_for(Color).decode("GREEN", None) is Color.GREEN


def test_literal_decode_rejects_other_values() -> None:
    with pytest.raises(SerializationError, match="'c' is not one of"):
        codec_for(Literal["a", "b"]).decode("c", None)


def test_dataclass_decode_rejects_unknown_fields() -> None:
    with pytest.raises(SerializationError, match=r"Point has no field\(s\) \['z'\]"):
        codec_for(Point).decode({"x": 1, "y": 2, "z": 3}, None)


def test_dataclass_decode_rejects_non_objects() -> None:
    with pytest.raises(SerializationError, match="needs a JSON object"):
        codec_for(Point).decode([1, 2], None)


def test_dataclass_decode_fills_defaults_for_absent_fields() -> None:
    result = codec_for(WithDefaults).decode({"name": "n"}, None)
    assert result == WithDefaults("n")


def test_union_encode_rejects_a_value_of_no_member() -> None:
    with pytest.raises(SerializationError, match="float is not a"):
        codec_for(Union[int, str]).encode(1.5, None)


# -- specific types ---------------------------------------------------------------------------


def test_namedtuple_comes_back_as_the_same_class_with_named_fields() -> None:
    result = roundtrip(PointPair, PointPair(Point(1, 2), Point(3, 4), 2.0))
    assert type(result) is PointPair
    assert result.left == Point(1, 2)
    assert type(result.left) is Point
    assert result.right.y == 4
    assert result.weight == 2.0
    assert result._fields == ("left", "right", "weight")


def test_dataclass_with_init_false_field_keeps_its_value() -> None:
    result = roundtrip(Derived, Derived(5))
    assert result.doubled == 10
    data = encode(Derived, Derived(5))
    data["doubled"] = 99  # the stored value wins over __post_init__
    assert codec_for(Derived).decode(data, None).doubled == 99


def test_pydantic_model_round_trip_keeps_nested_model_types() -> None:
    team = Team(title="t", members=[User(name="a", age=1)], lead=User(name="b", age=2))
    result = roundtrip(Team, team)
    assert type(result) is Team
    assert type(result.members[0]) is User
    assert type(result.lead) is User
    assert result == team


def test_annotated_uses_the_inner_type() -> None:
    codec = codec_for(Annotated[int, "meta"])
    assert codec.describe() == "int"
    assert_identical(roundtrip(Annotated[float, "m"], 2), 2.0)


# -- describe, caching, registration ----------------------------------------------------------


@pytest.mark.parametrize(
    ("tp", "name"),
    [
        (int, "int"),
        (list[int], "list[int]"),
        (dict[str, int], "dict[str, int]"),
        (tuple[int, ...], "tuple[int, ...]"),
        (Point, "Point"),
        (Color, "Color"),
        (dt.date, "date"),
        (Any, "Any"),
        (None, "None"),
        (type(None), "None"),
        (Literal["a"], "Literal['a']"),
        (Optional[str], "Optional[str]"),
    ],
)
def test_describe_gives_readable_names(tp: Any, name: str) -> None:
    assert codec_for(tp).describe() == name
    assert type_name(tp) == name


def test_codecs_are_cached() -> None:
    assert codec_for(list[int]) is codec_for(list[int])
    assert codec_for(Point) is codec_for(Point)


def test_register_codec_factory_teaches_a_new_type(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_codecs, "_factories", list(_codecs._factories))
    monkeypatch.setattr(_codecs, "_cache", {})

    class Celsius:
        def __init__(self, degrees: float) -> None:
            self.degrees = degrees

    class CelsiusCodec(Codec):
        def check(self, value: Any) -> bool:
            return isinstance(value, Celsius)

        def encode(self, value: Any, store: Any) -> Any:
            return {"c": value.degrees}

        def decode(self, data: Any, store: Any) -> Any:
            return Celsius(data["c"])

    assert encode(Celsius, Celsius(1.0))["__loom__"] == "pickle"  # before: pickled
    register_codec_factory(lambda tp: CelsiusCodec(tp) if tp is Celsius else None)
    assert encode(list[Celsius], [Celsius(21.5)]) == [{"c": 21.5}]
    result = roundtrip(Optional[Celsius], Celsius(3.0))
    assert type(result) is Celsius
    assert result.degrees == 3.0


@pytest.mark.parametrize(
    ("tp", "name"),
    [
        (Optional[Point], "Optional[Point]"),
        (list[Point], "list[Point]"),
        (dict[str, dt.date], "dict[str, date]"),
    ],
)
def test_type_name_is_short_for_generics_of_classes(tp: Any, name: str) -> None:
    assert type_name(tp) == name


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_floats_travel_as_text_or_pickles(value: float) -> None:
    import math

    data = encode(float, value)
    assert isinstance(data, str)  # JSON has no NaN or Infinity: the server would refuse it
    back = roundtrip(float, value)
    assert (math.isnan(back) and math.isnan(value)) or back == value
    assert json.dumps(encode(list[float], [1.0, value]), allow_nan=False)
    anything = encode(Any, value)
    assert anything["__loom__"] == "pickle"
    back = roundtrip(Any, value)
    assert (math.isnan(back) and math.isnan(value)) or back == value


class _Reply(typing.TypedDict):
    content: str
    tools: typing.NotRequired[list[int]]


def test_typeddicts_check_their_keys_and_round_trip() -> None:
    codec = codec_for(_Reply)
    assert codec.check({"content": "hi"}) and codec.check({"content": "hi", "tools": [1]})
    assert not codec.check({"tools": [1]})  # the required key is missing
    assert not codec.check({"content": "hi", "other": 1})
    assert not codec.check({"content": 3})
    assert roundtrip(_Reply, {"content": "hi", "tools": [1, 2]}) == {
        "content": "hi",
        "tools": [1, 2],
    }
    with pytest.raises(SerializationError, match="no key"):
        codec.decode({"content": "hi", "x": 1}, None)


class _Query(pydantic.BaseModel):
    query: str
    limit: int = 10


def test_dicts_are_taken_for_models_and_dataclasses_as_flyte_takes_them() -> None:
    @dataclasses.dataclass
    class Window:
        start: int
        end: int = 5

    assert codec_for(_Query).coerce({"query": "q"}) == _Query(query="q")
    assert codec_for(Window).coerce({"start": 1}) == Window(1, 5)
    bad = {"nope": 1}
    assert codec_for(_Query).coerce(bad) is bad and codec_for(Window).coerce(bad) is bad


@pytest.mark.parametrize(
    ("tp", "data"),
    [
        (list[str], [1, 2]),
        (list[str], {"a": 1}),
        (list[str], [None]),
        (int, "3"),
        (int, 2.5),
        (float, "1.5"),
        (bool, 1),
        (str, None),
        (tuple[int, str], [1]),
        (dict[str, int], [["a", 1]]),
        (dict[int, int], {"1": 1}),
    ],
)
def test_decoding_refuses_json_of_another_shape_instead_of_converting_it(
    tp: Any, data: Any
) -> None:
    with pytest.raises(SerializationError, match="expected"):
        codec_for(tp).decode(data, None)


def test_non_finite_floats_still_decode_from_their_text() -> None:
    assert codec_for(float).decode("inf", None) == float("inf")
    assert (
        codec_for(float).decode(3, None) == 3.0 and type(codec_for(float).decode(3, None)) is float
    )
