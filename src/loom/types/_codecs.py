"""Codecs: per-type validation and lossless JSON encoding.

``codec_for(tp)`` builds (once per type, then cached) a :class:`Codec` that can check a value
against the annotation, encode it to JSON-compatible data and decode it back to exactly the
declared type. JSON-native shapes stay readable; values that travel by reference (files,
directories, data frames) go through a :class:`BlobStore`; anything the engine does not know
is pickled with cloudpickle.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import dataclasses
import datetime as dt
import enum
import json
import math
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path, PurePath
from typing import Any
from uuid import UUID

from ..errors import SerializationError
from ..wire import VALUE_TAG, ValueKind, value_kind
from ._store import BlobStore

Json = Any


def type_name(tp: Any) -> str:
    """A short readable name for an annotation: ``int``, ``list[str]``, ``Optional[Point]``."""
    if tp is Any:
        return "Any"
    if tp is None or tp is type(None):
        return "None"
    if tp is Ellipsis:
        return "..."
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is None:
        return tp.__qualname__ if isinstance(tp, type) else repr(tp).replace("typing.", "")
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is typing.Literal:
        return f"Literal[{', '.join(repr(a) for a in args)}]"
    if origin is types.UnionType:
        return " | ".join(type_name(a) for a in args)
    if origin is typing.Union:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(args) == 2:
            return f"Optional[{type_name(rest[0])}]"
        return f"Union[{', '.join(type_name(a) for a in args)}]"
    base = getattr(origin, "__qualname__", repr(origin))
    return f"{base}[{', '.join(type_name(a) for a in args)}]" if args else base


class Codec:
    """Checks, encodes and decodes values of one declared type."""

    __slots__ = ("tp",)

    #: Whether values travel by reference to content in the store (``File``, ``Dir``): found
    #: and stored inside values other codecs cannot see into (pydantic models).
    by_reference = False

    def __init__(self, tp: Any) -> None:
        self.tp = tp

    def check(self, value: Any) -> bool:
        raise NotImplementedError

    def encode(self, value: Any, store: BlobStore | None) -> Json:
        raise NotImplementedError

    def decode(self, data: Json, store: BlobStore | None) -> Any:
        raise NotImplementedError

    def coerce(self, value: Any) -> Any:
        """An input that fails :meth:`check` but stands for one that passes (a ``dict`` for a
        model or dataclass, as Flyte 2 takes them), converted; or ``value`` unchanged."""
        return value

    def coerce_output(self, value: Any) -> Any:
        """As :meth:`coerce`, for a task's return value: stricter (a dataclass or model output
        must be an instance), so by default nothing is converted."""
        return value

    def describe(self) -> str:
        return type_name(self.tp)


# -- leaves -----------------------------------------------------------------------------------


def _pickle(value: Any) -> Json:
    import cloudpickle

    try:
        data = base64.b64encode(cloudpickle.dumps(value)).decode()
        return {VALUE_TAG: ValueKind.PICKLE.value, "data": data}
    except Exception as e:
        raise SerializationError(
            f"cannot pickle a value of type {type(value).__qualname__}: {e}. Give the parameter "
            "a concrete type annotation loom understands, or make the value picklable."
        ) from e


def _unpickle(data: Json) -> Any:
    import cloudpickle

    if value_kind(data) is ValueKind.PICKLE and isinstance(data.get("data"), str):
        raw = data["data"]
    elif isinstance(data, dict) and isinstance(data.get("__pickle__"), str):
        raw = data["__pickle__"]  # as values were written before they carried a tag
    else:
        raise SerializationError(f"expected pickled data, got {str(data)[:80]!r}")
    return cloudpickle.loads(base64.b64decode(raw))


_JSON_SCALARS = (str, int, float, bool, type(None))
_NON_FINITE = ("nan", "inf", "-inf")


def _json_shape(data: Json) -> str:
    """What a piece of JSON is, for an error message: its type and a short excerpt."""
    if data is None:
        return "null"
    kind = {dict: "object", list: "array", str: "string", bool: "boolean"}
    text = json.dumps(data, default=str)
    return f"{kind.get(type(data), 'number')} {text if len(text) <= 40 else text[:37] + '...'}"


class AnyCodec(Codec):
    """Unannotated or ``Any``: JSON scalars inline, everything else pickled."""

    __slots__ = ()

    def check(self, value: Any) -> bool:
        return True

    def encode(self, value: Any, store: BlobStore | None) -> Json:
        if type(value) in _JSON_SCALARS and not (type(value) is float and not math.isfinite(value)):
            return value
        return _pickle(value)  # (a NaN or an infinity too: JSON has neither)

    def decode(self, data: Json, store: BlobStore | None) -> Any:
        return _unpickle(data) if isinstance(data, dict) else data


class PickleCodec(Codec):
    """Any other class: checked with ``isinstance``, carried by cloudpickle."""

    __slots__ = ()

    def check(self, value: Any) -> bool:
        return isinstance(value, self.tp)

    def encode(self, value: Any, store: BlobStore | None) -> Json:
        return _pickle(value)

    def decode(self, data: Json, store: BlobStore | None) -> Any:
        value = _unpickle(data)
        cls = type(value)
        if (
            cls is not self.tp
            and cls.__module__ == "__main__"
            and cls.__qualname__ == getattr(self.tp, "__qualname__", None)
            and not isinstance(value, self.tp)
        ):
            # A class of the client's script travels by value (cloudpickle cannot name
            # ``__main__``); here the script is the run's module, whose class is the same one.
            with contextlib.suppress(TypeError):  # a layout Python will not swap: left as is
                value.__class__ = self.tp
        return value


class NoneCodec(Codec):
    __slots__ = ()

    def check(self, value: Any) -> bool:
        return value is None

    def encode(self, value: Any, store: BlobStore | None) -> Json:
        return None

    def decode(self, data: Json, store: BlobStore | None) -> Any:
        return None


class IntCodec(Codec):
    __slots__ = ()

    def check(self, value: Any) -> bool:
        return type(value) is int or (isinstance(value, int) and not isinstance(value, bool))

    def encode(self, value: Any, store: BlobStore | None) -> Json:
        return int(value)

    def decode(self, data: Json, store: BlobStore | None) -> Any:
        if type(data) is not int:
            raise SerializationError(f"expected an int, got {_json_shape(data)}")
        return data


class FloatCodec(Codec):
    """``float`` accepts ints too (the numeric tower) and always decodes to ``float``."""

    __slots__ = ()

    def check(self, value: Any) -> bool:
        return type(value) is float or (
            isinstance(value, int | float) and not isinstance(value, bool)
        )

    def encode(self, value: Any, store: BlobStore | None) -> Json:
        number = float(value)
        # JSON has no NaN or Infinity (the server refuses them; pydantic writes null): as text
        return number if math.isfinite(number) else repr(number)

    def decode(self, data: Json, store: BlobStore | None) -> Any:
        if type(data) in (int, float) or data in _NON_FINITE:  # (as encode writes NaN and ±inf)
            return float(data)
        raise SerializationError(f"expected a number, got {_json_shape(data)}")


class ExactCodec(Codec):
    """``str`` and ``bool``: JSON-native, checked with ``isinstance``."""

    __slots__ = ()

    def check(self, value: Any) -> bool:
        return isinstance(value, self.tp)

    def encode(self, value: Any, store: BlobStore | None) -> Json:
        return value

    def decode(self, data: Json, store: BlobStore | None) -> Any:
        if type(data) is not self.tp:  # JSON gives exactly str or bool; no conversions
            raise SerializationError(f"expected a {self.tp.__name__}, got {_json_shape(data)}")
        return data


class StringFormCodec(Codec):
    """Types with a lossless string form: bytes, datetimes, decimals, UUIDs, paths."""

    __slots__ = ("_decode", "_encode")

    def __init__(
        self, tp: Any, encode: Callable[[Any], Json], decode: Callable[[Json], Any]
    ) -> None:
        super().__init__(tp)
        self._encode = encode
        self._decode = decode

    def check(self, value: Any) -> bool:
        # datetime is a subclass of date; a date parameter must not silently take a datetime
        if self.tp is dt.date and isinstance(value, dt.datetime):
            return False
        return isinstance(value, self.tp)

    def encode(self, value: Any, store: BlobStore | None) -> Json:
        return self._encode(value)

    def decode(self, data: Json, store: BlobStore | None) -> Any:
        return self._decode(data)


def _encode_datetime(value: dt.datetime) -> Json:
    zone = getattr(value.tzinfo, "key", None)  # a zoneinfo.ZoneInfo keeps its name
    return value.isoformat() if zone is None else [value.isoformat(), zone]


def _decode_datetime(data: Json) -> dt.datetime:
    if isinstance(data, list):
        from zoneinfo import ZoneInfo

        return dt.datetime.fromisoformat(data[0]).astimezone(ZoneInfo(data[1]))
    return dt.datetime.fromisoformat(data)


_STRING_FORMS: dict[Any, tuple[Callable[[Any], Json], Callable[[Json], Any]]] = {
    bytes: (lambda v: base64.b64encode(v).decode(), base64.b64decode),
    dt.datetime: (_encode_datetime, _decode_datetime),
    dt.date: (lambda v: v.isoformat(), dt.date.fromisoformat),
    dt.time: (lambda v: v.isoformat(), dt.time.fromisoformat),
    dt.timedelta: (
        lambda v: [v.days, v.seconds, v.microseconds],
        lambda d: dt.timedelta(days=d[0], seconds=d[1], microseconds=d[2]),
    ),
    Decimal: (str, Decimal),
    UUID: (str, UUID),
    Path: (str, Path),
    PurePath: (str, PurePath),
}


class EnumCodec(Codec):
    __slots__ = ()

    def check(self, value: Any) -> bool:
        return isinstance(value, self.tp)

    def encode(self, value: Any, store: BlobStore | None) -> Json:
        return value.value if type(value.value) in _JSON_SCALARS else value.name

    def decode(self, data: Json, store: BlobStore | None) -> Any:
        try:
            return self.tp(data)
        except ValueError:
            try:
                return self.tp[data]
            except KeyError as e:
                choices = ", ".join(repr(m.value) for m in self.tp)
                raise SerializationError(
                    f"{data!r} is not a {self.describe()}; choose one of {choices}"
                ) from e


class LiteralCodec(Codec):
    __slots__ = ("values",)

    def __init__(self, tp: Any) -> None:
        super().__init__(tp)
        self.values = typing.get_args(tp)

    def _index(self, value: Any) -> int | None:
        # exact type too: Literal[0, 1] must not accept True or 1.0
        for i, allowed in enumerate(self.values):
            if type(value) is type(allowed) and value == allowed:
                return i
        return None

    def check(self, value: Any) -> bool:
        return self._index(value) is not None

    def encode(self, value: Any, store: BlobStore | None) -> Json:
        if type(value) in _JSON_SCALARS:
            return value
        return {"literal": self._index(value)}  # e.g. enum members: by position

    def decode(self, data: Json, store: BlobStore | None) -> Any:
        if isinstance(data, dict) and isinstance(data.get("literal"), int):
            return self.values[data["literal"]]
        if self._index(data) is None:
            raise SerializationError(f"{data!r} is not one of {list(self.values)}")
        return data


# -- containers -------------------------------------------------------------------------------


class OptionalCodec(Codec):
    __slots__ = ("inner",)

    def __init__(self, tp: Any, inner: Codec) -> None:
        super().__init__(tp)
        self.inner = inner

    def check(self, value: Any) -> bool:
        return value is None or self.inner.check(value)

    def encode(self, value: Any, store: BlobStore | None) -> Json:
        return None if value is None else self.inner.encode(value, store)

    def decode(self, data: Json, store: BlobStore | None) -> Any:
        return None if data is None else self.inner.decode(data, store)


class UnionCodec(Codec):
    """Tags the encoded value with the index of the first member type it matches."""

    __slots__ = ("members",)

    def __init__(self, tp: Any, members: list[Codec]) -> None:
        super().__init__(tp)
        self.members = members

    def check(self, value: Any) -> bool:
        return any(m.check(value) for m in self.members)

    def _member_for(self, value: Any) -> Codec:
        # an exact type match first, so Union[float, int] keeps an int an int
        for member in self.members:
            if member.tp is type(value):
                return member
        for member in self.members:
            if member.check(value):
                return member
        raise SerializationError(f"{type(value).__qualname__} is not a {self.describe()}")

    def encode(self, value: Any, store: BlobStore | None) -> Json:
        member = self._member_for(value)
        # tagged by the member's name, not its position: `int | str` and `str | int` agree
        return {"union": member.describe(), "value": member.encode(value, store)}

    def decode(self, data: Json, store: BlobStore | None) -> Any:
        tag = data["union"]
        for member in self.members:
            if member.describe() == tag:
                return member.decode(data["value"], store)
        raise SerializationError(f"{tag!r} is not a member of {self.describe()}")


class ListCodec(Codec):
    __slots__ = ("accepts", "container", "item")

    def __init__(self, tp: Any, item: Codec, container: Any = list, accepts: Any = None) -> None:
        super().__init__(tp)
        self.item = item
        self.container = container  # what decoding builds
        self.accepts = accepts or container  # what checking allows

    def check(self, value: Any) -> bool:
        if not isinstance(value, self.accepts) or isinstance(value, str | bytes):
            return False
        if isinstance(self.item, AnyCodec):
            return True
        check = self.item.check
        return all(check(v) for v in value)

    def encode(self, value: Any, store: BlobStore | None) -> Json:
        encode = self.item.encode
        items = [encode(v, store) for v in value]
        if self.container in (set, frozenset):  # a stable order keeps cache keys stable
            items.sort(key=repr)
        return items

    def decode(self, data: Json, store: BlobStore | None) -> Any:
        if not isinstance(data, list):
            raise SerializationError(f"expected a JSON array, got {_json_shape(data)}")
        decode = self.item.decode
        return self.container(decode(v, store) for v in data)


class TupleCodec(Codec):
    """Fixed-length ``tuple[A, B]`` (variable-length tuples use :class:`ListCodec`)."""

    __slots__ = ("items",)

    def __init__(self, tp: Any, items: list[Codec]) -> None:
        super().__init__(tp)
        self.items = items

    def check(self, value: Any) -> bool:
        return (
            isinstance(value, tuple)
            and len(value) == len(self.items)
            and all(c.check(v) for c, v in zip(self.items, value, strict=True))
        )

    def encode(self, value: Any, store: BlobStore | None) -> Json:
        return [c.encode(v, store) for c, v in zip(self.items, value, strict=True)]

    def decode(self, data: Json, store: BlobStore | None) -> Any:
        if not isinstance(data, list) or len(data) != len(self.items):
            raise SerializationError(
                f"expected a JSON array of {len(self.items)} items, got {_json_shape(data)}"
            )
        return tuple(c.decode(v, store) for c, v in zip(self.items, data, strict=True))


class DictCodec(Codec):
    """``dict[str, V]`` encodes as a JSON object; other key types as a list of pairs."""

    __slots__ = ("key", "str_keys", "value")

    def __init__(self, tp: Any, key: Codec, value: Codec) -> None:
        super().__init__(tp)
        self.key = key
        self.value = value
        self.str_keys = key.tp is str

    def check(self, value: Any) -> bool:
        if not isinstance(value, dict):
            return False
        if isinstance(self.key, AnyCodec) and isinstance(self.value, AnyCodec):
            return True
        kc, vc = self.key.check, self.value.check
        return all(kc(k) and vc(v) for k, v in value.items())

    def encode(self, value: Any, store: BlobStore | None) -> Json:
        ve = self.value.encode
        if self.str_keys:
            return {k: ve(v, store) for k, v in value.items()}
        ke = self.key.encode
        return [[ke(k, store), ve(v, store)] for k, v in value.items()]

    def decode(self, data: Json, store: BlobStore | None) -> Any:
        vd = self.value.decode
        if self.str_keys:
            if not isinstance(data, dict):
                raise SerializationError(f"expected a JSON object, got {_json_shape(data)}")
            return {k: vd(v, store) for k, v in data.items()}
        if not isinstance(data, list) or not all(isinstance(p, list) and len(p) == 2 for p in data):
            raise SerializationError(f"expected [key, value] pairs, got {_json_shape(data)}")
        kd = self.key.decode
        return {kd(k, store): vd(v, store) for k, v in data}


class FieldsCodec(Codec):
    """Dataclasses and NamedTuples: one codec per field, resolved on first use."""

    __slots__ = ("_fields",)

    def __init__(self, tp: Any) -> None:
        super().__init__(tp)
        self._fields: dict[str, Codec] | None = None

    @property
    def fields(self) -> dict[str, Codec]:
        if self._fields is None:
            hints = typing.get_type_hints(self.tp)
            names = (
                [f.name for f in dataclasses.fields(self.tp)]
                if dataclasses.is_dataclass(self.tp)
                else list(self.tp._fields)
            )
            self._fields = {n: codec_for(hints.get(n, Any)) for n in names}
        return self._fields

    def check(self, value: Any) -> bool:
        return isinstance(value, self.tp)

    def coerce(self, value: Any) -> Any:
        if isinstance(value, dict) and dataclasses.is_dataclass(self.tp):
            fields = self.fields
            cls: Any = self.tp
            coerced = {k: fields[k].coerce(v) if k in fields else v for k, v in value.items()}
            try:
                return cls(**coerced)
            except TypeError:  # missing or unknown fields: reported as the input's type
                return value
        return value

    def encode(self, value: Any, store: BlobStore | None) -> Json:
        return {n: c.encode(getattr(value, n), store) for n, c in self.fields.items()}

    def decode(self, data: Json, store: BlobStore | None) -> Any:
        if not isinstance(data, dict):
            raise SerializationError(
                f"{self.describe()} needs a JSON object with fields {list(self.fields)}, "
                f"got {type(data).__name__}"
            )
        unknown = set(data) - set(self.fields)
        if unknown:
            raise SerializationError(
                f"{self.describe()} has no field(s) {sorted(unknown)}; "
                f"fields are {list(self.fields)}"
            )
        values = {n: self.fields[n].decode(v, store) for n, v in data.items()}
        cls: Any = self.tp
        if not dataclasses.is_dataclass(cls):
            return cls(**values)
        init = {f.name for f in dataclasses.fields(cls) if f.init}
        obj = self.tp(**{k: v for k, v in values.items() if k in init})
        for k, v in values.items():
            if k not in init:
                object.__setattr__(obj, k, v)
        return obj


class TypedDictCodec(Codec):
    """``TypedDict`` classes: a JSON object with one codec per key (optional keys may be
    missing)."""

    __slots__ = ("_fields", "_required")

    def __init__(self, tp: Any) -> None:
        super().__init__(tp)
        self._fields: dict[str, Codec] | None = None
        self._required: frozenset[str] = frozenset()

    @property
    def fields(self) -> dict[str, Codec]:
        if self._fields is None:
            # read from the annotations themselves: under `from __future__ import annotations`
            # Python cannot see NotRequired[...] when it builds __required_keys__
            hints = typing.get_type_hints(self.tp, include_extras=True)
            total = getattr(self.tp, "__total__", True)
            required = set()
            fields = {}
            for name, annotated in hints.items():
                origin = typing.get_origin(annotated)
                marker = getattr(origin, "_name", None) or getattr(origin, "__name__", None)
                hint = annotated
                if marker in ("NotRequired", "Required"):
                    hint = typing.get_args(annotated)[0]
                if marker == "Required" or (total and marker != "NotRequired"):
                    required.add(name)
                fields[name] = codec_for(hint)
            self._required = frozenset(required)
            self._fields = fields
        return self._fields

    def check(self, value: Any) -> bool:
        fields = self.fields
        if not isinstance(value, dict) or not self._required <= value.keys():
            return False
        return all(k in fields and fields[k].check(v) for k, v in value.items())

    def encode(self, value: Any, store: BlobStore | None) -> Json:
        fields = self.fields
        return {k: fields[k].encode(v, store) for k, v in value.items()}

    def decode(self, data: Json, store: BlobStore | None) -> Any:
        if not isinstance(data, dict):
            raise SerializationError(f"{self.describe()} needs a JSON object")
        fields = self.fields
        unknown = set(data) - set(fields)
        if unknown:
            raise SerializationError(f"{self.describe()} has no key(s) {sorted(unknown)}")
        return {k: fields[k].decode(v, store) for k, v in data.items()}


class PydanticCodec(Codec):
    """Pydantic models as their JSON dump. ``File``/``Dir`` values inside (which pydantic
    dumps as plain fields) are stored first, so the dump holds references to stored content."""

    __slots__ = ("_refs",)

    def __init__(self, tp: Any) -> None:
        super().__init__(tp)
        self._refs: bool | None = None  # whether the model's fields can hold a File or Dir

    def check(self, value: Any) -> bool:
        return isinstance(value, self.tp)

    def encode(self, value: Any, store: BlobStore | None) -> Json:
        if store is not None:
            if self._refs is None:
                self._refs = _may_hold_refs(self.tp, set())
            if self._refs:
                value = _store_refs(value, store)
        return value.model_dump(mode="json")

    def decode(self, data: Json, store: BlobStore | None) -> Any:
        return self.tp.model_validate(data)

    def coerce(self, value: Any) -> Any:
        if isinstance(value, dict):
            try:
                return self.tp.model_validate(value)
            except ValueError:  # pydantic's ValidationError: reported as the input's type
                return value
        return value


_PLAIN = frozenset({str, int, float, bool, bytes, type(None), *_STRING_FORMS})


def _may_hold_refs(tp: Any, seen: set[Any]) -> bool:
    """Whether a value of annotation ``tp`` can contain a by-reference value (decided once per
    model, so models without files cost nothing more to encode)."""
    if tp is Any or tp is object or isinstance(tp, typing.TypeVar):
        return True
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return _may_hold_refs(args[0], seen)
    if origin is typing.Literal:
        return False
    if origin is not None:
        return not args or any(_may_hold_refs(a, seen) for a in args if a is not Ellipsis)
    if not isinstance(tp, type) or tp in _PLAIN or issubclass(tp, enum.Enum):
        return False
    if tp in seen:
        return False
    seen.add(tp)
    if tp in (list, tuple, set, frozenset, dict):
        return True
    try:
        if _is_pydantic_model(tp):
            fields = typing.cast(Any, tp).model_fields.values()
            return any(_may_hold_refs(f.annotation, seen) for f in fields)
        if dataclasses.is_dataclass(tp) or (issubclass(tp, tuple) and hasattr(tp, "_fields")):
            if codec_for(tp).by_reference:
                return True
            return any(_may_hold_refs(h, seen) for h in typing.get_type_hints(tp).values())
    except Exception:  # an annotation that does not resolve: look at the values instead
        return True
    return False


def _store_refs(value: Any, store: BlobStore) -> Any:
    """``value`` with every by-reference value inside it stored and replaced by the stored
    reference (the same object where nothing changed)."""
    tp = type(value)
    if tp in _PLAIN:
        return value
    if tp in (list, tuple, set, frozenset):
        items = [_store_refs(v, store) for v in value]
        changed = any(a is not b for a, b in zip(items, value, strict=True))
        return tp(items) if changed else value
    if tp is dict:
        pairs = {k: _store_refs(v, store) for k, v in value.items()}
        return pairs if any(pairs[k] is not v for k, v in value.items()) else value
    if _is_pydantic_model(tp):
        update = {}
        for name in tp.model_fields:
            item = getattr(value, name, None)
            stored = _store_refs(item, store)
            if stored is not item:
                update[name] = stored
        return value.model_copy(update=update) if update else value
    if dataclasses.is_dataclass(tp) or (issubclass(tp, tuple) and hasattr(tp, "_fields")):
        codec = codec_for(tp)
        if codec.by_reference:
            return codec.decode(codec.encode(value, store), store)
        if isinstance(value, tuple):  # a NamedTuple
            items = [_store_refs(v, store) for v in value]
            changed = any(a is not b for a, b in zip(items, value, strict=True))
            return tp(*items) if changed else value
        changes = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name, None)
            stored = _store_refs(item, store)
            if stored is not item:
                changes[f.name] = stored
        if not changes:
            return value
        copied = copy.copy(value)
        for name, stored in changes.items():
            object.__setattr__(copied, name, stored)  # (frozen dataclasses too)
        return copied
    return value


# -- construction -----------------------------------------------------------------------------

CodecFactory = Callable[[Any], Codec | None]
_factories: list[CodecFactory] = []
_cache: dict[tuple[Any, Any, Any], Codec] = {}


def register_codec_factory(factory: CodecFactory) -> None:
    """Teach the engine a new type: ``factory(tp)`` returns a codec or ``None`` to pass."""
    _factories.insert(0, factory)
    _cache.clear()


def codec_for(tp: Any) -> Codec:
    """The codec for an annotation, built once and cached."""
    # Equal annotations can differ in ways that matter here (`int | str == str | int`,
    # `Optional[int] == int | None`), so the key also has the spelling's type and argument order.
    key = (tp, type(tp), typing.get_args(tp))
    try:
        return _cache[key]
    except KeyError:
        pass
    except TypeError:  # unhashable annotation: build each time
        return _build(tp)
    codec = _cache[key] = _build(tp)
    return codec


def _is_pydantic_model(tp: Any) -> bool:
    pydantic = sys.modules.get("pydantic")  # never import pydantic just to ask
    return pydantic is not None and isinstance(tp, type) and issubclass(tp, pydantic.BaseModel)


def _is_typeddict(tp: Any) -> bool:
    extensions = sys.modules.get("typing_extensions")  # its TypedDict is another class
    return typing.is_typeddict(tp) or (extensions is not None and extensions.is_typeddict(tp))


_io_registered = False


def _build(tp: Any) -> Codec:
    global _io_registered
    if not _io_registered:  # the io types register their codecs when loom.io is imported
        _io_registered = True
        import loom.io  # noqa: F401
    for factory in _factories:
        codec = factory(tp)
        if codec is not None:
            return codec
    if tp is Any or tp is object or tp is typing.Any:
        return AnyCodec(tp)
    if tp is None or tp is type(None):
        return NoneCodec(tp)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return codec_for(args[0])
    if origin is typing.Union or origin is types.UnionType:
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1 and len(args) == 2:
            return OptionalCodec(tp, codec_for(non_none[0]))
        return UnionCodec(tp, [codec_for(a) for a in args])
    if origin is typing.Literal:
        return LiteralCodec(tp)
    if origin is list or tp is list:
        return ListCodec(tp, codec_for(args[0] if args else Any))
    if origin is Sequence or tp is Sequence:
        return ListCodec(tp, codec_for(args[0] if args else Any), list, Sequence)
    if origin in (set, frozenset) or tp in (set, frozenset):
        container = origin or tp
        return ListCodec(tp, codec_for(args[0] if args else Any), container)
    if origin is tuple or tp is tuple:
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            return ListCodec(tp, codec_for(args[0] if args else Any), tuple)
        return TupleCodec(tp, [codec_for(a) for a in args])
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        k, v = args if args else (Any, Any)
        return DictCodec(tp, codec_for(k), codec_for(v))
    if tp is int:
        return IntCodec(tp)
    if tp is float:
        return FloatCodec(tp)
    if tp in (str, bool):
        return ExactCodec(tp)
    if tp in _STRING_FORMS:
        return StringFormCodec(tp, *_STRING_FORMS[tp])
    if isinstance(tp, type):
        if issubclass(tp, enum.Enum):
            return EnumCodec(tp)
        if issubclass(tp, tuple) and hasattr(tp, "_fields"):
            return FieldsCodec(tp)
        if dataclasses.is_dataclass(tp):
            return FieldsCodec(tp)
        if _is_pydantic_model(tp):
            return PydanticCodec(tp)
        if _is_typeddict(tp):
            return TypedDictCodec(tp)
        return PickleCodec(tp)
    return AnyCodec(tp)
