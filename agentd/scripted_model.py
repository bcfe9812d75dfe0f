"""A scripted OpenAI-compatible HTTP server: the network edge that tests fake.

It speaks just enough HTTP/1.1 (keep-alive, chunked transfer encoding for SSE) to
serve `POST /v1/chat/completions` the way real servers do, from a FIFO queue of
*response specs* (JSON objects, see `ScriptedModelServer.enqueue`) or, when the
queue is empty, from deterministic default behaviours keyed on the last message
(`/tool`, `/stream`, `/reason`, `/error`, titles, tool results, echo). It can also
replay the recorded transcripts in `tests/fixtures/openai-compat/` byte for byte.

Uses: the test suites, benchmarks, the editor plugins' tests (through
`python -m agentd.scripted_model`), and a newcomer's offline first run.

The server is a plain `asyncio.Protocol` rather than streams: `connection_lost`
has to wake a response that is sleeping between chunks or stalled on purpose, so
that tests can observe a client abort promptly (`wait_response_end`).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import http
import itertools
import json
import logging
import re
import signal
import string
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

logger = logging.getLogger(__name__)

MODEL_ID = "scripted"

# Header block cap; a bigger one is answered 431 and the connection closed.
_MAX_HEADER_BYTES = 64 * 1024
# With no delay between chunks the writer never has to wait, so without an explicit
# yield one long answer would monopolise the loop; yield every this many events.
_YIELD_EVERY = 64
# Transport buffer high-water mark: writes only wait for the socket above this.
_WRITE_HIGH_WATER = 256 * 1024

_OFFLINE_HINT = (
    "This is agentd's offline scripted model, not a real one. To use a real model, set "
    "OPENAI_BASE_URL, OPENAI_API_KEY and AGENTD_MODEL."
)

_ERROR_DEFAULTS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Scripted bad request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("permission_denied", None, "You are not allowed to use this model."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached. Please try again shortly."),
    500: ("server_error", None, "The server had an error processing your request."),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The model is currently overloaded."),
    504: ("server_error", None, "Gateway timeout."),
}


class ScriptError(Exception):
    """A response spec that cannot be served (answered as HTTP 500 with this message)."""


# ---------------------------------------------------------------------------
# Response plans: what to send, independent of how it is framed on the wire.


@dataclass
class _Plan:
    status: int
    headers: list[tuple[str, str]]
    # Body pieces, each sent with one write (one HTTP chunk when `chunked`).
    pieces: list[bytes]
    # Sent after the pieces; with chunked framing in the same write as the terminator.
    tail: bytes = b""
    chunked: bool = False
    first_delay: float = 0.0
    delay: float = 0.0
    stall_after: int | None = None
    drop_after: int | None = None
    # Benchmarks: a label per piece whose send time (time.time_ns()) is recorded.
    stamps: list[str | None] | None = None


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def _error_body(status: int, message: str | None = None) -> dict[str, Any]:
    type_, code, default_message = _ERROR_DEFAULTS.get(
        status,
        ("server_error" if status >= 500 else "invalid_request_error", None, "Scripted error."),
    )
    return {
        "error": {
            "message": message or default_message,
            "type": type_,
            "param": None,
            "code": code,
        }
    }


def _json_plan(status: int, body: Any, headers: Iterable[tuple[str, str]] = ()) -> _Plan:
    return _Plan(
        status=status,
        headers=[("content-type", "application/json"), *headers],
        pieces=[_dumps(body)],
    )


def _content_text(content: Any) -> str:
    """Text of a message `content`: a string, or a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
        return "\n".join(texts)
    return ""


def _split_words(text: str) -> list[str]:
    """One word plus its following whitespace per piece; leading whitespace joins the first."""
    pieces = re.findall(r"\s*\S+\s*", text)
    if not pieces and text:
        pieces = [text]
    return pieces


def _split_text(text: str, chunk_size: int | None) -> list[str]:
    if not text:
        return []
    if chunk_size:
        return [text[i : i + chunk_size] for i in range(0, len(text), chunk_size)]
    return _split_words(text)


def _split_arguments(arguments: str) -> list[str]:
    if len(arguments) < 3:
        return [arguments] if arguments else []
    third = len(arguments) // 3
    return [arguments[:third], arguments[third : 2 * third], arguments[2 * third :]]


def _prompt_chars(body: dict[str, Any]) -> int:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return 0
    return sum(
        len(_content_text(message.get("content")))
        for message in messages
        if isinstance(message, dict)
    )


def _ms(spec: dict[str, Any], key: str) -> float:
    value = spec.get(key) or 0
    if not isinstance(value, int | float) or value < 0:
        raise ScriptError(f"{key} must be a non-negative number of milliseconds")
    return float(value) / 1000.0


