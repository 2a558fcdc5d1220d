"""Task interfaces: binding call arguments and validating inputs and outputs.

This module uses ``from __future__ import annotations`` on purpose: every annotation below is a
string, and ``Interface.of`` must resolve it.
"""

# ruff: noqa: UP045  (the typing.Optional spelling is tested on purpose)

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from typing import Annotated, Any, Optional

import pytest

from loom.errors import (
    InputError,
    LoomError,
    OutputTypeError,
    SerializationError,
    TaskDefinitionError,
)
from loom.types import Interface, Parameter


@dataclasses.dataclass
class Point:
    x: int
    y: int


def add(a: int, b: int = 2, *, scale: float = 1.0) -> float:
    return (a + b) * scale


def greet(name: str, greeting: str = "hello", times: int = 1) -> str:
    return greeting


def when(day: dt.date, at: Optional[dt.datetime] = None) -> None:
    pass


def typed(points: list[Point], lookup: dict[str, int], tag: str | None = None) -> list[int]:
    return []


def untyped(a, b=1):  # type: ignore[no-untyped-def]
    return a


def nothing() -> None:
    pass


def annotated(n: Annotated[int, "count"]) -> Annotated[str, "label"]:
    return ""


def explicit_strings(n: "int", xs: "list[str]") -> "Point":  # noqa: UP037
    return Point(0, 0)


def iface(func: Any, name: str = "my_task") -> Interface:
    return Interface.of(func, name)


# -- reading the interface --------------------------------------------------------------------


def test_of_reads_names_annotations_and_defaults() -> None:
    i = iface(add)
    assert i.task_name == "my_task"
    assert i.names == ("a", "b", "scale")
    assert [p.annotation for p in i.parameters] == [int, int, float]
    a, b, scale = i.parameters
    assert isinstance(a, Parameter)
    assert a.required
    assert not b.required
    assert b.default == 2
    assert scale.default == 1.0
    assert i.output_annotation is float


def test_string_annotations_are_resolved() -> None:
    i = iface(typed)
    assert [p.annotation for p in i.parameters] == [list[Point], dict[str, int], str | None]
    assert i.output_annotation == list[int]
    assert not i.parameters[0].codec.check([{"x": 1, "y": 2}])
    assert i.parameters[0].codec.check([Point(1, 2)])


def test_explicit_string_annotations_are_resolved() -> None:
    i = iface(explicit_strings)
    assert [p.annotation for p in i.parameters] == [int, list[str]]
    assert i.output_annotation is Point
    with pytest.raises(InputError, match="expects int"):
        i.bind(("1", []), {})
    with pytest.raises(InputError, match=re.escape("expects list[str]")):
        i.bind((1, [1]), {})


def test_unannotated_parameters_and_return_accept_anything() -> None:
    i = iface(untyped)
    assert [p.annotation for p in i.parameters] == [Any, Any]
    assert i.bind((object(), "x"), {})["b"] == "x"
    assert i.check_output(object()) is not None


def test_annotated_parameters_keep_metadata_and_check_the_inner_type() -> None:
    i = iface(annotated)
    assert i.parameters[0].annotation == Annotated[int, "count"]
    assert i.bind((3,), {}) == {"n": 3}
    with pytest.raises(InputError, match="expects int"):
        i.bind((True,), {})
    with pytest.raises(OutputTypeError):
        i.check_output(3)


def test_of_accepts_keyword_only_parameters() -> None:
    i = iface(add)
    assert i.bind((1,), {"scale": 2.0}) == {"a": 1, "b": 2, "scale": 2.0}


@pytest.mark.parametrize(
    ("source", "param", "kind"),
    [
        ("def f(a: int, *args: int) -> None: ...", "args", "variadic positional"),
        ("def f(a: int, **kwargs: int) -> None: ...", "kwargs", "variadic keyword"),
        ("def f(a: int, /, b: int) -> None: ...", "a", "positional-only"),
        ("def f(*args, **kwargs): ...", "args", "variadic positional"),
    ],
)
def test_of_rejects_variadic_and_positional_only_parameters(
    source: str, param: str, kind: str
) -> None:
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    with pytest.raises(TaskDefinitionError) as info:
        Interface.of(namespace["f"], "bad_task")
    message = str(info.value)
    assert "'bad_task'" in message
    assert f"{param!r}" in message
    assert kind in message
    assert isinstance(info.value, LoomError)


