"""The model client: streams one Chat Completions step from any OpenAI-compatible server.

This is the only module in agentd that imports `openai` (and its transport,
`httpx2`), and it does so lazily, on first use: daemon startup must not pay for it.

Layers, each mapped once:
- the SDK does HTTP (`AsyncOpenAI`, `max_retries=0`): connection pooling, auth
  headers and status errors. The body is consumed raw via
  `with_streaming_response`, and each SSE event's data is parsed once, with
  orjson, into plain dicts: the fixture rules ("a field that never appeared as a
  string", explicit nulls, missing `index`) are about the wire, and the SDK's
  pydantic chunk costs ~100-200 us per token here, several times the rest of the
  path (measured: ~7k tokens/s through typed chunks, ~50k this way);
- `_SseDecoder` turns body bytes into events, `_StepAssembler` turns chunks into
  `ProviderEvent`s following the correct-client rules in
  tests/fixtures/openai-compat/README.md;
- `ChatProvider.stream_chat` holds policy: the one retry layer, timeouts, abort.

Every failure leaves as `agentd.errors.ProviderError`; the API key never appears in
a message or a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import json
import logging
import math
import random
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import orjson

from agentd import redaction
from agentd.config import ProviderConfig
from agentd.errors import ProviderError
from agentd.model_events import (
    ProviderEvent,
    ReasoningDelta,
    RetryNotice,
    StepFinished,
    TextDelta,
    TokenUsage,
    ToolCall,
    ToolCallArguments,
    ToolCallStarted,
)
from agentd.protocol.encoding import repair

if TYPE_CHECKING:
    import openai

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# Public data (the event types live in agentd.model_events, shared with the run loop)


# ---------------------------------------------------------------------------
# Errors


_RETRYABLE_STATUS = frozenset({500, 502, 503, 504})
_CONTEXT_MARKERS = (
    "context_length_exceeded",
    "exceed_context_size",
    "context length",
    "context_length",
    "context window",
    "context size",
    "maximum context",
    "exceed context",
    "exceeds the context",
    "too long",
    "input tokens exceed",
)
_CONTENT_FILTER_MARKERS = ("content_filter", "content management policy", "content filter")


def _classify(status: int | None, message: str, code: Any, type_: Any) -> tuple[str, bool]:
    """(ProviderError name, retryable) for an HTTP status (None: an in-band error)."""
    if status in (401, 403):
        return "ProviderAuthError", False
    if status == 404:
        return "ModelNotFound", False
    if status == 429:
        # Same status as a rate limit, but waiting never helps.
        return "ProviderRateLimited", "insufficient_quota" not in (str(code), str(type_))
    text = " ".join(str(part) for part in (message, code, type_) if part).lower()
    if status is None or 400 <= status < 500:
        if any(marker in text for marker in _CONTEXT_MARKERS):
            return "ContextOverflow", False
        if any(marker in text for marker in _CONTENT_FILTER_MARKERS):
            return "ContentFiltered", False
        if status is None:
            return "ProviderUnavailable", True
        return "ProviderBadRequest", False
    return "ProviderUnavailable", status in _RETRYABLE_STATUS


def _retry_after_s(headers: Mapping[str, str]) -> float | None:
    """Server-requested delay from retry-after-ms (Azure, the SDK) or retry-after
    (seconds or an HTTP date)."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        with contextlib.suppress(ValueError):
            value = float(raw_ms) / 1000.0
            if math.isfinite(value) and value >= 0:
                return value
    raw = headers.get("retry-after")
    if raw:
        try:
            value = float(raw)
        except ValueError:
            with contextlib.suppress(TypeError, ValueError, IndexError):
                when = email.utils.parsedate_to_datetime(raw)
                return max(0.0, when.timestamp() - time.time())
        else:
            if math.isfinite(value) and value >= 0:
                return value
    return None


def _error_fields(body: Any) -> dict[str, Any]:
    """The error object of a JSON error body: `{"error": {...}}` or a flat one."""
    if isinstance(body, dict):
        inner = body.get("error")
        return inner if isinstance(inner, dict) else body
    return {}


