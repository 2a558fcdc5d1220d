"""Command-line options for a task's inputs, derived from its annotations."""

from __future__ import annotations

import enum
import json
import types
import typing
from typing import Any

import click

from ..errors import SerializationError
from ..io import Dir, File
from ..io._remote import is_data_uri, parse_data_uri
from ..types import Codec, Parameter, codec_for


class JsonValue(click.ParamType):
    """Lists, dicts, dataclasses, pydantic models and other structured values, as JSON."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.name = f"JSON {codec.describe()}"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            data = json.loads(value)
        except json.JSONDecodeError as e:
            self.fail(
                f"expected JSON for {self.codec.describe()}, got {value!r} ({e.msg})", param, ctx
            )
        try:
            decoded = self.codec.decode(data, None)
        except Exception as e:
            self.fail(f"{value!r} is not a valid {self.codec.describe()}: {e}", param, ctx)
        if not self.codec.check(decoded):
            self.fail(f"{value!r} is not a valid {self.codec.describe()}", param, ctx)
        return decoded


class ViaCodec(click.ParamType):
    """Scalars with a string form (dates, decimals, enums ...), parsed by their codec."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.name = codec.describe()

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return self.codec.decode(value, None)
        except Exception as e:
            self.fail(f"{value!r} is not a valid {self.codec.describe()}: {e}", param, ctx)


class LocalPath(click.ParamType):
    """``File`` and ``Dir`` inputs: an existing local path, or a reference to data on the
    server (``loom://data/...``, as the web UI's rerun command spells a remote run's files)."""

    def __init__(self, kind: type[File] | type[Dir]) -> None:
        self.kind = kind
        self.name = "FILE" if kind is File else "DIRECTORY"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, self.kind):
            return value
        if is_data_uri(value):
            try:
                ref = parse_data_uri(value)
            except SerializationError as e:
                self.fail(str(e), param, ctx)
            if ref.tree != (self.kind is Dir):
                what = "a directory" if ref.tree else "a file"
                self.fail(f"{value} refers to {what}, not a {self.name.lower()}", param, ctx)
            return self.kind(path=value, name=ref.name)
        try:
            return self.kind.from_local_sync(value)
        except FileNotFoundError as e:
            self.fail(str(e), param, ctx)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return rest[0], True
    return tp, False


def click_type(tp: Any) -> click.ParamType | None:
    """The click type for an annotation; ``None`` means a boolean flag."""
    if tp is bool:
        return None
    if tp is int:
        return click.INT
    if tp is float:
        return click.FLOAT
    if tp is str:
        return click.STRING
    if tp is File or tp is Dir:
        return LocalPath(tp)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return ViaCodec(codec_for(tp))
    codec = codec_for(tp)
    if type(codec).__name__ == "StringFormCodec" and tp is not bytes:
        return ViaCodec(codec)
    return JsonValue(codec)


def option_for(param: Parameter) -> click.Option:
    """A ``--kebab-case`` option for one task input."""
    tp, optional = _unwrap_optional(param.annotation)
    flag = "--" + param.name.replace("_", "-")
    required = param.required and not optional
    ctype = click_type(tp)
    type_text = param.codec.describe()
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        type_text += " (" + ", ".join(str(m.value) for m in tp) + ")"
    # Click >= 8.3 treats an explicit default=None as a value, so required options get none.
    extra: dict[str, Any] = {} if required else {"default": param.default, "show_default": True}
    if param.default is None:
        extra["show_default"] = False
    if ctype is None:
        return click.Option(
            [f"{flag}/--no-{flag[2:]}", param.name], required=required, help=type_text, **extra
        )
    return click.Option([flag, param.name], type=ctype, required=required, help=type_text, **extra)
