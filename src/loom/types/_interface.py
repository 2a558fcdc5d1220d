"""A task's typed interface: binding call arguments and validating inputs and outputs."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InputError, OutputTypeError, SerializationError, TaskDefinitionError
from ._codecs import Codec, codec_for
from ._store import BlobStore

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
    keyword_only: bool = False

    @property
    def required(self) -> bool:
        return self.default is _MISSING


def _resolve(func: Callable[..., Any], task_name: str, name: str, annotation: Any) -> Any:
    """Evaluate one string annotation in the function's module, or say why it cannot be."""
    if not isinstance(annotation, str):
        return annotation
    try:
        return eval(annotation, getattr(func, "__globals__", {}))
    except Exception as e:
        what = "the return annotation" if name == "return" else f"the annotation of {name!r}"
        raise TaskDefinitionError(
            f"task {task_name!r}: cannot resolve {what} ({annotation!r}): {e}. Define the type "
            "at module level so loom can check and encode values of it."
        ) from e


class Interface:
    """Names, types and defaults of a task's inputs and the type of its output.

    Binding is hand-rolled rather than ``inspect.Signature.bind`` because it runs on every task
    call and this is several times cheaper.
    """

    __slots__ = (
        "_by_name",
        "names",
        "output",
        "output_annotation",
        "parameters",
        "positional",
        "task_name",
    )

    def __init__(self, task_name: str, parameters: list[Parameter], output_annotation: Any) -> None:
        self.task_name = task_name
        self.parameters = parameters
        self.names = tuple(p.name for p in parameters)
        self.positional = tuple(p.name for p in parameters if not p.keyword_only)
        self._by_name = {p.name: p for p in parameters}
        self.output_annotation = output_annotation
        self.output = codec_for(output_annotation)

    @classmethod
    def of(cls, func: Callable[..., Any], task_name: str) -> Interface:
        """Read the interface from a function's signature and (resolved) annotations."""
        try:
            hints = typing.get_type_hints(func, include_extras=True)
        except Exception:  # find the annotation that cannot be resolved, and say which
            hints = {
                name: _resolve(func, task_name, name, ann)
                for name, ann in getattr(func, "__annotations__", {}).items()
            }
        params = []
        for p in inspect.signature(func).parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
                raise TaskDefinitionError(
                    f"task {task_name!r}: parameter {p.name!r} is {p.kind.description}; task "
                    "inputs must be named parameters (no *args, **kwargs or positional-only)"
                )
            ann = hints.get(p.name, Any)
            params.append(
                Parameter(p.name, ann, codec_for(ann), p.default, p.kind == p.KEYWORD_ONLY)
            )
        output = hints.get("return", Any)
        return cls(task_name, params, None if output is type(None) else output)

    def bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Map call arguments to parameter names, fill defaults and validate types."""
        names = self.names
        positional = self.positional
        if len(args) > len(positional):
            raise InputError(
                f"task {self.task_name!r} takes {len(positional)} positional input(s) but "
                f"{len(args)} were given"
            )
        values = dict(zip(positional, args, strict=False))
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
                coerced = param.codec.coerce(value)
                if coerced is not value and param.codec.check(coerced):
                    values[name] = coerced
                    continue
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

    def encode_inputs(
        self, values: Mapping[str, Any], store: BlobStore | None = None
    ) -> dict[str, Any]:
        """Bound inputs as JSON-compatible data, each by its parameter's codec."""
        by_name = self._by_name
        return {n: by_name[n].codec.encode(v, store) for n, v in values.items()}

    def decode_inputs(
        self, data: Mapping[str, Any], store: BlobStore | None = None
    ) -> dict[str, Any]:
        """The inverse of :meth:`encode_inputs`; unknown names are an error, not dropped."""
        unknown = sorted(set(data) - set(self._by_name))
        if unknown:
            raise SerializationError(
                f"task {self.task_name!r} has no input(s) {unknown}; its inputs are "
                f"{list(self.names)}"
            )
        return {n: self._by_name[n].codec.decode(v, store) for n, v in data.items()}

    def check_output(self, value: Any) -> Any:
        """``value``, or what it converts to (see :meth:`Codec.coerce_output`); raise
        :class:`OutputTypeError` unless it matches the return annotation."""
        if not self.output.check(value):
            coerced = self.output.coerce_output(value)
            if coerced is not value and self.output.check(coerced):
                return coerced
            raise OutputTypeError(
                f"task {self.task_name!r} is declared to return {self.output.describe()} but "
                f"returned {type(value).__qualname__} ({_short_repr(value)})"
            )
        return value
