"""A task's typed interface: binding call arguments and validating inputs and outputs."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InputError, OutputTypeError, TaskDefinitionError
from ._codecs import Codec, codec_for

_MISSING: Any = inspect.Parameter.empty


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True, slots=True)
class Parameter:
    """One input of a task."""

    name: str
    annotation: Any
    codec: Codec
    default: Any = _MISSING

    @property
    def required(self) -> bool:
        return self.default is _MISSING


class Interface:
    """Names, types and defaults of a task's inputs and the type of its output.

    Binding is hand-rolled rather than ``inspect.Signature.bind`` because it runs on every task
    call and this is several times cheaper.
    """

    __slots__ = ("_by_name", "names", "output", "output_annotation", "parameters", "task_name")

    def __init__(self, task_name: str, parameters: list[Parameter], output_annotation: Any) -> None:
        self.task_name = task_name
        self.parameters = parameters
        self.names = tuple(p.name for p in parameters)
        self._by_name = {p.name: p for p in parameters}
        self.output_annotation = output_annotation
        self.output = codec_for(output_annotation)

    @classmethod
    def of(cls, func: Callable[..., Any], task_name: str) -> Interface:
        """Read the interface from a function's signature and (resolved) annotations."""
        try:
            hints = typing.get_type_hints(func, include_extras=True)
        except Exception:  # unresolvable forward references: fall back to what is declared
            hints = {}
        params = []
        for p in inspect.signature(func).parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
                raise TaskDefinitionError(
                    f"task {task_name!r}: parameter {p.name!r} is {p.kind.description}; task "
                    "inputs must be named parameters (no *args, **kwargs or positional-only)"
                )
            ann = hints.get(p.name, Any if p.annotation is _MISSING else p.annotation)
            params.append(Parameter(p.name, ann, codec_for(ann), p.default))
        output = hints.get("return", Any)
        return cls(task_name, params, None if output is type(None) else output)

    def bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Map call arguments to parameter names, fill defaults and validate types."""
        names = self.names
        if len(args) > len(names):
            raise InputError(
                f"task {self.task_name!r} takes {len(names)} input(s) but {len(args)} "
                "positional argument(s) were given"
            )
        values = dict(zip(names, args, strict=False))
        by_name = self._by_name
        for key, value in kwargs.items():
            if key not in by_name:
                raise InputError(
                    f"task {self.task_name!r} got an unexpected input {key!r}; "
                    f"its inputs are {list(names) or 'none'}"
                )
            if key in values:
                raise InputError(f"task {self.task_name!r} got input {key!r} twice")
            values[key] = value
        for name, value in values.items():
            param = by_name[name]
            if not param.codec.check(value):
                raise InputError(
                    f"task {self.task_name!r}: input {name!r} expects {param.codec.describe()}, "
                    f"got {type(value).__qualname__} ({_short_repr(value)})"
                )
        if len(values) < len(names):
            missing = []
            for p in self.parameters:
                if p.name not in values:
                    if p.default is _MISSING:
                        missing.append(p.name)
                    else:
                        values[p.name] = p.default
            if missing:
                raise InputError(f"task {self.task_name!r} is missing required input(s) {missing}")
        return values

    def check_output(self, value: Any) -> Any:
        """Raise :class:`OutputTypeError` unless ``value`` matches the return annotation."""
        if not self.output.check(value):
            raise OutputTypeError(
                f"task {self.task_name!r} is declared to return {self.output.describe()} but "
                f"returned {type(value).__qualname__} ({_short_repr(value)})"
            )
        return value