def _optional_count(spec: dict[str, Any], key: str) -> int | None:
    value = spec.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or value < 0:
        raise ScriptError(f"{key} must be a non-negative integer")
    return value


@dataclass
class _ToolCallSpec:
    call_id: str
    name: str
    arguments: str


def _tool_calls(spec: dict[str, Any], request_no: int) -> list[_ToolCallSpec]:
    raw = spec.get("toolCalls") or []
    if not isinstance(raw, list):
        raise ScriptError("toolCalls must be a list")
    calls = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ScriptError("each toolCalls entry needs a string name")
        arguments = item.get("arguments", {})
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, separators=(",", ":"), ensure_ascii=False)
        call_id = item.get("id") or f"call_scripted_{request_no}_{i}"
        calls.append(_ToolCallSpec(str(call_id), item["name"], arguments))
    return calls


def _usage(spec: dict[str, Any], body: dict[str, Any], chunk_count: int) -> dict[str, Any]:
    given = spec.get("usage")
    if given is not None and not isinstance(given, dict):
        raise ScriptError("usage must be an object")
    given = given or {}
    prompt = int(given.get("prompt_tokens", max(1, _prompt_chars(body) // 4)))
    completion = int(given.get("completion_tokens", chunk_count))
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if given.get("cached_tokens") is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": int(given["cached_tokens"])}
    if given.get("reasoning_tokens") is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": int(given["reasoning_tokens"])}
    return usage


def _spec_text(spec: dict[str, Any], key: str) -> str:
    value = spec.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ScriptError(f"{key} must be a string")
    return value


def _chat_plan(spec: dict[str, Any], body: dict[str, Any], request_no: int) -> _Plan:
    """Plan a generated (non-fixture, non-error) chat completion, streamed or not."""
    text = _spec_text(spec, "text")
    reasoning = _spec_text(spec, "reasoning")
    reasoning_field = spec.get("reasoningField") or "reasoning_content"
    if reasoning_field not in ("reasoning_content", "reasoning"):
        raise ScriptError('reasoningField must be "reasoning_content" or "reasoning"')
    chunk_size = spec.get("chunkSize")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size <= 0):
        raise ScriptError("chunkSize must be a positive integer")
    calls = _tool_calls(spec, request_no)
    finish_reason = spec.get("finishReason") or ("tool_calls" if calls else "stop")
    model = body.get("model") if isinstance(body.get("model"), str) and body["model"] else MODEL_ID
    response_id = f"chatcmpl-scripted-{request_no}"
    created = int(time.time())
    first_delay = _ms(spec, "firstDelayMs")
    delay = _ms(spec, "delayMs")
    stall_after = _optional_count(spec, "stallAfterChunks")
    drop_after = _optional_count(spec, "dropAfterChunks")
    request_headers = [("x-request-id", f"req_scripted_{request_no}")]

    deltas: list[dict[str, Any]] = []
    deltas += [{reasoning_field: piece} for piece in _split_text(reasoning, chunk_size)]
    tokens = spec.get("tokens")
    if tokens is not None and not (
        isinstance(tokens, list) and all(isinstance(x, str) for x in tokens)
    ):
        raise ScriptError("tokens must be a list of strings")
    content_pieces = tokens if tokens is not None else _split_text(text, chunk_size)
    first_content = len(deltas)
    deltas += [{"content": piece} for piece in content_pieces]
    for index, call in enumerate(calls):
        deltas.append(
            {
                "tool_calls": [
                    {
                        "index": index,
                        "id": call.call_id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": ""},
                    }
                ]
            }
        )
        deltas += [
            {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
            for piece in _split_arguments(call.arguments)
        ]
    usage = _usage(spec, body, len(deltas))

    if not body.get("stream"):
        message: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None}
        if reasoning:
            message[reasoning_field] = reasoning
        if calls:
            message["tool_calls"] = [
                {
                    "id": call.call_id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in calls
            ]
        completion = {
            "id": response_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
            ],
            "usage": usage,
        }
        plan = _json_plan(200, completion, request_headers)
        plan.first_delay = first_delay
        plan.stall_after = 0 if stall_after is not None else None
        plan.drop_after = 0 if drop_after is not None else None
        return plan

    # Every chunk shares this envelope, so it is encoded once; only the delta varies.
    envelope = _dumps(
        {"id": response_id, "object": "chat.completion.chunk", "created": created, "model": model}
    )
    prefix = b"data: " + envelope[:-1] + b',"choices":[{"index":0,"delta":'
    middle = b',"finish_reason":'
    suffix = b"}]}\n\n"
    if deltas:
        deltas[0] = {"role": "assistant", **deltas[0]}
    else:
        deltas.append({"role": "assistant", "content": ""})
    pieces = [prefix + _dumps(delta) + middle + b"null" + suffix for delta in deltas]
    pieces.append(prefix + b"{}" + middle + _dumps(finish_reason) + suffix)
    stream_options = body.get("stream_options")
    if isinstance(stream_options, dict) and stream_options.get("include_usage"):
        usage_chunk: dict[str, Any] = {
            "id": response_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": usage,
        }
        pieces.append(b"data: " + _dumps(usage_chunk) + b"\n\n")
    stamps: list[str | None] | None = None
    if spec.get("stampTokens"):
        stamps = [None] * len(pieces)
        for i, piece in enumerate(content_pieces):
            stamps[first_content + i] = piece
    return _Plan(
        stamps=stamps,
        status=200,
        headers=[
            ("content-type", "text/event-stream; charset=utf-8"),
            ("cache-control", "no-cache"),
            *request_headers,
        ],
        pieces=pieces,
        tail=b"data: [DONE]\n\n",
        chunked=True,
        first_delay=first_delay,
        delay=delay,
        stall_after=stall_after,
        drop_after=drop_after,
    )


def _error_plan(spec: dict[str, Any]) -> _Plan:
    error = spec["error"]
    if not isinstance(error, dict):
        raise ScriptError("error must be an object")
    status = error.get("status", 500)
    if not isinstance(status, int) or not 100 <= status <= 599:
        raise ScriptError("error.status must be an HTTP status code")
    body = error.get("body")
    if body is None:
        body = _error_body(status)
    headers = error.get("headers") or {}
    if not isinstance(headers, dict):
        raise ScriptError("error.headers must be an object")
    plan = _json_plan(status, body, [(str(k).lower(), str(v)) for k, v in headers.items()])
    plan.first_delay = _ms(spec, "firstDelayMs")
    return plan


def _events_plan(spec: dict[str, Any]) -> _Plan:
    """`events`: SSE `data:` payloads sent exactly as given (hostile or malformed JSON,
    escapes orjson would refuse, out-of-range numbers), then `data: [DONE]`."""
    events = spec["events"]
    if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
        raise ScriptError("events must be a list of strings")
    return _Plan(
        status=200,
        headers=[("content-type", "text/event-stream; charset=utf-8")],
        pieces=[b"data: " + e.encode("utf-8", "surrogatepass") + b"\n\n" for e in events],
        tail=b"data: [DONE]\n\n",
        chunked=True,
        first_delay=_ms(spec, "firstDelayMs"),
        delay=_ms(spec, "delayMs"),
    )


_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})