def test_an_unresolvable_annotation_is_named_instead_of_disabling_checks() -> None:
    """A type loom cannot see cannot be checked or encoded: say which one, never accept all."""

    class Local:
        pass

    def f(x: int, y: Local) -> int:
        return x

    with pytest.raises(
        TaskDefinitionError, match=r"cannot resolve the annotation of 'y' \('Local'\)"
    ):
        iface(f)


# -- bind -------------------------------------------------------------------------------------


def test_bind_positional_and_keyword() -> None:
    i = iface(greet)
    assert i.bind(("ann",), {"times": 3}) == {"name": "ann", "greeting": "hello", "times": 3}
    assert i.bind(("ann", "hi", 2), {}) == {"name": "ann", "greeting": "hi", "times": 2}
    assert i.bind((), {"times": 2, "name": "bo"}) == {
        "name": "bo",
        "greeting": "hello",
        "times": 2,
    }


def test_bind_fills_defaults() -> None:
    i = iface(greet)
    bound = i.bind(("ann",), {})
    assert bound == {"name": "ann", "greeting": "hello", "times": 1}


def test_bind_with_no_parameters() -> None:
    i = iface(nothing)
    assert i.bind((), {}) == {}


def test_bind_accepts_int_for_float_and_none_for_optional() -> None:
    i = iface(add)
    assert i.bind((1, 2), {"scale": 3})["scale"] == 3
    assert iface(when).bind((dt.date(2024, 1, 1),), {"at": None})["at"] is None
    assert iface(typed).bind(([Point(1, 2)], {"a": 1}), {"tag": None})["tag"] is None


def test_bind_type_error_names_task_parameter_expected_and_received_types() -> None:
    i = iface(greet, "say_hello")
    with pytest.raises(InputError) as info:
        i.bind(("ann",), {"times": "three"})
    message = str(info.value)
    assert "'say_hello'" in message
    assert "'times'" in message
    assert "expects int" in message
    assert "got str" in message
    assert "'three'" in message
    assert isinstance(info.value, TypeError)
    assert isinstance(info.value, LoomError)


@pytest.mark.parametrize(
    ("func", "args", "kwargs", "expected", "received"),
    [
        (greet, (True,), {}, r"str", "bool"),
        (greet, ("a",), {"times": True}, r"int", "bool"),
        (greet, ("a",), {"times": 1.0}, r"int", "float"),
        (add, (1,), {"scale": "2"}, r"float", "str"),
        (add, (1,), {"scale": True}, r"float", "bool"),
        (when, (dt.datetime(2024, 1, 1),), {}, r"date", "datetime"),
        (when, ("2024-01-01",), {}, r"date", "str"),
        (when, (dt.date(2024, 1, 1),) * 2, {}, r"Optional\[(datetime\.)?datetime\]", "date"),
        (typed, ([Point(1, 2), "p"], {}), {}, r"list\[([\w.]+\.)?Point\]", "list"),
        (typed, ([], {"a": "1"}), {}, r"dict\[str, int\]", "dict"),
        # ``str | None`` and ``Optional[str]`` share one cached codec: either spelling is fine
        (typed, ([], {}), {"tag": 1}, r"(str \| None|Optional\[str\])", "int"),
    ],
)
def test_bind_rejects_ill_typed_inputs(
    func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], expected: str, received: str
) -> None:
    i = iface(func, "t")
    with pytest.raises(InputError) as info:
        i.bind(args, kwargs)
    message = str(info.value)
    assert re.search(f"expects {expected}, ", message), message
    assert f"got {received} (" in message


def test_bind_type_error_shortens_long_values() -> None:
    i = iface(greet, "t")
    with pytest.raises(InputError) as info:
        i.bind(("ann",), {"times": "x" * 500})
    message = str(info.value)
    assert "..." in message
    assert len(message) < 200