class _Redactor:
    """Masks every registered secret (this provider's key, and access tokens and MCP
    secrets that an upstream might echo) in what an error says: the message reaches
    the editor, the session log and agentd's log."""

    def __init__(self, secret: str | None) -> None:
        # Also for a provider built without agentd.config (which registers keys as it
        # reads them); a very short key is not registered (see agentd.redaction).
        redaction.register(secret)

    def __call__(self, text: str) -> str:
        return redaction.redact(text)

    def error(self, name: str, message: str, **fields: Any) -> ProviderError:
        """A ProviderError (its arguments) with the message and data strings redacted."""
        data = fields.pop("data", None)
        if data:
            fields["data"] = {k: self(v) if isinstance(v, str) else v for k, v in data.items()}
        return ProviderError(name, self(message), **fields)

    def interrupted(self, message: str) -> ProviderError:
        """The stream broke or could not be read: worth a retry."""
        return self.error("StreamInterrupted", message, retryable=True)

    def from_status(self, status: int, body: Any, headers: Mapping[str, str]) -> ProviderError:
        fields = _error_fields(body)
        message = fields.get("message")
        if not isinstance(message, str) or not message:
            text = body if isinstance(body, str) else ""
            message = text.strip()[:500] or f"The model provider answered HTTP {status}."
        code, type_, param = fields.get("code"), fields.get("type"), fields.get("param")
        name, retryable = _classify(status, message, code, type_)
        should_retry = headers.get("x-should-retry")
        if should_retry == "false":
            retryable = False
        data = {
            k: v for k, v in (("code", code), ("type", type_), ("param", param)) if v is not None
        }
        return self.error(
            name,
            message,
            status=status,
            retryable=retryable,
            retry_after=_retry_after_s(headers),
            data=data,
        )

    def from_in_band(self, payload: Any) -> ProviderError:
        """An error reported inside a 200 stream (`{"error": ...}`, `object: "error"`,
        or an `event: error` / non-standard `error:` SSE field)."""
        if isinstance(payload, dict) and payload.get("object") == "error":
            fields = payload
        else:
            fields = _error_fields(payload)
            if not fields and isinstance(payload, dict) and payload.get("error"):
                fields = {"message": str(payload["error"])}
        message = fields.get("message")
        if not isinstance(message, str) or not message:
            message = payload if isinstance(payload, str) and payload else ""
            message = message or "The model provider reported an error mid-stream."
        status = fields.get("status")
        if not isinstance(status, int):
            status = fields.get("code")
        if not isinstance(status, int) or isinstance(status, bool) or not 400 <= status <= 599:
            status = None
        code, type_ = fields.get("code"), fields.get("type")
        name, retryable = _classify(status, message, code, type_)
        data = {k: v for k, v in (("code", code), ("type", type_)) if v is not None}
        return self.error(name, message, status=status, retryable=retryable, data=data)


# ---------------------------------------------------------------------------
# Wire parsing