def _fixture_plan(spec: dict[str, Any], raw: bytes) -> _Plan:
    head, newline, body = raw.partition(b"\n")
    if not newline:
        raise ScriptError("fixture has no header line")
    try:
        meta = json.loads(head)
        status = int(meta["status"])
        headers = {str(k).lower(): str(v) for k, v in dict(meta.get("headers") or {}).items()}
    except (ValueError, KeyError, TypeError) as err:
        raise ScriptError(f"fixture header line is not valid: {err}") from err
    split_at = spec.get("splitAt")
    if split_at is not None:
        if not isinstance(split_at, list) or not all(isinstance(o, int) for o in split_at):
            raise ScriptError("splitAt must be a list of byte offsets")
        offsets = sorted({o for o in split_at if 0 < o < len(body)})
        bounds = [0, *offsets, len(body)]
        pieces = [body[a:b] for a, b in itertools.pairwise(bounds)]
    else:
        # Like a real server: one write per SSE event.
        pieces = [
            m.group(0) for m in re.finditer(rb".*?(?:\r?\n\r?\n|\Z)", body, re.S) if m.group(0)
        ]
    is_sse = "text/event-stream" in headers.get("content-type", "")
    return _Plan(
        status=status,
        headers=[(k, v) for k, v in headers.items() if k not in _FRAMING_HEADERS],
        pieces=pieces,
        chunked=is_sse,
        first_delay=_ms(spec, "firstDelayMs"),
        delay=_ms(spec, "delayMs"),
        stall_after=_optional_count(spec, "stallAfterChunks"),
        drop_after=_optional_count(spec, "dropAfterChunks"),
    )


# ---------------------------------------------------------------------------
# Default behaviour (queue empty).


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return []
    return [m for m in messages if isinstance(m, dict)]


def _tool_name_for(messages: list[dict[str, Any]], call_id: Any) -> str:
    for message in reversed(messages):
        if message.get("role") != "assistant":
            continue
        for call in message.get("tool_calls") or []:
            if isinstance(call, dict) and call.get("id") == call_id:
                function = call.get("function") or {}
                if isinstance(function, dict) and isinstance(function.get("name"), str):
                    return function["name"]
    return "unknown"


