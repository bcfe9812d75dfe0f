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
from typing import Any, get_args

import attrs
import cattrs
from cattrs.cols import list_structure_factory
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from agentd.protocol import types as t
from agentd.protocol.encoding import encoding_problems

_CAMEL_RE = re.compile(r"_([a-z])")


def to_camel(name: str) -> str:
    return _CAMEL_RE.sub(lambda m: m.group(1).upper(), name)


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
        renames = {a.name: override(rename=to_camel(a.name)) for a in attrs.fields(cls)}
        # cattrs types per-attribute overrides as **kwargs beside its bool flags.
        return make_dict_structure_fn(cls, conv, **renames)  # type: ignore[arg-type]

    def unstructure_factory(cls: type) -> Any:
        renames = {a.name: override(rename=to_camel(a.name)) for a in attrs.fields(cls)}
        base: Callable[[Any], dict[str, Any]] = make_dict_unstructure_fn(
            cls,
            conv,
            **renames,  # type: ignore[arg-type]
        )

        def unstructure(obj: Any) -> dict[str, Any]:
            return {k: v for k, v in base(obj).items() if v is not None}

        return unstructure

    conv.register_structure_hook_factory(attrs.has, structure_factory)

    def list_factory(tp: Any) -> Any:
        # cattrs makes a list of any iterable: a table ({}) or a string would pass.
        base = list_structure_factory(tp, conv)

        def hook(value: Any, cls: Any) -> Any:
            if not isinstance(value, list):
                raise TypeError(f"expected array, got {type(value).__name__}")
            return base(value, cls)

        return hook

    conv.register_structure_hook_factory(lambda tp: typing.get_origin(tp) is list, list_factory)
    conv.register_unstructure_hook_factory(attrs.has, unstructure_factory)
    return conv


converter = _make_converter()
for _union, _tag in ((t.Part, "type"), (t.ToolState, "status"), (t.InputPart, "type")):
    converter.register_structure_hook(_union, _tagged(_union, _tag))
    # Unstructure by the runtime class, not the declared union.
    converter.register_unstructure_hook(_union, lambda obj: converter.unstructure(obj, type(obj)))


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
        value = raw.get(to_camel(field.name))
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


def describe_error(exc: BaseException) -> list[str]:
    """Messages naming each offending field by its wire name, e.g.
    `params.sessionId: expected string, got int`."""
    if isinstance(exc, Unencodable):
        return exc.problems
    try:
        lines = cattrs.transform_error(exc, path="params", format_exception=_format_exception)
    except Exception:
        lines = [str(exc)]
    out = []
    for line in lines:
        message, _, path = line.rpartition(" @ ")
        out.append(f"{to_camel(path)}: {message}" if message else line)
    return out or [str(exc)]


__all__ = [
    "Unencodable",
    "converter",
    "describe_error",
    "secret_values",
    "structure",
    "structure_params",
    "to_camel",
    "unstructure",
]
