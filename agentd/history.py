"""Session history → OpenAI Chat Completions messages (`to_chat_messages`).

Strict providers reject an assistant tool call without a matching tool result, so every
tool part produces a result: an unfinished one (aborted, interrupted) is sent back as an
error result.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import orjson

SUMMARY_PREFIX = "Summary of the conversation so far (earlier messages were compacted):\n\n"


def tool_result_content(part: dict[str, Any]) -> str:
    """What the model reads as a tool part's result (a wire dict), at any state."""
    state = part.get("state") or {}
    status = state.get("status")
    if status == "completed":
        return str(state.get("output", ""))
    if status == "error":
        return f"Error: {state.get('error', 'failed')}"
    return "Error: the tool call was interrupted before it finished"


def _user_content(parts: list[dict[str, Any]]) -> str:
    chunks = []
    for part in parts:
        if part.get("type") == "text":
            chunks.append(part.get("text", ""))
        elif part.get("type") == "file":
            chunks.append(part.get("content") or f"[file {part.get('path')}]")
    return "\n\n".join(c for c in chunks if c)


def step_messages(text: str, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One step of an assistant message as chat messages: the assistant's text and tool
    calls (wire tool parts), then each call's result. Used for the history and within a
    run alike, so a request repeats the bytes of the one before (prompt caches)."""
    if not text and not calls:
        return []
    msg: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        msg["tool_calls"] = [
            {
                "id": c["callId"],
                "type": "function",
                "function": {
                    "name": c["tool"],
                    "arguments": json.dumps((c.get("state") or {}).get("input") or {}),
                },
            }
            for c in calls
        ]
    return [
        msg,
        *(
            {"role": "tool", "tool_call_id": c["callId"], "content": tool_result_content(c)}
            for c in calls
        ),
    ]


def assistant_to_chat(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One assistant message may hold several steps: each becomes an assistant message
    (text and tool calls) followed by its tool results."""
    out: list[dict[str, Any]] = []
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in parts:
        kind = part.get("type")
        if kind == "step-start":
            out += step_messages("".join(text), calls)
            text, calls = [], []
        elif kind == "text" and not part.get("synthetic"):
            text.append(part.get("text", ""))
        elif kind == "tool":
            calls.append(part)
    out += step_messages("".join(text), calls)
    return out


def message_to_chat(message: dict[str, Any]) -> list[dict[str, Any]]:
    """One wire message → its chat messages (none, one, or an assistant's steps)."""
    return to_chat_messages((message,))


def encoded(chat: list[dict[str, Any]]) -> list[orjson.Fragment]:
    """Chat messages encoded once, for a history that is sent at every run: orjson
    writes a Fragment's bytes as they are, so a long session's history costs a copy,
    not an encode, per request (and a tenth of the memory of the dicts)."""
    # orjson's output keeps the buffer it grew (4 KiB at least, measured): a copy the
    # size of the text is what is kept.
    return [orjson.Fragment(bytes(memoryview(orjson.dumps(m)))) for m in chat]


def chat_role(message: dict[str, Any] | orjson.Fragment) -> Any:
    if isinstance(message, orjson.Fragment):
        # A Fragment does not expose its bytes; encoding it writes them out.
        return orjson.loads(orjson.dumps(message)).get("role")
    return message.get("role")


def chat_size(message: dict[str, Any] | orjson.Fragment) -> int:
    """Encoded size of one chat message (either form)."""
    return len(orjson.dumps(message))


def to_chat_messages(messages: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Wire messages (dicts with parts), oldest first → chat messages."""
    out: list[dict[str, Any]] = []
    for msg in messages:
        parts = msg.get("parts") or []
        if msg.get("role") == "user":
            content = _user_content(parts)
            if content:
                out.append({"role": "user", "content": content})
        elif msg.get("summary"):
            text = "".join(p.get("text", "") for p in parts if p.get("type") == "text")
            out.append({"role": "user", "content": SUMMARY_PREFIX + text})
        else:
            out.extend(assistant_to_chat(parts))
    return out
