"""What can be stored and sent: JSON values that orjson encodes.

Everything agentd stores (session logs, the catalog) and sends (notifications, requests
to the model) goes through orjson, which refuses three things Python's `json` parser
lets in: lone surrogates (`"\\ud800"`), integers outside 64 bits, and nesting deeper
than 254 levels. A value holding one of them would fail at the first write, after part
of a request was stored. So values from outside are checked where they enter: params
from the editor are refused (-32602, `encoding_problems`), and the model's output is
repaired (`repair_text`) or refused as a tool error the model reads.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

# Values are stored inside log records and model messages a few levels deep; orjson's
# own limit is 254 levels of containers.
MAX_DEPTH = 128
_ORJSON_DEPTH = 254
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def encoding_problems(value: Any, path: str = "params", *, limit: int = 5) -> list[str]:
    """Why `value` cannot be stored or sent, as `path: reason` lines (empty: it can).

    The common case costs one orjson encode: wrapped in enough lists that orjson's own
    depth limit falls at MAX_DEPTH, a value that encodes has no problem. Only a value
    that fails is walked (in Python) to say where and why.
    """
    wrapped = value
    for _ in range(_ORJSON_DEPTH - MAX_DEPTH):
        wrapped = [wrapped]
    try:
        orjson.dumps(wrapped)
    except orjson.JSONEncodeError:
        pass
    else:
        return []
    problems: list[str] = []
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    while stack and len(problems) < limit:
        item, where, depth = stack.pop()
        if isinstance(item, str):
            if not _encodes(item):
                problems.append(f"{where}: {_surrogate_note(item)}")
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not _INT_MIN <= item <= _INT_MAX:
                problems.append(f"{where}: integer out of range (at most 64 bits)")
        elif isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                shown = where if len(where) <= 120 else where[:120] + "…"
                problems.append(f"{shown}: nested deeper than {MAX_DEPTH} levels")
                continue
            if isinstance(item, dict):
                for key, child in item.items():
                    if isinstance(key, str) and not _encodes(key):
                        problems.append(f"{where}: a key {_surrogate_note(key)}")
                        continue
                    stack.append((child, f"{where}.{key}", depth + 1))
            else:
                stack.extend((child, f"{where}[{i}]", depth + 1) for i, child in enumerate(item))
    return problems or [f"{path}: cannot be encoded as JSON"]


def repair_text(text: str) -> str:
    """`text` with every lone surrogate replaced by U+FFFD (the model's output is kept,
    not refused)."""
    if _encodes(text):
        return text
    return _LONE_SURROGATE.sub("\ufffd", text)


def repair(value: Any) -> Any:
    """A JSON value with every string (and key) passed through `repair_text`."""
    if isinstance(value, str):
        return repair_text(value)
    if isinstance(value, dict):
        return {repair_text(k) if isinstance(k, str) else k: repair(v) for k, v in value.items()}
    if isinstance(value, list):
        return [repair(v) for v in value]
    return value


def _encodes(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _surrogate_note(text: str) -> str:
    match = _LONE_SURROGATE.search(text)
    at = match.start() if match else 0
    code = ord(text[at]) if match else 0
    return f"contains a lone surrogate (\\u{code:04x} at index {at}); text must be valid Unicode"