class _SseDecoder:
    """Server-Sent Events from raw body bytes.

    Works on bytes, splitting lines itself, so that the stall timer can wrap each
    network read rather than each line, and JSON is parsed straight from bytes.
    """

    __slots__ = ("_data", "_data_size", "_event", "_skip_lf", "_tail")

    def __init__(self) -> None:
        # A line still without its end: a bytearray, since `bytes +=` would copy the
        # whole line per read (quadratic in a long line).
        self._tail = bytearray()
        self._skip_lf = False
        self._data: list[bytes] = []
        self._data_size = 0
        self._event: str | None = None

    def feed(self, chunk: bytes) -> list[tuple[str | None, bytes]]:
        """Feed body bytes; returns the (event name, data) of each completed event."""
        if self._skip_lf:
            self._skip_lf = False
            if chunk.startswith(b"\n"):
                chunk = chunk[1:]
        if b"\r" in chunk:
            # CRLF and lone CR end lines too; a CR at the end of a read may be half
            # of a CRLF whose LF arrives with the next one.
            self._skip_lf = chunk.endswith(b"\r")
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        end = chunk.rfind(b"\n")
        if end < 0:
            self._tail += chunk
            if len(self._tail) + self._data_size > MAX_EVENT_BYTES:
                raise _TooLarge("an event", MAX_EVENT_BYTES)
            return []
        self._tail += chunk[:end]
        lines = bytes(self._tail).split(b"\n")
        self._tail = bytearray(chunk[end + 1 :])
        events = []
        for line in lines:
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def finish(self) -> tuple[str | None, bytes] | None:
        """At the end of the body: a last event that lacked its blank line."""
        if self._tail:
            self._line(bytes(self._tail))
            self._tail = bytearray()
        return self._flush()

    def _line(self, line: bytes) -> tuple[str | None, bytes] | None:
        if line.startswith(b"data:"):
            data = line[6:] if line.startswith(b"data: ") else line[5:]
            self._data_size += len(data)
            if self._data_size > MAX_EVENT_BYTES:
                raise _TooLarge("an event", MAX_EVENT_BYTES)
            self._data.append(data)
            return None
        if not line:
            return self._flush()
        if line.startswith(b":"):  # comment / keep-alive
            return None
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"error":
            # Non-standard: older llama.cpp builds send `error: {...}` in a 200 stream.
            self._event = "error"
            self._data.append(value)
        return None

    def _flush(self) -> tuple[str | None, bytes] | None:
        if not self._data:
            self._event = None
            return None
        event = (self._event, b"\n".join(self._data))
        self._data = []
        self._data_size = 0
        self._event = None
        return event


def load_json(data: bytes) -> Any:
    """A JSON document from the model server. orjson is strict where servers are not: a
    lone surrogate escape (`"\\ud800"`, from a server splitting an emoji's UTF-16 pair
    across tokens), `NaN`, an integer beyond 64 bits. Such a document is read by
    Python's parser instead, and each lone surrogate becomes U+FFFD, so the answer is
    kept and can be stored; numbers are validated where they are used. Raises
    ValueError when the data is not JSON."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    try:
        return repair(json.loads(data))
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


async def _read_capped(response: Any, limit: int) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            raise _TooLarge("a response body", limit)
    return bytes(body)


async def _cap_error_body(response: Any) -> None:
    """httpx response hook: the SDK reads an error answer's body whole; a hostile server
    must not make that unbounded."""
    if response.status_code >= 300:
        response.stream = _capped_stream_class()(response.stream, MAX_ERROR_BODY_BYTES)


def _httpx_response() -> type:
    """`cast_to` for the SDK's `post`: the raw, unread HTTP response."""
    import httpx2

    return httpx2.Response


@functools.cache
def _capped_stream_class() -> type:
    # Defined on first use: httpx loads with the SDK, never at agentd's startup.
    import httpx2

    class CappedStream(httpx2.AsyncByteStream):
        """Ends in `_TooLarge` past `limit` bytes."""

        def __init__(self, inner: Any, limit: int) -> None:
            self._inner = inner
            self._limit = limit

        async def __aiter__(self) -> AsyncIterator[bytes]:
            seen = 0
            async for chunk in self._inner:
                seen += len(chunk)
                if seen > self._limit:
                    raise _TooLarge("an error body", self._limit)
                yield chunk

        async def aclose(self) -> None:
            await self._inner.aclose()

    return CappedStream


def _json_or_text(data: bytes) -> Any:
    try:
        return load_json(data)
    except ValueError:
        return data.decode("utf-8", "replace")


# No model call reports more tokens than this; a larger figure is a server bug or an
# attack, and summed over a session it would overflow SQLite's 64-bit integers.
MAX_REPORTED_TOKENS = 10**12
MAX_FINISH_REASON_CHARS = 64

# What agentd reads from a model server, at most. One SSE event (its `data:` lines) or a
# whole JSON answer: far above any real chunk (a 2 MB tool-call chunk is tested). A
# streamed body: an answer of a million tokens sent one per event is ~250 MB. An error
# body is read by the SDK whole, to find the message in it.
MAX_EVENT_BYTES = 16 * 1024 * 1024
MAX_JSON_BODY_BYTES = 16 * 1024 * 1024
MAX_STREAM_BYTES = 1024 * 1024 * 1024
MAX_ERROR_BODY_BYTES = 1024 * 1024