def _tool_command(text: str) -> list[dict[str, Any]]:
    calls = []
    for line in text.splitlines():
        parts = line.strip().split(None, 2)
        if len(parts) < 2 or parts[0] != "/tool":
            continue
        raw_arguments = parts[2] if len(parts) > 2 else "{}"
        try:
            arguments: Any = json.loads(raw_arguments)
        except ValueError:
            arguments = raw_arguments
        calls.append({"name": parts[1], "arguments": arguments})
    return calls


def default_spec(body: dict[str, Any]) -> dict[str, Any]:
    """The deterministic answer given when no spec is queued."""
    messages = _messages(body)
    user_texts = [_content_text(m.get("content")) for m in messages if m.get("role") == "user"]
    last_user = user_texts[-1] if user_texts else ""
    system_text = " ".join(
        _content_text(m.get("content"))
        for m in messages
        if m.get("role") in ("system", "developer")
    )
    if "short title" in system_text.lower():
        title = " ".join(last_user.split()[:5]).rstrip(string.punctuation + string.whitespace)
        return {"text": title}

    last = messages[-1] if messages else {}
    if last.get("role") == "tool":
        name = _tool_name_for(messages, last.get("tool_call_id"))
        content = _content_text(last.get("content"))
        return {"text": f"Tool {name} returned: {content[:200]}"}

    command = last_user.strip() if last.get("role") == "user" else ""
    words = command.split()
    head = words[0] if words else ""
    if head == "/tool":
        calls = _tool_command(command)
        if calls:
            return {"toolCalls": calls}
    if head == "/stream":
        try:
            count = int(words[1]) if len(words) > 1 else 10
            delay_ms = float(words[2]) if len(words) > 2 else 0.0
        except ValueError:
            return {"text": "Usage: /stream <count> <delayMs>"}
        text = " ".join(f"w{i}" for i in range(1, max(count, 0) + 1))
        return {"text": text, "delayMs": max(delay_ms, 0.0)}
    if head == "/reason":
        rest = command[len("/reason") :].strip()
        return {"reasoning": f"Thinking about: {rest}", "text": rest}
    if head == "/error":
        try:
            status = int(words[1]) if len(words) > 1 else 500
        except ValueError:
            status = 500
        if not 400 <= status <= 599:
            status = 500
        headers = {"retry-after": "0"} if status == 429 else {}
        return {"error": {"status": status, "body": _error_body(status), "headers": headers}}
    picked = _pick_tool(body.get("tools"), command)
    if picked is not None:
        return {"toolCalls": [picked]}
    return {"text": f"You said: {last_user}\n\n{_OFFLINE_HINT}"}


# Offline tool picking: enough for a newcomer to see an MCP tool called ("what time is it
# in Tokyo?" with mcp-server-time configured). Agentd's built-in tools are left out, so
# everyday messages keep the echo answer.
_BUILTIN_TOOLS = frozenset(
    {"read_file", "list_dir", "glob", "grep", "write_file", "edit_file", "bash"}
)
_STOP_WORDS = frozenset(
    "the and for are you what how who why when where which this that with from get set "
    "current please can could would will tell give show me my your is it in of to".split()
)


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if len(w) >= 3} - _STOP_WORDS


def _pick_tool(tools: Any, text: str) -> dict[str, Any] | None:
    """The offered tool whose name shares the most words with the user's message and
    whose required arguments can be filled from it (fewest required ones on a tie)."""
    if not isinstance(tools, list) or not text:
        return None
    asked = _words(text)
    best: tuple[int, int, dict[str, Any]] | None = None
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict):
            continue
        name = function.get("name")
        if not isinstance(name, str) or name in _BUILTIN_TOOLS:
            continue
        score = len(asked & _words(name.replace("_", " ").replace("-", " ")))
        if score == 0:
            continue
        schema = function.get("parameters") or {}
        arguments = _fill_arguments(schema, text)
        if arguments is None:
            continue
        rank = (score, -len(arguments))
        if best is None or rank > best[:2]:
            best = (*rank, {"name": name, "arguments": arguments})
    return best[2] if best else None


def _fill_arguments(schema: Any, text: str) -> dict[str, Any] | None:
    if not isinstance(schema, dict):
        return None
    props = schema.get("properties")
    if not isinstance(props, dict):
        props = {}
    arguments: dict[str, Any] = {}
    for key in schema.get("required") or []:
        prop = props.get(key)
        kind = prop.get("type", "string") if isinstance(prop, dict) else "string"
        if "zone" in key.lower():
            arguments[key] = _time_zone_in(text)
        elif kind == "string":
            arguments[key] = text
        elif kind in ("number", "integer"):
            number = re.search(r"-?\d+(?:\.\d+)?", text)
            arguments[key] = (float if kind == "number" else int)(
                float(number.group(0)) if number else 0
            )
        elif kind == "boolean":
            arguments[key] = False
        else:
            return None
    return arguments


