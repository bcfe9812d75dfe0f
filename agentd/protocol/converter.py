"""The one cattrs converter for the wire: camelCase names, strict types, tagged unions.

Strict on the way in: cattrs would turn "5" into 5 and 1 into True; the contract says a
known field of the wrong type is -32602, so primitives are checked, not coerced.
Unknown keys are ignored (forward compatibility). On the way out, None-valued fields are
dropped: an absent field and null mean the same.
"""

from __future__ import annotations

import functools
import math
import re
import typing
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast, get_args

import attrs
import cattrs
from cattrs.cols import list_structure_factory, mapping_structure_factory
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from agentd.protocol import types as t
from agentd.protocol.encoding import encoding_problems
from agentd.protocol.methods import METHODS

T = TypeVar("T")

_CAMEL_RE = re.compile(r"_([a-z])")


def to_camel(name: str) -> str:
    return _CAMEL_RE.sub(lambda m: m.group(1).upper(), name)


def wire_name(field: str) -> str:
    """A field's name on the wire: camelCase; `meta` is the Agent Client Protocol's
    `_meta` (no native type has a field of that name)."""
    return "_meta" if field == "meta" else to_camel(field)


def _strict(kind: type, name: str) -> Any:
    def hook(value: Any, _: type) -> Any:
        # bool is an int subclass; a JSON true is never a valid integer here.
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise TypeError(f"expected {name}, got {type(value).__name__}")
        return value

    return hook


def _float_hook(value: Any, _: type) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):  # Python's json parser reads NaN and Infinity
        raise ValueError("expected a finite number")
    return number


def _only(kind: type, name: str, inner: Callable[[Any, Any], Any]) -> Any:
    def hook(value: Any, tp: Any) -> Any:
        if not isinstance(value, kind):
            raise TypeError(f"expected {name}, got {type(value).__name__}")
        return inner(value, tp)

    return hook


def _tagged(union: Any, tag: str) -> Any:
    by_tag: dict[Any, type] = {}
    for cls in get_args(union):
        default = attrs.fields_dict(cls)[tag].default
        by_tag[default] = cls
    names = ", ".join(sorted(by_tag))

    def hook(value: Any, _: type) -> Any:
        if not isinstance(value, dict):
            raise TypeError(f"expected object, got {type(value).__name__}")
        cls = by_tag.get(value.get(tag))
        if cls is None:
            raise ValueError(f"{tag} must be one of {names}")
        return converter.structure(value, cls)

    return hook


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=False, detailed_validation=True)
    conv.register_structure_hook(str, _strict(str, "string"))
    conv.register_structure_hook(int, _strict(int, "integer"))
    conv.register_structure_hook(bool, _strict(bool, "boolean"))
    conv.register_structure_hook(float, _float_hook)
    conv.register_structure_hook(Any, lambda v, _: v)

    def structure_factory(cls: type) -> Any:
        renames = {a.name: override(rename=wire_name(a.name)) for a in attrs.fields(cls)}
        # cattrs types per-attribute overrides as **kwargs beside its bool flags.
        return _only(dict, "object", make_dict_structure_fn(cls, conv, **renames))  # type: ignore[arg-type]

    # cattrs builds a list from any iterable (a string becomes its characters, an object
    # its keys) and fails on a non-object with a Python error: both are checked first.
    def list_factory(tp: Any) -> Any:
        return _only(list, "array", list_structure_factory(tp, conv))

    def mapping_factory(tp: Any) -> Any:
        return _only(dict, "object", mapping_structure_factory(tp, conv))

    def unstructure_factory(cls: type) -> Any:
        renames = {a.name: override(rename=wire_name(a.name)) for a in attrs.fields(cls)}
        base: Callable[[Any], dict[str, Any]] = make_dict_unstructure_fn(
            cls,
            conv,
            **renames,  # type: ignore[arg-type]
        )

        def unstructure(obj: Any) -> dict[str, Any]:
            return {k: v for k, v in base(obj).items() if v is not None}

        return unstructure

    conv.register_structure_hook_factory(attrs.has, structure_factory)
    conv.register_structure_hook_factory(lambda tp: typing.get_origin(tp) is list, list_factory)
    conv.register_structure_hook_factory(lambda tp: typing.get_origin(tp) is dict, mapping_factory)
    conv.register_unstructure_hook_factory(attrs.has, unstructure_factory)
    return conv


converter = _make_converter()
for _union, _tag in ((t.Part, "type"), (t.ToolState, "status"), (t.InputPart, "type")):
    converter.register_structure_hook(_union, _tagged(_union, _tag))
    # Unstructure by the runtime class, not the declared union.
    converter.register_unstructure_hook(_union, lambda obj: converter.unstructure(obj, type(obj)))
converter.register_unstructure_hook(t.PartDeltaParams, t.PartDeltaParams.to_wire)


def _message_updated_hook() -> Callable[[t.MessageUpdatedParams], dict[str, Any]]:
    generic = converter.get_unstructure_hook(t.MessageUpdatedParams)

    def unstructure(params: t.MessageUpdatedParams) -> dict[str, Any]:
        data = generic(params)
        # The message's parts travel as part/updated, never inside message/updated.
        data["message"].pop("parts", None)
        return data

    return unstructure