class _TooLarge(Exception):
    """The server sent more than a cap allows; ends the step as ResponseTooLarge."""

    def __init__(self, what: str, limit: int) -> None:
        super().__init__(f"{what} larger than {limit // (1024 * 1024)} MiB")
        self.what = what
        self.limit = limit


def _int(value: Any) -> int | None:
    """A token count as the model reported it, validated: numbers only (a float is
    truncated, NaN and infinities are not a count), clamped to [0, MAX_REPORTED_TOKENS]."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return min(max(int(value), 0), MAX_REPORTED_TOKENS)


def _token_usage(raw: dict[str, Any]) -> TokenUsage:
    prompt_details = raw.get("prompt_tokens_details")
    if not isinstance(prompt_details, dict):
        prompt_details = {}
    completion_details = raw.get("completion_tokens_details")
    if not isinstance(completion_details, dict):
        completion_details = {}
    cached = _int(prompt_details.get("cached_tokens"))
    if cached is None:
        cached = _int(raw.get("prompt_cache_hit_tokens"))  # DeepSeek
    cache_write = _int(prompt_details.get("cache_write_tokens"))
    if cache_write is None:
        cache_write = _int(raw.get("cache_creation_input_tokens"))
    return TokenUsage(
        input_tokens=_int(raw.get("prompt_tokens")) or 0,
        output_tokens=_int(raw.get("completion_tokens")) or 0,
        reasoning_tokens=_int(completion_details.get("reasoning_tokens")) or 0,
        cache_read_tokens=cached or 0,
        cache_write_tokens=cache_write or 0,
    )


@attrs.define
class _PendingCall:
    call_id: str | None = None
    name: str | None = None
    arguments: list[str] = attrs.field(factory=list)
    position: int | None = None  # set when ToolCallStarted was emitted
    unsent: int = 0  # argument fragments not yet emitted (before the start)


class _StepAssembler:
    """Chat completion chunks (plain dicts) in, `ProviderEvent`s out."""

    def __init__(self, redact: _Redactor) -> None:
        self._redact = redact
        self.response_id: str | None = None
        self.model: str | None = None
        self.finish_reason: str | None = None
        self.usage: TokenUsage | None = None
        self.refusal: str | None = None
        self._calls: list[_PendingCall] = []
        self._started: list[_PendingCall] = []
        self._by_wire_index: dict[Any, _PendingCall] = {}
        self.emitted = False

    def feed(self, chunk: Any) -> list[ProviderEvent]:
        if not isinstance(chunk, dict):
            return []
        if chunk.get("error") or chunk.get("object") == "error":
            raise self._redact.from_in_band(chunk)
        if self.response_id is None and isinstance(chunk.get("id"), str) and chunk["id"]:
            self.response_id = chunk["id"]
        if self.model is None and isinstance(chunk.get("model"), str) and chunk["model"]:
            self.model = chunk["model"]
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = _token_usage(usage)  # the last one wins (some are cumulative)
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            return []
        out: list[ProviderEvent] = []
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("index", 0) not in (0, None):
                continue
            delta = choice.get("delta")
            if delta is None:
                delta = choice.get("message")  # a server that ignored stream=True
            if isinstance(delta, dict):
                self._feed_delta(delta, out)
            finish_reason = choice.get("finish_reason")
            if isinstance(finish_reason, str) and finish_reason:
                # Unknown reasons are kept as the step's reason: a short label, not a text.
                self.finish_reason = finish_reason[:MAX_FINISH_REASON_CHARS]
        if out:
            self.emitted = True
        return out

    def _feed_delta(self, delta: dict[str, Any], out: list[ProviderEvent]) -> None:
        reasoning = delta.get("reasoning")
        if not isinstance(reasoning, str):
            reasoning = delta.get("reasoning_content")
        if isinstance(reasoning, str) and reasoning:
            out.append(ReasoningDelta(reasoning))
        content = delta.get("content")
        if isinstance(content, str) and content:
            out.append(TextDelta(content))
        refusal = delta.get("refusal")
        if isinstance(refusal, str):
            self.refusal = (self.refusal or "") + refusal
        tool_calls = delta.get("tool_calls")
        if isinstance(tool_calls, list):
            for entry in tool_calls:
                if isinstance(entry, dict):
                    self._feed_tool_call(entry, out)

    def _feed_tool_call(self, entry: dict[str, Any], out: list[ProviderEvent]) -> None:
        function = entry.get("function")
        if not isinstance(function, dict):
            function = {}
        name = function.get("name") if isinstance(function.get("name"), str) else None
        call_id = entry.get("id") if isinstance(entry.get("id"), str) else None
        arguments = function.get("arguments")
        if arguments is not None and not isinstance(arguments, str):
            arguments = orjson.dumps(arguments).decode()  # some servers send an object
        wire_index = entry.get("index")
        if not isinstance(wire_index, int) or isinstance(wire_index, bool):
            # No index: an entry with a name is a new call, anything else continues
            # the latest one.
            if name or not self._calls:
                call = self._new_call()
            else:
                call = self._calls[-1]
        else:
            existing = self._by_wire_index.get(wire_index)
            if existing is None or (
                name and call_id and existing.call_id and call_id != existing.call_id
            ):
                # A reused index bringing a different id and a name is a new call.
                call = self._new_call()
                self._by_wire_index[wire_index] = call
            else:
                call = existing
        if call_id and not call.call_id:
            call.call_id = call_id
        if name and not call.name:
            call.name = name
        if arguments:
            call.arguments.append(arguments)
            call.unsent += 1
        self._maybe_start(call, out)

    def _new_call(self) -> _PendingCall:
        call = _PendingCall()
        self._calls.append(call)
        return call

    def _maybe_start(self, call: _PendingCall, out: list[ProviderEvent]) -> None:
        if call.position is None:
            if not call.name:
                return  # arguments before the name: held until it arrives
            if not call.call_id:
                # Servers that omit ids still need one to pair the tool result.
                call.call_id = f"call_{len(self._started)}_{random.getrandbits(48):012x}"
            call.position = len(self._started)
            self._started.append(call)
            out.append(ToolCallStarted(call.position, call.call_id, call.name))
        if call.unsent:
            pending = call.arguments[-call.unsent :]
            call.unsent = 0
            out.append(ToolCallArguments(call.position, "".join(pending)))

    def finish(self) -> StepFinished:
        if self.finish_reason is None:
            raise self._redact.interrupted(
                "The model's answer ended before it was complete (no finish_reason)."
            )
        tool_calls = tuple(
            ToolCall(call.call_id or "", call.name or "", "".join(call.arguments))
            for call in self._started
        )
        finish_reason = self.finish_reason
        if tool_calls and finish_reason == "stop":
            finish_reason = "tool_calls"
        return StepFinished(
            finish_reason=finish_reason,
            usage=self.usage,
            tool_calls=tool_calls,
            refusal=self.refusal,
            response_id=self.response_id,
            model=self.model,
        )


# ---------------------------------------------------------------------------
# The client

# Per base URL, learnt from 400s: servers that reject `stream_options`, and the
# name of the output-token cap each accepts.
_NO_STREAM_OPTIONS: set[str] = set()
_MAX_TOKENS_PARAM: dict[str, str] = {}
_UNSUPPORTED_WORDS = ("unsupported", "unrecognized", "unknown", "not supported", "extra")
# After [DONE], read what is left of the body (normally just the chunked-encoding
# terminator) so the connection can be reused, but never wait long for it.
_DRAIN_AFTER_DONE_S = 0.1


class ChatProvider:
    """Streams Chat Completions steps from one OpenAI-compatible endpoint."""

    def __init__(self, config: ProviderConfig) -> None:
        self._config = config
        self._redact = _Redactor(config.api_key)
        self._client: openai.AsyncOpenAI | None = None
        self._endpoint = ""
        self._making = threading.Lock()  # (a preload thread may make it: `connect`)

    @staticmethod
    def preload() -> None:
        """Import the SDK (about a second of CPU) ahead of the first turn. Called from a
        background thread once the editor is connected; the first turn then starts at
        once. Importing twice is harmless."""
        import openai
        import openai.resources.chat.completions  # noqa: F401

    def connect(self) -> None:
        """Make the SDK's client now (a preload thread may), not at the first turn."""
        self._sdk()

    def _sdk(self) -> openai.AsyncOpenAI:
        if self._client is not None:
            return self._client
        with self._making:
            if self._client is not None:
                return self._client
            import openai

            cfg = self._config
            # Our own timers (first token, stall) are the precise ones; the transport's
            # read timeout is only a backstop behind them.
            backstop = max(cfg.first_token_timeout_s, cfg.stall_timeout_s) + 30.0
            client = openai.AsyncOpenAI(
                base_url=cfg.base_url,
                api_key=cfg.api_key or "not-needed",
                max_retries=0,  # one retry layer only: ours
                timeout=openai.Timeout(backstop, connect=cfg.connect_timeout_s),
                default_headers=dict(cfg.headers) or None,
                # No redirects: one would resend the request, API key and conversation
                # included, to wherever the server points (another port, another host).
                # A 3xx answer is reported as ProviderRedirect, naming where it pointed.
                http_client=openai.DefaultAsyncHttpxClient(
                    follow_redirects=False, event_hooks={"response": [_cap_error_body]}
                ),
            )
            url = client.base_url
            port = f":{url.port}" if url.port else ""
            self._endpoint = f"{url.scheme}://{url.host}{port}{url.path}"
            self._client = client
        return client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def complete_text(
        self,
        *,
        model: str,
        messages: list[dict[str, Any]],
        max_tokens: int | None = None,
    ) -> tuple[str, TokenUsage | None]:
        """A whole text answer without tools (titles, summaries)."""
        parts: list[str] = []
        usage: TokenUsage | None = None
        events = self.stream_chat(model=model, messages=messages, tools=None, max_tokens=max_tokens)
        async with contextlib.aclosing(events):
            async for event in events:
                if isinstance(event, TextDelta):
                    parts.append(event.text)
                elif isinstance(event, StepFinished):
                    usage = event.usage
        return "".join(parts), usage

    async def stream_chat(
        self,
        *,
        model: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        max_tokens: int | None = None,
        on_retry: Callable[[RetryNotice], None] | None = None,
    ) -> AsyncGenerator[ProviderEvent, None]:
        """Stream one step. Ends with `StepFinished`, or raises `ProviderError`.

        Errors before the first event are retried (429 except insufficient_quota,
        500/502/503/504, connection failures, timeouts, a stream cut before any
        output); once an event was yielded nothing is retried. Close the generator
        (`contextlib.aclosing`) or cancel the task to abort: the upstream HTTP
        connection is closed then.
        """
        cfg = self._config
        client = self._sdk()
        endpoint = self._endpoint
        attempt = 0
        adapted = False
        while True:
            attempt += 1
            params = self._request_params(endpoint, model, messages, tools, max_tokens)
            yielded = False
            try:
                events = self._stream_once(client, params)
                async with contextlib.aclosing(events):
                    async for event in events:
                        yielded = True
                        yield event
                return
            except ProviderError as err:
                if yielded:
                    raise
                if not adapted and self._adapt_to_rejection(err, params, endpoint):
                    adapted = True  # a re-send with a corrected request is not a retry
                    attempt -= 1
                    continue
                if not err.retryable or attempt >= cfg.max_attempts:
                    raise
                if err.retry_after is not None:
                    if err.retry_after > cfg.max_retry_after_s:
                        raise
                    delay = err.retry_after
                else:
                    cap = min(cfg.retry_max_delay_s, cfg.retry_base_delay_s * 2 ** (attempt - 1))
                    delay = random.uniform(0.0, cap)
                notice = RetryNotice(
                    attempt=attempt,
                    next_retry_at_ms=int((time.time() + delay) * 1000),
                    error=err,
                )
                logger.warning(
                    "model request failed (%s: %s); retry %d of %d in %.2f s",
                    err.name,
                    err.message,
                    attempt,
                    cfg.max_attempts - 1,
                    delay,
                )
                if on_retry is not None:
                    on_retry(notice)
                await asyncio.sleep(delay)

    def _request_params(
        self,
        endpoint: str,
        model: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        max_tokens: int | None,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"model": model, "messages": messages, "stream": True}
        if endpoint not in _NO_STREAM_OPTIONS:
            params["stream_options"] = {"include_usage": True}
        if tools:
            params["tools"] = tools
        if max_tokens is not None:
            # api.openai.com's reasoning models reject max_tokens; many compatible
            # servers do not know max_completion_tokens.
            default = "max_completion_tokens" if "api.openai.com" in endpoint else "max_tokens"
            params[_MAX_TOKENS_PARAM.get(endpoint, default)] = max_tokens
        return params

    def _adapt_to_rejection(
        self, err: ProviderError, params: dict[str, Any], endpoint: str
    ) -> bool:
        """Learn from a 400 that names a parameter this server does not take."""
        if err.name != "ProviderBadRequest":
            return False
        message = err.message.lower()
        if "stream_options" in params and "stream_options" in message:
            logger.info("%s rejected stream_options; sending without it from now on", endpoint)
            _NO_STREAM_OPTIONS.add(endpoint)
            return True
        if not any(word in message for word in _UNSUPPORTED_WORDS):
            return False
        if "max_tokens" in params and "max_completion_tokens" in message:
            _MAX_TOKENS_PARAM[endpoint] = "max_completion_tokens"
            return True
        if "max_completion_tokens" in params and "max_completion_tokens" in message:
            _MAX_TOKENS_PARAM[endpoint] = "max_tokens"
            return True
        return False

    async def _stream_once(
        self, client: openai.AsyncOpenAI, params: dict[str, Any]
    ) -> AsyncGenerator[ProviderEvent, None]:
        """One HTTP request; raises ProviderError (its `retryable` says whether a retry
        could help; the caller knows whether anything was yielded)."""
        import openai

        cfg = self._config
        redact = self._redact
        loop = asyncio.get_running_loop()
        deadline = loop.time() + cfg.first_token_timeout_s
        response: Any = None
        reads: AsyncIterator[bytes] | None = None
        try:
            try:
                async with asyncio.timeout_at(deadline):
                    # Messages and tools are already wire-format JSON. Through
                    # `chat.completions.create` the SDK would walk every message in
                    # Python (its type-driven transform) and encode the body with the
                    # stdlib: with a long history, the largest CPU cost of a turn. The
                    # SDK's generic `post` sends orjson's bytes as they are, and keeps
                    # its headers, auth and status errors.
                    response = await client.post(
                        "/chat/completions",
                        content=orjson.dumps(params),
                        cast_to=_httpx_response(),
                        stream=True,
                        options={"headers": {"Content-Type": "application/json"}},
                    )
            except TimeoutError:
                raise redact.error(
                    "ProviderTimeout",
                    f"The model provider did not answer within {cfg.first_token_timeout_s:g} s.",
                    retryable=True,
                ) from None
            except openai.APIError as err:
                raise self._from_sdk_error(err) from None
            except _TooLarge as err:  # an error body over its cap (see _cap_error_body)
                raise self._too_large(err) from None

            assembler = _StepAssembler(redact)
            content_type = response.headers.get("content-type", "")
            if "event-stream" not in content_type and "json" in content_type:
                # The server ignored stream=True and sent a whole chat.completion.
                try:
                    async with asyncio.timeout_at(deadline):
                        body = await _read_capped(response, MAX_JSON_BODY_BYTES)
                    payload = load_json(body)
                except _TooLarge as err:
                    raise self._too_large(err) from None
                except TimeoutError:
                    raise redact.error(
                        "ProviderTimeout",
                        f"The model did not answer within {cfg.first_token_timeout_s:g} s.",
                        retryable=True,
                    ) from None
                except Exception as err:
                    raise redact.interrupted(
                        f"Unreadable answer from the model provider: {err}"
                    ) from None
                for event in assembler.feed(payload):
                    yield event
                yield assembler.finish()
                return

            decoder = _SseDecoder()
            received = 0
            reads = response.aiter_bytes().__aiter__()
            eof = saw_done = False
            while not (eof or saw_done):
                if assembler.emitted:
                    wait_until = loop.time() + cfg.stall_timeout_s
                else:
                    wait_until = deadline
                try:
                    async with asyncio.timeout_at(wait_until):
                        data = await anext(reads)
                except StopAsyncIteration:
                    eof = True
                    last = decoder.finish()
                    sse_events = [last] if last is not None else []
                except TimeoutError:
                    raise self._timeout_error(assembler.emitted) from None
                except Exception as err:
                    raise self._from_transport_error(err) from None
                else:
                    received += len(data)
                    try:
                        if received > MAX_STREAM_BYTES:
                            raise _TooLarge("the answer", MAX_STREAM_BYTES)
                        sse_events = decoder.feed(data)
                    except _TooLarge as err:
                        raise self._too_large(err) from None
                for event_name, payload in sse_events:
                    if event_name == "error":
                        raise redact.from_in_band(_json_or_text(payload))
                    if payload == b"[DONE]":
                        saw_done = True
                        break
                    try:
                        chunk = load_json(payload)
                    except ValueError:
                        shown = payload[:200].decode("utf-8", "replace")
                        raise redact.interrupted(
                            f"The model provider sent a malformed stream event: {shown!r}"
                        ) from None
                    for event in assembler.feed(chunk):
                        yield event
            if saw_done and not eof:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(_DRAIN_AFTER_DONE_S):
                        async for _ in reads:
                            pass
            yield assembler.finish()
        finally:
            # Explicit, so that an abort (aclose, cancellation, timeout) closes the
            # upstream connection now rather than when the GC gets to it.
            close_reads = getattr(reads, "aclose", None)
            if close_reads is not None:
                with contextlib.suppress(Exception):
                    await close_reads()
            if response is not None:
                with contextlib.suppress(Exception):
                    await response.aclose()

    def _too_large(self, err: _TooLarge) -> ProviderError:
        # Not retried: the same request would bring the same answer.
        return self._redact.error(
            "ResponseTooLarge",
            f"The model provider sent {err}; agentd stopped reading it.",
            data={"limit": err.limit},
        )

    def _timeout_error(self, after_first_event: bool) -> ProviderError:
        cfg = self._config
        if after_first_event:
            message = f"The model stopped sending data for {cfg.stall_timeout_s:g} s."
        else:
            message = f"The model did not start answering within {cfg.first_token_timeout_s:g} s."
        return self._redact.error("ProviderTimeout", message, retryable=True)

    def _from_transport_error(self, err: Exception) -> ProviderError:
        import httpx2

        if isinstance(err, httpx2.TimeoutException):
            return self._redact.error(
                "ProviderTimeout", "Reading from the model provider timed out.", retryable=True
            )
        detail = str(err) or type(err).__name__
        return self._redact.interrupted(
            f"The connection to the model provider broke mid-answer: {detail}"
        )

    def _from_sdk_error(self, err: openai.APIError) -> ProviderError:
        import openai

        if isinstance(err, openai.APITimeoutError):
            return self._redact.error(
                "ProviderTimeout", "The request to the model provider timed out.", retryable=True
            )
        if isinstance(err, openai.APIConnectionError):
            cause = err.__cause__
            detail = str(cause) if cause is not None and str(cause) else err.message
            return self._redact.error(
                "ProviderUnavailable",
                f"Could not reach the model provider at {self._endpoint}: {detail}",
                retryable=True,
            )
        if isinstance(err, openai.APIStatusError):
            if 300 <= err.status_code < 400:
                where = err.response.headers.get("location") or "nowhere"
                return self._redact.error(
                    "ProviderRedirect",
                    f"The model provider at {self._endpoint} answered HTTP {err.status_code}, "
                    f"redirecting to {where}. agentd follows no redirects (they would carry "
                    "the API key and the conversation elsewhere): set the provider's base_url "
                    "to the right address.",
                    status=err.status_code,
                    data={"location": where},
                )
            return self._redact.from_status(err.status_code, err.body, err.response.headers)
        return self._redact.error("ProviderUnavailable", err.message, retryable=True)