def _time_zone_in(text: str) -> str:
    """An IANA zone whose city the text names ("Tokyo" → "Asia/Tokyo"), else UTC."""
    import zoneinfo

    lowered = text.lower()
    for zone in sorted(zoneinfo.available_timezones()):
        city = zone.rsplit("/", 1)[-1].replace("_", " ").lower()
        if "/" in zone and len(city) >= 4 and re.search(rf"\b{re.escape(city)}\b", lowered):
            return zone
    return "UTC"


# ---------------------------------------------------------------------------
# Script state shared between the serving loop and callers on other threads.


@dataclass
class _ChatRecord:
    entry: dict[str, Any]
    outcome: str | None = None


class _ScriptState:
    """Queue, request log and response outcomes; thread-safe (tests enqueue from
    the main thread while the server runs on its own loop)."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._queue: deque[list[Any]] = deque()  # [spec, remaining uses]
        self._records: list[_ChatRecord] = []
        self._request_no = 0
        # Send times of stamped tokens (`stampTokens`), for latency benchmarks.
        self.token_times: dict[str, int] = {}

    def enqueue(self, specs: Iterable[Any]) -> int:
        items = []
        for spec in specs:
            if not isinstance(spec, dict):
                raise ScriptError("each response spec must be a JSON object")
            repeat = spec.get("repeat", 1)
            if not isinstance(repeat, int) or repeat < 1:
                raise ScriptError("repeat must be a positive integer")
            items.append([spec, repeat])
        with self._lock:
            self._queue.extend(items)
            return len(self._queue)

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self._records.clear()
            self.token_times.clear()
            self._lock.notify_all()

    def stamp(self, token: str) -> None:
        self.token_times[token] = time.time_ns()

    def take(self, entry: dict[str, Any]) -> tuple[dict[str, Any] | None, _ChatRecord, int]:
        with self._lock:
            self._request_no += 1
            record = _ChatRecord(entry)
            self._records.append(record)
            spec = None
            if self._queue:
                item = self._queue[0]
                spec = item[0]
                item[1] -= 1
                if item[1] <= 0:
                    self._queue.popleft()
            return spec, record, self._request_no

    def finish(self, record: _ChatRecord, outcome: str) -> None:
        with self._lock:
            if record.outcome is None:
                record.outcome = outcome
                self._lock.notify_all()

    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(json.dumps(r.entry)) for r in self._records]

    def wait_outcome(self, index: int, timeout: float) -> str | None:
        with self._lock:
            self._lock.wait_for(
                lambda: index < len(self._records) and self._records[index].outcome is not None,
                timeout,
            )
            if index < len(self._records):
                return self._records[index].outcome
            return None


# ---------------------------------------------------------------------------
# HTTP/1.1


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class _Request:
    method: str
    path: str
    version: str
    headers: dict[str, str]
    body: bytes = b""
    query: str = ""

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in connection
        return "close" not in connection


def _frame(piece: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(piece), piece)


def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    return f"HTTP/1.1 {status} {phrase}\r\n".encode("latin-1")


class _Connection(asyncio.Protocol):
    def __init__(self, app: _App) -> None:
        self._app = app
        self._loop = asyncio.get_running_loop()
        self._buffer = bytearray()
        self._eof = False
        self.closed = False
        self._closed_future: asyncio.Future[None] = self._loop.create_future()
        self._data_waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task[None] | None = None

    # -- asyncio.Protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=_WRITE_HIGH_WATER)
        self.task = self._loop.create_task(self._serve())
        self._app.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._wake_reader()

    def eof_received(self) -> bool:
        # A client that half-closes is treated as gone: HTTP clients do not do it
        # while they still want the answer, and the transport then closes itself, so
        # connection_lost wakes a response that is sleeping or stalled.
        self._eof = True
        self._wake_reader()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self._closed_future.done():
            self._closed_future.set_result(None)
        self._wake_reader()
        self._wake_writer()
        self._app.connections.discard(self)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake_writer()

    # -- helpers for handlers

    def _wake_reader(self) -> None:
        if self._data_waiter is not None and not self._data_waiter.done():
            self._data_waiter.set_result(None)

    def _wake_writer(self) -> None:
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    async def _wait_for_data(self) -> None:
        self._data_waiter = self._loop.create_future()
        try:
            await self._data_waiter
        finally:
            self._data_waiter = None

    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    async def drain(self) -> None:
        if self._paused and not self.closed:
            self._drain_waiter = self._loop.create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None

    async def sleep(self, seconds: float) -> bool:
        """Sleep, waking early if the client goes away. Returns whether it went away."""
        if seconds > 0 and not self.closed:
            await asyncio.wait([self._closed_future], timeout=seconds)
        return self.closed

    async def wait_closed(self) -> None:
        await self._closed_future

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- request loop

    async def _serve(self) -> None:
        try:
            while not self.closed:
                try:
                    request = await self._read_request()
                except _HttpError as err:
                    await self.send_plan(
                        _json_plan(err.status, _error_body(err.status, str(err))), keep_alive=False
                    )
                    break
                if request is None:
                    break
                keep_alive = await self._app.handle(self, request)
                if not keep_alive:
                    break
        except Exception:
            logger.exception("scripted model: connection handler failed")
        finally:
            if self.transport is not None and not self.transport.is_closing():
                self.transport.close()

    async def _read_until(self, size: int) -> None:
        while len(self._buffer) < size:
            if self._eof or self.closed:
                raise _HttpError(400, "connection closed mid-request")
            await self._wait_for_data()

    async def _read_line(self) -> bytes:
        while True:
            end = self._buffer.find(b"\r\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 2]
                return line
            if self._eof or self.closed:
                raise _HttpError(400, "connection closed mid-request")
            await self._wait_for_data()

    async def _read_request(self) -> _Request | None:
        while True:
            while self._buffer.startswith(b"\r\n"):
                del self._buffer[:2]
            end = self._buffer.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(self._buffer) > _MAX_HEADER_BYTES:
                raise _HttpError(431, "request header block too large")
            if self._eof or self.closed:
                return None
            await self._wait_for_data()
        head = bytes(self._buffer[:end]).decode("latin-1")
        del self._buffer[: end + 4]
        request_line, *header_lines = head.split("\r\n")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _HttpError(400, "malformed request line")
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in header_lines:
            name, colon, value = line.partition(":")
            if not colon:
                raise _HttpError(400, "malformed header line")
            headers[name.strip().lower()] = value.strip()
        path, _, query = target.partition("?")
        request = _Request(method.upper(), path, version, headers, query=query)
        if headers.get("expect", "").lower() == "100-continue":
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = bytearray()
            while True:
                size_line = await self._read_line()
                try:
                    size = int(size_line.split(b";")[0].strip(), 16)
                except ValueError as err:
                    raise _HttpError(400, "malformed chunk size") from err
                if size == 0:
                    while await self._read_line():  # trailers
                        pass
                    break
                await self._read_until(size + 2)
                body += self._buffer[:size]
                del self._buffer[: size + 2]
            request.body = bytes(body)
        else:
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError as err:
                raise _HttpError(400, "malformed content-length") from err
            await self._read_until(length)
            request.body = bytes(self._buffer[:length])
            del self._buffer[:length]
        return request

    async def send_plan(self, plan: _Plan, *, keep_alive: bool) -> str:
        """Send a planned response. Returns its outcome: completed, client_closed,
        dropped or stalled (the latter only once the client gave up)."""
        head = [_status_line(plan.status)]
        headers = [*plan.headers, ("server", "agentd-scripted-model")]
        if plan.chunked:
            headers.append(("transfer-encoding", "chunked"))
        else:
            length = sum(len(p) for p in plan.pieces) + len(plan.tail)
            headers.append(("content-length", str(length)))
        if not keep_alive:
            headers.append(("connection", "close"))
        head += [f"{name}: {value}\r\n".encode("latin-1") for name, value in headers]
        head.append(b"\r\n")
        self.write(b"".join(head))

        for i, piece in enumerate(plan.pieces):
            if plan.drop_after is not None and i >= plan.drop_after:
                self.abort()
                return "dropped"
            if plan.stall_after is not None and i >= plan.stall_after:
                await self.wait_closed()
                return "client_closed"
            wait = plan.first_delay if i == 0 else plan.delay
            if wait and await self.sleep(wait):
                return "client_closed"
            if self.closed:
                return "client_closed"
            if plan.stamps is not None and plan.stamps[i] is not None:
                self._app.state.stamp(plan.stamps[i])  # type: ignore[arg-type]
            self.write(_frame(piece) if plan.chunked else piece)
            if self._paused:
                await self.drain()
            elif not wait and i % _YIELD_EVERY == _YIELD_EVERY - 1:
                await asyncio.sleep(0)
        count = len(plan.pieces)
        if plan.drop_after is not None and count >= plan.drop_after:
            self.abort()
            return "dropped"
        if plan.stall_after is not None and count >= plan.stall_after:
            await self.wait_closed()
            return "client_closed"
        if not plan.pieces and plan.first_delay and await self.sleep(plan.first_delay):
            return "client_closed"
        if plan.chunked:
            self.write((_frame(plan.tail) if plan.tail else b"") + b"0\r\n\r\n")
        elif plan.tail:
            self.write(plan.tail)
        await self.drain()
        return "client_closed" if self.closed else "completed"


# ---------------------------------------------------------------------------
# Routing


class _App:
    def __init__(self, state: _ScriptState, fixtures_dir: Path | None) -> None:
        self.state = state
        self.fixtures_dir = fixtures_dir
        self.connections: set[_Connection] = set()
        self._fixture_cache: dict[Path, bytes] = {}

    async def handle(self, conn: _Connection, request: _Request) -> bool:
        keep_alive = request.keep_alive
        path = request.path.rstrip("/")
        try:
            if request.method == "POST" and path.endswith("/chat/completions"):
                return await self._chat(conn, request, keep_alive)
            if request.method == "GET" and path.endswith("/models"):
                plan = _json_plan(200, {"object": "list", "data": [self._model()]})
            elif request.method == "GET" and path.endswith(f"/models/{MODEL_ID}"):
                plan = _json_plan(200, self._model())
            elif path == "/_scripted/enqueue" and request.method == "POST":
                payload = self._json_body(request)
                specs = payload.get("responses") if isinstance(payload, dict) else None
                if not isinstance(specs, list):
                    raise ScriptError('enqueue expects {"responses": [spec, ...]}')
                plan = _json_plan(200, {"queued": self.state.enqueue(specs)})
            elif path == "/_scripted/reset" and request.method == "POST":
                self.state.reset()
                plan = _json_plan(200, {"ok": True})
            elif path == "/_scripted/requests" and request.method == "GET":
                plan = _json_plan(200, {"requests": self.state.requests()})
            else:
                plan = _json_plan(404, _error_body(404, f"No route for {request.method} {path}"))
        except ScriptError as err:
            plan = _json_plan(400, _error_body(400, str(err)))
        await conn.send_plan(plan, keep_alive=keep_alive)
        return keep_alive

    @staticmethod
    def _model() -> dict[str, Any]:
        return {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "agentd"}

    @staticmethod
    def _json_body(request: _Request) -> Any:
        try:
            return json.loads(request.body or b"null")
        except ValueError as err:
            raise ScriptError(f"request body is not JSON: {err}") from err

    async def _chat(self, conn: _Connection, request: _Request, keep_alive: bool) -> bool:
        try:
            body = self._json_body(request)
        except ScriptError as err:
            body = None
            parse_error: str | None = str(err)
        else:
            parse_error = None if isinstance(body, dict) else "request body must be a JSON object"
        headers = {k: v for k, v in request.headers.items() if k != "authorization"}
        entry = {"method": request.method, "path": request.path, "headers": headers, "body": body}
        spec, record, request_no = self.state.take(entry)
        try:
            if parse_error is not None:
                plan = _json_plan(400, _error_body(400, parse_error))
            else:
                assert isinstance(body, dict)
                plan = await self._plan(
                    spec if spec is not None else default_spec(body), body, request_no
                )
        except ScriptError as err:
            logger.warning("scripted model: bad response spec: %s", err)
            plan = _json_plan(
                500,
                {"error": {"message": f"bad response spec: {err}", "type": "scripted_spec_error"}},
            )
        # Stays so if the server stops mid-response (the task is cancelled).
        outcome = "server_stopped"
        try:
            outcome = await conn.send_plan(plan, keep_alive=keep_alive)
        finally:
            self.state.finish(record, outcome)
        return keep_alive and outcome == "completed"

    async def _plan(self, spec: dict[str, Any], body: dict[str, Any], request_no: int) -> _Plan:
        if spec.get("error") is not None:
            return _error_plan(spec)
        if spec.get("fixture") is not None:
            return _fixture_plan(spec, await self._fixture(spec["fixture"]))
        if spec.get("events") is not None:
            return _events_plan(spec)
        return _chat_plan(spec, body, request_no)

    async def _fixture(self, name: Any) -> bytes:
        if not isinstance(name, str) or not name:
            raise ScriptError("fixture must be a file name")
        if self.fixtures_dir is None:
            raise ScriptError("no fixtures directory configured (--fixtures / fixtures_dir)")
        root = self.fixtures_dir.resolve()
        path = (root / name).resolve()
        if not path.is_relative_to(root):
            raise ScriptError(f"fixture {name!r} is outside the fixtures directory")
        cached = self._fixture_cache.get(path)
        if cached is None:
            try:
                cached = await asyncio.to_thread(path.read_bytes)
            except OSError as err:
                raise ScriptError(f"cannot read fixture {name!r}: {err.strerror}") from err
            self._fixture_cache[path] = cached
        return cached


# ---------------------------------------------------------------------------
# Public server object


class ScriptedModelServer:
    """A scripted OpenAI-compatible server on loopback.

    Synchronous use runs it on its own event loop in a background thread::

        with ScriptedModelServer(fixtures_dir=FIXTURES) as srv:
            srv.enqueue({"text": "hello"})
            client = openai.OpenAI(base_url=srv.base_url, api_key="x")

    Asynchronous use runs it on the caller's loop: ``async with
    ScriptedModelServer() as srv`` or ``await srv.start()`` / ``await srv.stop()``.
    The queue and log methods are thread-safe and may be called from anywhere.

    Response spec fields (all optional): text, reasoning, reasoningField, chunkSize,
    delayMs, firstDelayMs, toolCalls [{name, arguments, id?}], usage
    {prompt_tokens, completion_tokens, cached_tokens?, reasoning_tokens?},
    finishReason, error {status, body, headers}, stallAfterChunks, dropAfterChunks,
    fixture (+ splitAt), events (raw SSE data payloads, sent as they are), repeat.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        fixtures_dir: str | Path | None = None,
        script: Sequence[dict[str, Any]] = (),
    ) -> None:
        self.host = host
        self._requested_port = port
        self._state = _ScriptState()
        if script:
            self._state.enqueue(script)
        self._app = _App(self._state, Path(fixtures_dir) if fixtures_dir is not None else None)
        self._server: asyncio.Server | None = None
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None

    # -- addresses

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the scripted model server is not running")
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    # -- script control

    def enqueue(self, *specs: dict[str, Any]) -> None:
        self._state.enqueue(specs)

    def requests(self) -> list[dict[str, Any]]:
        """Every chat request so far: {method, path, headers (no authorization), body}."""
        return self._state.requests()

    def reset(self) -> None:
        self._state.reset()

    def token_times(self) -> dict[str, int]:
        """Send times (time.time_ns) of the tokens of responses with `stampTokens`."""
        return dict(self._state.token_times)

    def wait_response_end(self, index: int, timeout: float = 10.0) -> str | None:
        """Block until the response to chat request `index` (0-based) has ended and
        return how: "completed", "client_closed" (the client closed the connection
        first) or "dropped" (dropAfterChunks). None if it had not ended in time."""
        return self._state.wait_outcome(index, timeout)

    # -- lifecycle on the caller's loop

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self._app),
            self.host,
            self._requested_port,
            backlog=1024,
        )
        self._port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        connections = list(self._app.connections)
        for conn in connections:
            conn.abort()
        tasks = [c.task for c in connections if c.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()

    async def __aenter__(self) -> ScriptedModelServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- lifecycle on a background thread

    def __enter__(self) -> ScriptedModelServer:
        started: concurrent.futures.Future[None] = concurrent.futures.Future()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._thread_loop = loop
            try:
                loop.run_until_complete(self.start())
            except BaseException as err:
                started.set_exception(err)
                loop.close()
                return
            started.set_result(None)
            try:
                loop.run_forever()
                loop.run_until_complete(self.stop())
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="scripted-model", daemon=True)
        self._thread.start()
        started.result()
        return self

    def __exit__(self, *exc_info: object) -> None:
        loop, thread = self._thread_loop, self._thread
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
        self._thread = self._thread_loop = None


