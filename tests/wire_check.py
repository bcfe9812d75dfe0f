"""Every message agentd sends, checked against the published schema
(`protocol/agentd.schema.json`) by the test client: the schema is what editor plugins
generate their types from, so a message it does not describe is a bug, whichever side
is wrong.

Stricter than the published schema in one way: an object may not carry a field the
schema does not name (`additionalProperties: false` on every object type). Editors
must ignore unknown fields, but agentd must not send fields its own schema omits.
Values typed `Any` in agentd (a tool's `input`, `metadata`, an error's `data`) stay
unconstrained.

jsonschema-rs rather than the pure-Python jsonschema: a page of 500 messages from
session/messages took jsonschema 2 s to check (0.7 s with the schema inlined), so the
tests that page through 20,000 messages ran out of time in the check alone; jsonschema-rs
takes about a millisecond, and a part/delta costs microseconds, which leaves the reader
thread's pace (and so the flow-control tests) what it was.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

from jsonschema_rs import Draft202012Validator

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "protocol" / "agentd.schema.json"

# LSP's own notification, sent by agentd for its requests the editor no longer needs
# to answer (a run was aborted); it is not agentd's to describe in its schema.
_LSP_NOTIFICATIONS: dict[str, dict[str, Any]] = {
    "$/cancelRequest": {
        "type": "object",
        "properties": {"id": {"type": ["string", "integer"]}},
        "required": ["id"],
        "additionalProperties": False,
    },
}
_ERROR = {
    "type": "object",
    "properties": {
        "code": {"type": "integer"},
        "message": {"type": "string"},
        "data": {},
    },
    "required": ["code", "message"],
    "additionalProperties": False,
}


def _closed(node: Any) -> Any:
    """`node` with `additionalProperties: false` on every object that lists properties."""
    if isinstance(node, dict):
        out = {k: _closed(v) for k, v in node.items()}
        if out.get("type") == "object" and "properties" in out:
            out.setdefault("additionalProperties", False)
        return out
    if isinstance(node, list):
        return [_closed(v) for v in node]
    return node


def _tag_of(members: list[Any]) -> str | None:
    """The property whose constant tells the members of a union apart (`type` of a
    Part, `status` of a ToolState), if there is one."""
    for name in ("type", "status"):
        if all(
            isinstance(m, dict)
            and "const" in m.get("properties", {}).get(name, {})
            and name in m.get("required", [])
            for m in members
        ):
            return name
    return None


def _inlined(node: Any, defs: dict[str, Any], seen: tuple[str, ...] = ()) -> Any:
    """`node` with every `$ref` replaced by the definition, and every tagged union turned
    into a dispatch on its tag: the same meaning, and an error names what is wrong with
    the variant the tag chose ("time.start: "1" is not of type integer") rather than
    "not valid under any of the schemas listed in the 'anyOf' keyword"."""
    if isinstance(node, list):
        return [_inlined(v, defs, seen) for v in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        name = ref.removeprefix("#/$defs/")
        if name in seen:
            raise ValueError(f"recursive schema type {name}: inline it no further")
        return _inlined(defs[name], defs, (*seen, name))
    out = {k: _inlined(v, defs, seen) for k, v in node.items()}
    members = out.get("anyOf")
    tag = _tag_of(members) if isinstance(members, list) else None
    if tag is not None:
        assert members is not None
        values = [m["properties"][tag]["const"] for m in members]
        del out["anyOf"]
        out.update(
            {
                "type": "object",
                "required": [tag],
                "properties": {tag: {"enum": values}},
                "allOf": [
                    {"if": {"properties": {tag: {"const": v}}}, "then": m}
                    for v, m in zip(values, members, strict=True)
                ],
            }
        )
    return out


@functools.cache
def _schema() -> dict[str, Any]:
    return _closed(json.loads(SCHEMA_PATH.read_text(encoding="utf-8")))


@functools.cache
def _validator(method: str, what: str) -> Draft202012Validator | None:
    """The validator of `method`'s params or result (None: the method has none)."""
    schema = _schema()
    if what == "params" and method in _LSP_NOTIFICATIONS:
        return Draft202012Validator(_LSP_NOTIFICATIONS[method])
    if what == "error":
        return Draft202012Validator(_ERROR)
    entry = schema["methods"].get(method)
    if entry is None or what not in entry:
        return None
    return Draft202012Validator(_inlined(copy.deepcopy(entry[what]), schema["$defs"]))


def _problem(validator: Draft202012Validator, value: Any) -> str | None:
    if validator.is_valid(value):
        return None
    error = next(iter(validator.iter_errors(value)))
    where = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in error.instance_path)
    return f"{where}: {error.message}"


def _short(msg: Any) -> str:
    text = json.dumps(msg)
    return text if len(text) <= 600 else text[:600] + "…"


def check_message(msg: Any, sent_methods: list[str] | None) -> str | None:
    """Why `msg` (one message from agentd) breaks the schema, or None when it is valid.
    `sent_methods`: for a response, the methods this client sent under its id (None:
    not a request this client made through `send`)."""
    if not isinstance(msg, dict) or msg.get("jsonrpc") != "2.0":
        return f"not a JSON-RPC 2.0 message: {_short(msg)}"
    if "method" in msg:
        method = msg["method"]
        if "id" in msg:
            entry = _schema()["methods"].get(method)
            if entry is None or entry["sender"] != "agentd" or entry["kind"] != "request":
                return f"request {method!r} is not one agentd sends: {_short(msg)}"
            if not isinstance(msg["id"], str) or not msg["id"].startswith("agentd-"):
                return f"agentd's request id must be a string starting 'agentd-': {_short(msg)}"
        elif method not in _LSP_NOTIFICATIONS:
            entry = _schema()["methods"].get(method)
            if entry is None or entry["sender"] != "agentd" or entry["kind"] != "notification":
                return f"notification {method!r} is not one agentd sends: {_short(msg)}"
        extra = set(msg) - {"jsonrpc", "method", "params", "id"}
        if extra:
            return f"{method}: unexpected members {sorted(extra)}: {_short(msg)}"
        validator = _validator(method, "params")
        if validator is None:
            return None if "params" not in msg else f"{method} takes no params: {_short(msg)}"
        problem = _problem(validator, msg.get("params"))
        return None if problem is None else f"{method} params{problem}: {_short(msg)}"
    if "id" not in msg or ("result" in msg) == ("error" in msg):
        return f"a response needs an id and exactly one of result, error: {_short(msg)}"
    if set(msg) - {"jsonrpc", "id", "result", "error"}:
        return f"unexpected members in a response: {_short(msg)}"
    if "error" in msg:
        problem = _problem(_validator("", "error"), msg["error"])  # type: ignore[arg-type]
        return None if problem is None else f"error{problem}: {_short(msg)}"
    if not sent_methods:
        return None  # an answer to a request sent as raw bytes: the envelope is all we know
    problems = []
    for method in sent_methods:
        validator = _validator(method, "result")
        if validator is None:
            return None  # not a method of agentd's: its error is checked above
        problem = _problem(validator, msg["result"])
        if problem is None:
            return None
        problems.append(f"{method} result{problem}")
    return f"{'; '.join(problems)}: {_short(msg)}"
