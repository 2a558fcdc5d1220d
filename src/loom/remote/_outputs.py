"""What ``run.outputs()`` returns: the task's value, which also answers Flyte 2's way.

In loom, ``run.outputs()`` is the root task's return value. In Flyte 2 it is an outputs tuple
(``ActionOutputs``): ``run.outputs()[0]`` is a single-output task's value. Flyte code indexing
loom's bare value would silently get the value's first item instead, so the value comes back
as an instance of a small subclass of its own type: it is the value (equal to it, printed,
JSON-encoded and iterated as it), except that an integer index means Flyte's output number
(but for a list, whose items loom code reads by index: see ``_VIEWS``).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar


class ActionOutputs:
    """Mixed into a task's value: ``out[i]`` (an int) is Flyte's output ``i``.

    A task returning a tuple has one output per item (``out[i]`` is the item, as for the
    tuple); any other task has one output, the value itself: ``out[0]`` and ``out[-1]`` are
    the value, another integer raises :class:`IndexError` — except that a returned list
    keeps its own integer index (``out[0]`` is its first item). Other keys (``out["total"]``,
    ``out[1:3]``), iteration, ``len``, equality and printing are the value's own; ``value``
    is the value as a plain instance of its type, ``named_outputs`` maps Flyte's output names
    (``o0``, ``o1``, ...) to the outputs, and ``out.o0`` reads one.
    """

    __slots__ = ()
    _plain: ClassVar[type]
    #: whether an integer index is Flyte's output number (see ``_VIEWS``)
    _flyte_index: ClassVar[bool] = True

    @property
    def value(self) -> Any:
        """The task's return value, as a plain instance of its type."""
        return self._plain(self)

    @property
    def outputs(self) -> tuple[Any, ...]:
        """Flyte's outputs tuple: the items of a returned tuple, else just the value."""
        return (self.value,)

    @property
    def named_outputs(self) -> dict[str, Any]:
        """Flyte's names for the outputs (``o0``, ``o1``, ...) and the outputs."""
        return {f"o{i}": v for i, v in enumerate(self.outputs)}

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, int) and self._flyte_index:
            outputs = self.outputs
            if not -len(outputs) <= key < len(outputs):
                raise IndexError(
                    f"output {key} out of range: the task has {len(outputs)} output(s) (an "
                    "integer index of run.outputs() is Flyte's output number; index the value "
                    f"itself with run.outputs().value[{key}])"
                )
            return outputs[key]
        return super().__getitem__(key)  # type: ignore[misc]

    def __getattr__(self, name: str) -> Any:
        # only called for names the value does not have: Flyte's o0, o1, ...
        if name.startswith("o") and name[1:].isdigit():
            outputs = self.outputs
            if int(name[1:]) < len(outputs):
                return outputs[int(name[1:])]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __repr__(self) -> str:
        return repr(self.value)

    def __reduce_ex__(self, protocol: Any) -> Any:
        # pickles and copies are of the plain value: the view is for reading a run's result
        return (self._plain, (self.value,))


class TupleOutputs(ActionOutputs, tuple[Any, ...]):
    """A returned tuple: one output per item, so an integer index is the tuple's own."""

    __slots__ = ()
    _plain = tuple

    @property
    def outputs(self) -> tuple[Any, ...]:
        return self.value  # type: ignore[no-any-return]

    def __getitem__(self, key: Any) -> Any:
        return tuple.__getitem__(self, key)


def _view(base: type, flyte_index: bool = True) -> type[ActionOutputs]:
    name = f"{base.__name__.capitalize()}Outputs"
    namespace = {"__slots__": (), "_plain": base, "_flyte_index": flyte_index}
    return type(name, (ActionOutputs, base), {**namespace, "__module__": __name__})


# Only builtin types: an instance of a subclass is still one of them everywhere (JSON, the
# type engine, C code), and their equality does not compare classes. ``bool`` cannot be
# subclassed; a dataclass or a model compares classes, so those values come back bare.
_VIEWS: dict[type, type[ActionOutputs]] = {
    base: _view(base) for base in (str, bytes, int, float, complex, dict, set, frozenset)
}
_VIEWS[tuple] = TupleOutputs
# A returned list keeps its own integer index: loom code reads ``run.outputs()[0]`` as the
# first item (Flyte code gets that too, not the list: ``.o0`` is Flyte's output 0).
_VIEWS[list] = _view(list, flyte_index=False)


def outputs_view(value: Any) -> Any:
    """``value`` (a task's return value) as :class:`ActionOutputs` where its type allows;
    ``None``, ``bool`` and values of other types come back as they are (a pandas frame as a
    frame that answers Flyte's ``[0]``, see :func:`_frame_view`)."""
    view = _VIEWS.get(type(value))
    if view is None:
        cls = type(value)
        if cls.__name__ == "DataFrame" and cls.__module__.startswith("pandas"):
            return _frame_view(value)
        return value
    return view(value)  # type: ignore[call-arg]


_FRAME_VIEW: type | None = None


def _frame_view(frame: Any) -> Any:
    """A pandas frame (sharing its data) whose integer index that is not a column label is
    Flyte's output number: ``out[0]`` is the frame; a column is ``out["name"]`` as ever."""
    global _FRAME_VIEW
    if _FRAME_VIEW is None:
        import pandas as pd

        class FrameOutputs(pd.DataFrame):
            @property
            def _constructor(self) -> type:  # what operations on it give: plain frames
                return pd.DataFrame

            @property
            def value(self) -> Any:
                """The frame, as a plain ``pandas.DataFrame``."""
                return pd.DataFrame(self)

            @property
            def o0(self) -> Any:
                return self.value

            def __getitem__(self, key: Any) -> Any:
                if type(key) is int and key not in self.columns:
                    if key in (0, -1):
                        return self.value
                    raise IndexError(
                        f"output {key} out of range: the task has 1 output (an integer index "
                        "of run.outputs() that is not a column is Flyte's output number)"
                    )
                return super().__getitem__(key)

            def __reduce__(self) -> Any:
                return pd.DataFrame(self).__reduce__()

        _FRAME_VIEW = FrameOutputs
    return _FRAME_VIEW(frame)


class ActionInputs(dict[str, Any]):
    """An action's inputs by parameter name (Flyte 2's ``ActionInputs`` is a mapping too)."""

    def to_json(self, indent: int | None = None) -> str:
        """The inputs as JSON (values JSON cannot hold are shown by their ``repr``)."""
        return json.dumps(dict(self), indent=indent, default=repr)