# ---------------------------------------------------------------------------
# CLI


def _load_script(path: str) -> list[dict[str, Any]]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if isinstance(data, dict):
        data = data.get("responses")
    if not isinstance(data, list):
        raise ValueError('a script is a JSON list of response specs (or {"responses": [...]})')
    return data


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="agentd scripted-model",
        description="Serve a scripted OpenAI-compatible model on loopback (for tests and offline use).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--script", help="JSON file with a list of response specs to preload")
    parser.add_argument(
        "--fixtures", help="directory of recorded transcripts for {fixture: name} specs"
    )
    args = parser.parse_args(argv)
    try:
        script = _load_script(args.script) if args.script else []
        server = ScriptedModelServer(
            host=args.host, port=args.port, fixtures_dir=args.fixtures, script=script
        )
    except (OSError, ValueError, ScriptError) as err:
        sys.stderr.write(f"scripted-model: {err}\n")
        return 2
    try:
        asyncio.run(_serve_until_signalled(server))
    except KeyboardInterrupt:
        pass
    except OSError as err:
        sys.stderr.write(f"scripted-model: {err}\n")
        return 1
    return 0


async def _serve_until_signalled(server: ScriptedModelServer) -> None:
    await server.start()
    try:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
        # The one line a parent process reads to learn where we listen.
        sys.stdout.write(json.dumps({"baseUrl": server.base_url, "port": server.port}) + "\n")
        sys.stdout.flush()
        await stop.wait()
    finally:
        await server.stop()


if __name__ == "__main__":
    sys.exit(main())