converter.register_unstructure_hook(t.MessageUpdatedParams, _message_updated_hook())


def prepare_hooks() -> None:
    """Make now every hook the method table's types need: cattrs makes each on first use,
    which cost a daemon's first turn about 25 ms. (Safe from a thread: a hook made twice
    is the same hook.)"""
    for method in METHODS.values():
        incoming = method.sender == "editor"
        for cls, structured in ((method.params, incoming), (method.result, not incoming)):
            if cls is None:
                continue
            if structured:
                converter.get_structure_hook(cls)
            else:
                converter.get_unstructure_hook(cls)
    for union in (t.Part, t.ToolState, t.InputPart):
        for member in typing.get_args(union):
            converter.get_unstructure_hook(member)
            converter.get_structure_hook(member)


def structure(data: Any, cls: type[Any]) -> Any:
    return converter.structure(data, cls)


class Unencodable(ValueError):
    """Params holding what cannot be stored or sent (see `agentd.protocol.encoding`)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def structure_params(data: Any, cls: type[Any]) -> Any:
    """Params from the editor: refused whole (nothing is stored) when any value in them
    cannot be encoded, else structured strictly."""
    problems = encoding_problems(data)
    if problems:
        raise Unencodable(problems)
    return converter.structure(data, cls)


def unstructure(obj: Any) -> Any:
    return converter.unstructure(obj)


def params_to_wire(method: str, params: t.NotificationParams | t.RequestParams) -> Any:
    """The JSON value of the params of `method`, a notification or request agentd sends
    to the editor: `params` must be of the type the method table gives it."""
    expected = METHODS[method].params
    if type(params) is not expected:
        raise TypeError(f"{method} takes {expected!r}, not {type(params).__name__}")
    return converter.unstructure(params)


class InvalidResult(ValueError):
    """The editor's answer to one of agentd's requests is not of the result type;
    `problems` name each offending field (`result.output: required field missing`)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def structure_result(data: Any, cls: type[T]) -> T:
    """The editor's answer to one of agentd's requests, structured strictly (as params
    from the editor are); raises InvalidResult."""
    try:
        return cast(T, converter.structure(data, cls))
    except Exception as exc:
        raise InvalidResult(describe_error(exc, path="result")) from exc


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _classes(tp: Any) -> list[type]:
    """The attrs classes a field type may hold (through Optional, unions and lists)."""
    if attrs.has(tp):
        return [tp]
    return [c for arg in get_args(tp) for c in _classes(arg)]


@functools.cache
def _holds_secrets(cls: type) -> bool:
    return any(
        f.metadata.get("secret") or any(_holds_secrets(c) for c in _classes(_hints(cls)[f.name]))
        for f in attrs.fields(cls)
    )


def secret_values(cls: type, raw: Any) -> list[str]:
    """The strings in `raw` (wire params of type `cls`, not yet structured) that sit in
    fields marked secret (`metadata=t.SECRET`): a string, or the values of a table or
    list. Whatever the rest of the params look like, so that even params rejected as
    invalid have their secrets known before anything can log them."""
    out: list[str] = []
    if attrs.has(cls) and _holds_secrets(cls):
        _collect(cls, raw, out)
    return out


def _collect(cls: type, raw: Any, out: list[str]) -> None:
    if isinstance(raw, list):
        for item in raw:
            _collect(cls, item, out)
        return
    if not isinstance(raw, dict):
        return
    hints = _hints(cls)
    for field in attrs.fields(cls):
        value = raw.get(wire_name(field.name))
        if value is None:
            continue
        if field.metadata.get("secret"):
            items = value.values() if isinstance(value, dict) else value
            if isinstance(items, str):
                items = [items]
            if isinstance(items, Iterable):
                out.extend(v for v in items if isinstance(v, str))
            continue
        for inner in _classes(hints[field.name]):
            if _holds_secrets(inner):
                _collect(inner, value, out)


def _format_exception(exc: BaseException, expected: type | None) -> str:
    if isinstance(exc, KeyError):
        return "required field missing"
    if "not in literal" in str(exc):
        literals = [a for a in get_args(expected) if typing.get_origin(a) is typing.Literal]
        values = get_args(literals[0]) if literals else get_args(expected)
        allowed = ", ".join(repr(v) for v in values)
        return f"must be one of {allowed}"
    if isinstance(exc, TypeError | ValueError) and str(exc):
        return str(exc)
    return f"invalid value ({type(exc).__name__})"


def describe_error(exc: BaseException, path: str = "params") -> list[str]:
    """Messages naming each offending field by its wire name, e.g.
    `params.sessionId: expected string, got int`."""
    if isinstance(exc, Unencodable):
        return exc.problems
    try:
        lines = cattrs.transform_error(exc, path=path, format_exception=_format_exception)
    except Exception:
        lines = [str(exc)]
    out = []
    for line in lines:
        message, _, path = line.rpartition(" @ ")
        out.append(f"{to_camel(path)}: {message}" if message else line)
    return out or [str(exc)]


__all__ = [
    "InvalidResult",
    "Unencodable",
    "converter",
    "describe_error",
    "params_to_wire",
    "secret_values",
    "structure",
    "structure_params",
    "structure_result",
    "to_camel",
    "unstructure",
    "wire_name",
]
