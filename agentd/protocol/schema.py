"""JSON Schema for every wire type, generated from the attrs classes and the method table.

`python -m agentd.protocol.schema` prints it; `--check FILE` exits 1 when FILE is stale.
"""

from __future__ import annotations

import json
import sys
import types
import typing
from typing import Any

import attrs

from agentd.protocol import types as t
from agentd.protocol.converter import to_camel
from agentd.protocol.methods import METHODS

# Documents agentd writes and reads outside a method's params and result: the JSON
# export (`session/export` with format "json" answers it as text in `content`;
# `session/import` reads it back).
DOCUMENTS: dict[str, type] = {"sessionExport": t.SessionExport}

_PRIMITIVES = {str: "string", int: "integer", float: "number", bool: "boolean"}


class _Builder:
    def __init__(self) -> None:
        self.defs: dict[str, Any] = {}

    def ref(self, tp: Any) -> dict[str, Any]:
        if tp is Any:
            return {}
        if tp is type(None):
            return {"type": "null"}
        if tp in _PRIMITIVES:
            return {"type": _PRIMITIVES[tp]}
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin is typing.Literal:
            return {"const": args[0]} if len(args) == 1 else {"enum": list(args)}
        if origin in (typing.Union, types.UnionType):
            members = [a for a in args if a is not type(None)]
            if len(members) == 1:
                return self.ref(members[0])
            return {"anyOf": [self.ref(a) for a in members]}
        if origin is list:
            return {"type": "array", "items": self.ref(args[0])}
        if origin is dict:
            return {"type": "object", "additionalProperties": self.ref(args[1])}
        if attrs.has(tp):
            name = tp.__name__
            if name not in self.defs:
                self.defs[name] = {}  # reserve: recursive types
                self.defs[name] = self.object(tp)
            return {"$ref": f"#/$defs/{name}"}
        raise TypeError(f"no schema for {tp!r}")

    def object(self, cls: type) -> dict[str, Any]:
        hints = typing.get_type_hints(cls)
        props: dict[str, Any] = {}
        required: list[str] = []
        for a in attrs.fields(cls):
            name = to_camel(a.name)
            props[name] = self.ref(hints[a.name])
            # Tag fields (`type`, `status`) carry a default in Python but are always
            # present on the wire: required, so generated client types discriminate.
            is_tag = typing.get_origin(hints[a.name]) is typing.Literal
            if a.default is attrs.NOTHING or is_tag:
                required.append(name)
        out: dict[str, Any] = {"type": "object", "properties": props}
        if required:
            out["required"] = required
        if cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "("):
            out["description"] = " ".join(cls.__doc__.split())
        return out


def build_schema() -> dict[str, Any]:
    builder = _Builder()
    methods: dict[str, Any] = {}
    for m in METHODS.values():
        entry: dict[str, Any] = {"sender": m.sender, "kind": m.kind}
        if m.params is not None:
            entry["params"] = builder.ref(m.params)
        if m.kind == "request":
            result = builder.ref(m.result) if m.result is not None else {"type": "null"}
            if m.nullable_result and m.result is not None:
                result = {"anyOf": [result, {"type": "null"}]}
            entry["result"] = result
        methods[m.name] = entry
    documents = {name: builder.ref(cls) for name, cls in DOCUMENTS.items()}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "agentd.schema.json",
        "title": "agentd wire protocol, version 1",
        "description": "Generated from agentd/protocol by `python -m agentd.protocol.schema`. Do not edit.",
        "methods": methods,
        "documents": documents,
        "$defs": dict(sorted(builder.defs.items())),
    }


def render() -> str:
    return json.dumps(build_schema(), indent=2, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = render()
    if argv[:1] == ["--check"]:
        path = argv[1]
        try:
            with open(path, encoding="utf-8") as f:
                current = f.read()
        except FileNotFoundError:
            current = ""
        if current != text:
            sys.stderr.write(f"{path} is stale: run `make schema`\n")
            return 1
        return 0
    if argv[:1] == ["--write"]:
        with open(argv[1], "w", encoding="utf-8") as f:
            f.write(text)
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