def test_bind_unexpected_keyword_lists_known_inputs() -> None:
    i = iface(greet, "say_hello")
    with pytest.raises(InputError) as info:
        i.bind(("ann",), {"nmae": "x"})
    message = str(info.value)
    assert "'say_hello'" in message
    assert "unexpected input 'nmae'" in message
    assert "['name', 'greeting', 'times']" in message


def test_bind_unexpected_keyword_for_a_task_without_inputs() -> None:
    with pytest.raises(InputError, match="unexpected input 'x'; its inputs are none"):
        iface(nothing).bind((), {"x": 1})


def test_bind_missing_required_inputs_are_named() -> None:
    def f(a: int, b: str, c: float = 1.0, d: bool = False) -> None:
        pass

    i = iface(f, "needs_two")
    with pytest.raises(InputError) as info:
        i.bind((), {"d": True})
    message = str(info.value)
    assert "'needs_two'" in message
    assert "missing required input(s) ['a', 'b']" in message
    with pytest.raises(InputError, match=re.escape("missing required input(s) ['b']")):
        i.bind((1,), {})


def test_bind_too_many_positional_arguments() -> None:
    i = iface(greet, "say_hello")
    with pytest.raises(InputError) as info:
        i.bind(("a", "b", 1, "extra"), {})
    message = str(info.value)
    assert "'say_hello'" in message
    assert "takes 3 positional input(s) but 4 were given" in message


def test_bind_duplicate_argument() -> None:
    i = iface(greet, "say_hello")
    with pytest.raises(InputError, match="'say_hello' got input 'name' twice"):
        i.bind(("ann",), {"name": "bo"})


def test_bind_errors_are_catchable_as_type_error() -> None:
    with pytest.raises(TypeError):
        iface(greet).bind((), {})


def test_bind_does_not_fill_keyword_only_parameters_positionally() -> None:
    with pytest.raises(InputError):
        iface(add).bind((1, 2, 3.0), {})


# -- outputs ----------------------------------------------------------------------------------


def test_check_output_returns_the_value() -> None:
    i = iface(typed)
    value = [1, 2]
    assert i.check_output(value) is value


def test_check_output_error_names_task_declared_and_actual_types() -> None:
    i = iface(typed, "list_ints")
    with pytest.raises(OutputTypeError) as info:
        i.check_output([1, "2"])
    message = str(info.value)
    assert "'list_ints'" in message
    assert "declared to return list[int]" in message
    assert "returned list" in message
    assert isinstance(info.value, TypeError)

    with pytest.raises(OutputTypeError, match=r"declared to return str but returned int \(5\)"):
        iface(greet, "g").check_output(5)


def test_check_output_accepts_int_for_float_but_not_bool_for_int() -> None:
    assert iface(add).check_output(3) == 3

    def count() -> int:
        return 0

    with pytest.raises(OutputTypeError, match="returned bool"):
        iface(count).check_output(True)


@pytest.mark.parametrize("value", [0, "", [], False, {}])
def test_none_return_accepts_none_only(value: Any) -> None:
    i = iface(nothing, "procedure")
    assert i.output_annotation is None
    assert i.check_output(None) is None
    with pytest.raises(OutputTypeError, match="'procedure' is declared to return None"):
        i.check_output(value)


def test_dataclass_output_requires_an_instance() -> None:
    i = iface(explicit_strings)
    assert i.check_output(Point(1, 2)) == Point(1, 2)
    with pytest.raises(OutputTypeError, match="declared to return Point but returned dict"):
        i.check_output({"x": 1, "y": 2})


def test_inputs_encode_and_decode_by_their_parameters() -> None:
    i = iface(greet)
    values = i.bind(("ann",), {"times": 3})
    data = i.encode_inputs(values)
    assert data == {"name": "ann", "greeting": "hello", "times": 3}
    assert i.decode_inputs(data) == values
    with pytest.raises(SerializationError, match=r"has no input\(s\) \['nope'\]"):
        i.decode_inputs({**data, "nope": 1})
