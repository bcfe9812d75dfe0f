"""ChatProvider against a real ScriptedModelServer on loopback (nothing mocked)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from helpers import run

from agentd.errors import ProviderError
from agentd.provider import (
    ChatProvider,
    ProviderConfig,
    ProviderEvent,
    ReasoningDelta,
    RetryNotice,
    StepFinished,
    TextDelta,
    TokenUsage,
    ToolCallArguments,
    ToolCallStarted,
)
from agentd.scripted_model import ScriptedModelServer

pytestmark = pytest.mark.timeout(30)

FIXTURES = Path(__file__).parent / "fixtures" / "openai-compat"
ROOT = Path(__file__).resolve().parent.parent
SSE_FIXTURES = sorted(p.name for p in FIXTURES.glob("*.sse"))
HTTP_FIXTURES = sorted(p.name for p in FIXTURES.glob("*.http"))
MESSAGES = [{"role": "user", "content": "hi"}]
T = TypeVar("T")


def config(srv: ScriptedModelServer, **overrides: Any) -> ProviderConfig:
    values: dict[str, Any] = {
        "base_url": srv.base_url,
        "api_key": "sk-test-key-0123456789",
        "retry_base_delay_s": 0.001,
        "retry_max_delay_s": 0.01,
    }
    values.update(overrides)
    return ProviderConfig(**values)


async def collect(
    cfg: ProviderConfig,
    *,
    messages: list[dict[str, Any]] = MESSAGES,
    tools: list[dict[str, Any]] | None = None,
    max_tokens: int | None = None,
    on_retry: Callable[[RetryNotice], None] | None = None,
) -> tuple[list[ProviderEvent], ProviderError | None]:
    """All events of one step, and the error that ended it if any."""
    provider = ChatProvider(cfg)
    events: list[ProviderEvent] = []
    try:
        stream = provider.stream_chat(
            model="scripted",
            messages=messages,
            tools=tools,
            max_tokens=max_tokens,
            on_retry=on_retry,
        )
        async with contextlib.aclosing(stream):
            async for event in stream:
                events.append(event)
    except ProviderError as err:
        return events, err
    finally:
        await provider.aclose()
    return events, None


def assemble(events: list[ProviderEvent]) -> dict[str, Any]:
    """What a consumer builds from the events; checks their internal consistency."""
    finished = [e for e in events if isinstance(e, StepFinished)]
    assert len(finished) == 1 and events[-1] is finished[0]
    step = finished[0]
    started = [e for e in events if isinstance(e, ToolCallStarted)]
    assert [e.index for e in started] == list(range(len(step.tool_calls)))
    for event in started:
        call = step.tool_calls[event.index]
        assert (event.call_id, event.name) == (call.call_id, call.name)
        fragments = [
            e.delta for e in events if isinstance(e, ToolCallArguments) and e.index == event.index
        ]
        assert "".join(fragments) == call.arguments
        # Fragments only follow their call's start.
        first_fragment = next(
            (
                i
                for i, e in enumerate(events)
                if isinstance(e, ToolCallArguments) and e.index == event.index
            ),
            None,
        )
        assert first_fragment is None or first_fragment > events.index(event)
    return {
        "content": "".join(e.text for e in events if isinstance(e, TextDelta)),
        "reasoning": "".join(e.text for e in events if isinstance(e, ReasoningDelta)),
        "step": step,
    }


def expected_for(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name.rsplit(".", 1)[0]).with_suffix(".expected.json").read_text())


def check_against_expected(result: dict[str, Any], expected: dict[str, Any]) -> None:
    step: StepFinished = result["step"]
    assert expected["outcome"] == "complete"
    assert result["content"] == (expected["content"] or "")
    assert result["reasoning"] == (expected["reasoning"] or "")
    assert step.refusal == expected["refusal"]
    assert step.finish_reason == expected.get("effective_finish_reason", expected["finish_reason"])
    assert step.response_id == expected["id"]
    assert step.model == expected["model"]
    assert [(c.call_id, c.name, json.loads(c.arguments)) for c in step.tool_calls] == [
        (c["id"], c["name"], c["arguments_parsed"]) for c in expected["tool_calls"]
    ]
    usage = expected["usage"]
    if usage is None:
        assert step.usage is None
    else:
        assert step.usage == TokenUsage(
            input_tokens=usage["prompt_tokens"],
            output_tokens=usage["completion_tokens"],
            reasoning_tokens=usage["reasoning_tokens"] or 0,
            cache_read_tokens=usage["cached_tokens"] or 0,
        )


# ---------------------------------------------------------------------------
# Recorded transcripts


@pytest.mark.parametrize("fixture", SSE_FIXTURES)
def test_sse_fixture_assembles_as_expected(srv: ScriptedModelServer, fixture: str) -> None:
    srv.enqueue({"fixture": fixture})
    events, error = run(collect(config(srv)))
    assert error is None, error
    check_against_expected(assemble(events), expected_for(fixture))


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("fixture", SSE_FIXTURES)
def test_sse_fixture_split_at_random_offsets(
    srv: ScriptedModelServer, fixture: str, seed: int
) -> None:
    body_length = len((FIXTURES / fixture).read_bytes().partition(b"\n")[2])
    rng = random.Random(f"{fixture}:{seed}")
    offsets = sorted(rng.sample(range(1, body_length), k=min(60, body_length - 1)))
    srv.enqueue({"fixture": fixture, "splitAt": offsets})
    events, error = run(collect(config(srv)))
    assert error is None, error
    check_against_expected(assemble(events), expected_for(fixture))


# name, retryable, retry_after (s)
HTTP_CLASSIFICATION: dict[str, tuple[str, bool, float | None]] = {
    "azure-error-400-content-filter.http": ("ContentFiltered", False, None),
    "azure-error-429.http": ("ProviderRateLimited", True, 6.0),
    "groq-error-429.http": ("ProviderRateLimited", True, 5.0),
    "llamacpp-error-400-exceed-context.http": ("ContextOverflow", False, None),
    "ollama-error-400-context-length.http": ("ContextOverflow", False, None),
    "openai-error-400-context-length.http": ("ContextOverflow", False, None),
    "openai-error-401.http": ("ProviderAuthError", False, None),
    "openai-error-429-insufficient-quota.http": ("ProviderRateLimited", False, None),
    "openai-error-429-rate-limit.http": ("ProviderRateLimited", True, None),
    "openai-error-500.http": ("ProviderUnavailable", True, None),
    "openai-error-503.http": ("ProviderUnavailable", True, None),
    "vllm-error-400-context-length.http": ("ContextOverflow", False, None),
    "vllm-legacy-error-400-context-length.http": ("ContextOverflow", False, None),
}


def test_every_http_fixture_has_a_classification() -> None:
    assert set(HTTP_FIXTURES) == set(HTTP_CLASSIFICATION)


@pytest.mark.parametrize("fixture", HTTP_FIXTURES)
def test_http_fixture_is_classified(srv: ScriptedModelServer, fixture: str) -> None:
    name, retryable, retry_after = HTTP_CLASSIFICATION[fixture]
    expected = expected_for(fixture)["error"]
    srv.enqueue({"fixture": fixture})
    events, error = run(collect(config(srv, max_attempts=1)))
    assert events == []
    assert error is not None
    assert (error.name, error.retryable, error.retry_after) == (name, retryable, retry_after)
    assert error.status == expected["http_status"]
    assert error.message == expected["message"]
    assert error.to_wire()["data"]["status"] == expected["http_status"]
    if expected["code"] is not None:
        assert error.data is not None and error.data["code"] == expected["code"]
    assert len(srv.requests()) == 1


@pytest.mark.parametrize(
    ("status", "name", "retryable"),
    [
        (400, "ProviderBadRequest", False),
        (401, "ProviderAuthError", False),
        (403, "ProviderAuthError", False),
        (404, "ModelNotFound", False),
        (422, "ProviderBadRequest", False),
        (500, "ProviderUnavailable", True),
        (501, "ProviderUnavailable", False),
        (502, "ProviderUnavailable", True),
        (504, "ProviderUnavailable", True),
    ],
)
def test_status_classification(
    srv: ScriptedModelServer, status: int, name: str, retryable: bool
) -> None:
    srv.enqueue({"error": {"status": status}})
    _, error = run(collect(config(srv, max_attempts=1)))
    assert error is not None
    assert (error.name, error.status, error.retryable) == (name, status, retryable)


# ---------------------------------------------------------------------------
# Through the scripted model's own streams


def test_text_reasoning_and_usage(srv: ScriptedModelServer) -> None:
    srv.enqueue(
        {
            "reasoning": "think first",
            "text": "Hello world",
            "usage": {
                "prompt_tokens": 9,
                "completion_tokens": 4,
                "cached_tokens": 3,
                "reasoning_tokens": 2,
            },
        }
    )
    events, error = run(collect(config(srv)))
    assert error is None
    assert events[:4] == [
        ReasoningDelta("think "),
        ReasoningDelta("first"),
        TextDelta("Hello "),
        TextDelta("world"),
    ]
    step = assemble(events)["step"]
    assert step.finish_reason == "stop"
    assert step.usage == TokenUsage(
        input_tokens=9, output_tokens=4, reasoning_tokens=2, cache_read_tokens=3
    )
    assert step.model == "scripted" and step.response_id.startswith("chatcmpl-")


def test_tool_call_events(srv: ScriptedModelServer) -> None:
    events, error = run(
        collect(
            config(srv),
            messages=[{"role": "user", "content": '/tool read_file {"path": "a.py"}\n/tool ls'}],
        )
    )
    assert error is None
    step = assemble(events)["step"]
    assert step.finish_reason == "tool_calls"
    assert [(c.name, json.loads(c.arguments)) for c in step.tool_calls] == [
        ("read_file", {"path": "a.py"}),
        ("ls", {}),
    ]
    assert isinstance(events[0], ToolCallStarted) and events[0].name == "read_file"
    assert sum(isinstance(e, ToolCallArguments) and e.index == 0 for e in events) == 3


def test_request_shape(srv: ScriptedModelServer) -> None:
    tools = [{"type": "function", "function": {"name": "ls", "parameters": {"type": "object"}}}]
    _, error = run(collect(config(srv, headers={"x-agentd": "1"}), tools=tools, max_tokens=123))
    assert error is None
    [request] = srv.requests()
    body = request["body"]
    assert body["model"] == "scripted"
    assert body["messages"] == MESSAGES
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["tools"] == tools
    assert body["max_tokens"] == 123
    assert request["headers"]["x-agentd"] == "1"


def test_complete_text(srv: ScriptedModelServer) -> None:
    srv.enqueue({"text": "A short title", "usage": {"prompt_tokens": 5, "completion_tokens": 3}})

    async def go() -> tuple[str, TokenUsage | None]:
        provider = ChatProvider(config(srv))
        try:
            return await provider.complete_text(model="scripted", messages=MESSAGES, max_tokens=20)
        finally:
            await provider.aclose()

    text, usage = run(go())
    assert text == "A short title"
    assert usage == TokenUsage(input_tokens=5, output_tokens=3)
    assert "tools" not in srv.requests()[0]["body"]


# ---------------------------------------------------------------------------
# Retries


def test_retry_after_is_honoured_then_success(srv: ScriptedModelServer) -> None:
    srv.enqueue(
        {"error": {"status": 429, "headers": {"retry-after-ms": "200"}}},
        {"error": {"status": 503, "headers": {"retry-after": "0"}}},
        {"text": "finally"},
    )
    notices: list[RetryNotice] = []
    start = time.monotonic()
    events, error = run(collect(config(srv), on_retry=notices.append))
    elapsed = time.monotonic() - start
    assert error is None
    assert assemble(events)["content"] == "finally"
    assert [n.attempt for n in notices] == [1, 2]
    assert [n.error.name for n in notices] == ["ProviderRateLimited", "ProviderUnavailable"]
    assert [n.error.retry_after for n in notices] == [0.2, 0.0]
    assert notices[0].next_retry_at_ms >= int(time.time() * 1000) - 60_000
    assert elapsed >= 0.2  # the server-requested wait was kept (a lower bound: not flaky)
    assert len(srv.requests()) == 3


def test_attempts_are_bounded(srv: ScriptedModelServer) -> None:
    srv.enqueue({"error": {"status": 500}, "repeat": 10})
    notices: list[RetryNotice] = []
    events, error = run(collect(config(srv, max_attempts=3), on_retry=notices.append))
    assert events == []
    assert error is not None and error.name == "ProviderUnavailable"
    assert [n.attempt for n in notices] == [1, 2]
    assert len(srv.requests()) == 3


@pytest.mark.parametrize(
    "spec",
    [
        {"fixture": "openai-error-429-insufficient-quota.http"},
        {"fixture": "openai-error-400-context-length.http"},
        {"error": {"status": 401}},
        {"error": {"status": 429, "headers": {"retry-after": "3600"}}},  # longer than we wait
        {"error": {"status": 503, "headers": {"x-should-retry": "false"}}},
    ],
)
def test_not_retried(srv: ScriptedModelServer, spec: dict[str, Any]) -> None:
    srv.enqueue({**spec, "repeat": 4})
    notices: list[RetryNotice] = []
    _, error = run(collect(config(srv), on_retry=notices.append))
    assert error is not None
    assert notices == []
    assert len(srv.requests()) == 1


def test_insufficient_quota_keeps_its_code(srv: ScriptedModelServer) -> None:
    srv.enqueue({"fixture": "openai-error-429-insufficient-quota.http"})
    _, error = run(collect(config(srv)))
    assert error is not None
    assert (error.name, error.retryable) == ("ProviderRateLimited", False)
    assert error.data is not None and error.data["code"] == "insufficient_quota"


def test_cancellation_during_backoff_returns_promptly(srv: ScriptedModelServer) -> None:
    srv.enqueue({"error": {"status": 429, "headers": {"retry-after": "60"}}})

    async def go() -> float:
        retrying = asyncio.Event()
        task = asyncio.create_task(collect(config(srv), on_retry=lambda _: retrying.set()))
        await asyncio.wait_for(retrying.wait(), 10)
        start = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - start

    assert run(go()) < 5  # "did not wait out the 60 s"
    assert len(srv.requests()) == 1


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_connection_refused_is_retried_then_unavailable() -> None:
    cfg = ProviderConfig(
        base_url=f"http://127.0.0.1:{_closed_port()}/v1", max_attempts=2, retry_base_delay_s=0.001
    )
    notices: list[RetryNotice] = []
    events, error = run(collect(cfg, on_retry=notices.append))
    assert events == []
    assert error is not None and error.name == "ProviderUnavailable" and error.retryable
    assert "127.0.0.1" in error.message
    assert [n.attempt for n in notices] == [1]


def test_stream_cut_before_any_output_is_retried(srv: ScriptedModelServer) -> None:
    srv.enqueue({"text": "lost", "dropAfterChunks": 0}, {"text": "second try"})
    notices: list[RetryNotice] = []
    events, error = run(collect(config(srv), on_retry=notices.append))
    assert error is None
    assert assemble(events)["content"] == "second try"
    assert [n.error.name for n in notices] == ["StreamInterrupted"]


def test_stream_options_rejection_is_learnt_per_base_url() -> None:
    rejection = {
        "error": {
            "status": 400,
            "body": {
                "error": {"message": "Unrecognized request argument supplied: stream_options"}
            },
        }
    }
    with ScriptedModelServer() as own:  # own base URL: the lesson is remembered per URL
        own.enqueue(rejection, {"text": "ok"}, {"text": "again"})
        notices: list[RetryNotice] = []
        events, error = run(collect(config(own), on_retry=notices.append))
        assert error is None and assemble(events)["content"] == "ok"
        assert notices == []  # a corrected re-send, not a retry
        events, error = run(collect(config(own)))  # a new provider, same URL
        assert error is None and assemble(events)["content"] == "again"
        sent = [("stream_options" in r["body"]) for r in own.requests()]
        assert sent == [True, False, False]


def test_max_tokens_name_is_learnt() -> None:
    rejection = {
        "error": {
            "status": 400,
            "body": {
                "error": {
                    "message": "Unsupported parameter: 'max_tokens' is not supported with this model. "
                    "Use 'max_completion_tokens' instead.",
                    "param": "max_tokens",
                }
            },
        }
    }
    with ScriptedModelServer() as own:
        own.enqueue(rejection, {"text": "ok"})
        _, error = run(collect(config(own), max_tokens=50))
        assert error is None
        bodies = [r["body"] for r in own.requests()]
        assert bodies[0]["max_tokens"] == 50 and "max_completion_tokens" not in bodies[0]
        assert bodies[1]["max_completion_tokens"] == 50 and "max_tokens" not in bodies[1]


# ---------------------------------------------------------------------------
# Timeouts, interruptions, abort


def test_stall_timeout(srv: ScriptedModelServer) -> None:
    srv.enqueue({"text": "one two three four", "stallAfterChunks": 2, "repeat": 2})
    events, error = run(collect(config(srv, stall_timeout_s=0.5)))
    assert events == [TextDelta("one "), TextDelta("two ")]
    assert error is not None and error.name == "ProviderTimeout"
    assert len(srv.requests()) == 1  # output had been yielded: not retried
    assert srv.wait_response_end(0) == "client_closed"


def test_first_token_timeout_is_retried(srv: ScriptedModelServer) -> None:
    srv.enqueue({"text": "late", "firstDelayMs": 20_000, "repeat": 2})
    notices: list[RetryNotice] = []
    events, error = run(
        collect(config(srv, first_token_timeout_s=0.3, max_attempts=2), on_retry=notices.append)
    )
    assert events == []
    assert error is not None and error.name == "ProviderTimeout"
    assert [n.error.name for n in notices] == ["ProviderTimeout"]
    assert len(srv.requests()) == 2
    assert [srv.wait_response_end(i) for i in range(2)] == ["client_closed"] * 2


def test_drop_mid_stream_is_interrupted(srv: ScriptedModelServer) -> None:
    srv.enqueue({"text": "a b c d e f", "dropAfterChunks": 2, "repeat": 2})
    events, error = run(collect(config(srv)))
    assert events == [TextDelta("a "), TextDelta("b ")]
    assert error is not None and error.name == "StreamInterrupted"
    assert len(srv.requests()) == 1


def test_abort_by_aclose_closes_the_upstream_connection(srv: ScriptedModelServer) -> None:
    srv.enqueue({"text": "a b c d e f", "stallAfterChunks": 2})

    async def go() -> list[ProviderEvent]:
        provider = ChatProvider(config(srv))
        stream = provider.stream_chat(model="scripted", messages=MESSAGES, tools=None)
        first = [await anext(stream)]
        await stream.aclose()
        await provider.aclose()
        return first

    assert run(go()) == [TextDelta("a ")]
    assert srv.wait_response_end(0, timeout=5) == "client_closed"


def test_abort_by_cancellation_closes_the_upstream_connection(srv: ScriptedModelServer) -> None:
    srv.enqueue({"text": "a b c d e f", "stallAfterChunks": 2})

    async def go() -> None:
        provider = ChatProvider(config(srv))
        got_output = asyncio.Event()

        async def consume() -> None:
            async for _ in provider.stream_chat(model="scripted", messages=MESSAGES, tools=None):
                got_output.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(got_output.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Checked before the client is closed: the stream itself closed the connection.
        outcome = await asyncio.to_thread(srv.wait_response_end, 0, 5)
        await provider.aclose()
        assert outcome == "client_closed"

    run(go())


# ---------------------------------------------------------------------------
# Wire rules on hand-written transcripts


def _chunk(
    delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any
) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
    if delta is not None:
        choice["delta"] = delta
    return {
        "id": "chatcmpl-hand",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "hand",
        "choices": [choice],
        **extra,
    }


def _write_transcript(
    directory: Path,
    name: str,
    body: str,
    *,
    content_type: str = "text/event-stream",
    status: int = 200,
) -> None:
    head = json.dumps({"status": status, "headers": {"content-type": content_type}})
    (directory / name).write_text(head + "\n" + body)


def _sse(*events: Any) -> str:
    return "".join(f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n" for e in events)


def _run_transcript(
    tmp_path: Path, body: str, **kwargs: Any
) -> tuple[list[ProviderEvent], ProviderError | None]:
    _write_transcript(tmp_path, "t.sse", body, **kwargs)
    with ScriptedModelServer(fixtures_dir=tmp_path) as own:
        own.enqueue({"fixture": "t.sse", "repeat": 5})
        return run(collect(config(own, max_attempts=1)))


def test_stream_without_finish_reason_is_interrupted(tmp_path: Path) -> None:
    events, error = _run_transcript(tmp_path, _sse(_chunk({"content": "partial"}), "[DONE]"))
    assert events == [TextDelta("partial")]
    assert error is not None and error.name == "StreamInterrupted"


def test_in_band_error_object_keeps_the_partial_text(tmp_path: Path) -> None:
    body = _sse(
        _chunk({"content": "so far"}),
        {"error": {"message": "upstream exploded", "type": "server_error"}},
    )
    events, error = _run_transcript(tmp_path, body)
    assert events == [TextDelta("so far")]
    assert error is not None
    assert (error.name, error.message) == ("ProviderUnavailable", "upstream exploded")


def test_in_band_flat_error_object(tmp_path: Path) -> None:
    flat = {
        "object": "error",
        "message": "This model's maximum context length is 4096 tokens.",
        "type": "BadRequestError",
        "code": 400,
    }
    events, error = _run_transcript(tmp_path, _sse(flat))
    assert events == []
    assert error is not None and (error.name, error.status) == ("ContextOverflow", 400)


def test_in_band_error_field(tmp_path: Path) -> None:
    # Older llama-server builds: a non-standard `error:` SSE field in a 200 stream.
    body = (
        _sse(_chunk({"content": "x"}))
        + 'error: {"code":500,"message":"slot died","type":"server_error"}\n\n'
    )
    events, error = _run_transcript(tmp_path, body)
    assert events == [TextDelta("x")]
    assert error is not None and (error.name, error.message) == ("ProviderUnavailable", "slot died")


def test_comments_missing_choices_and_deltas_are_tolerated(tmp_path: Path) -> None:
    body = (
        ": keep-alive\n\n"
        + _sse({"id": "", "model": "", "object": "", "choices": [], "created": 0})
        + _sse({"id": "chatcmpl-late", "model": "late", "object": "chat.completion.chunk"})
        + _sse(_chunk(None))
        + ":comment without space\n\n"
        + _sse(_chunk({"content": "ok", "reasoning_content": None}))
        + _sse(_chunk({}, "stop"), "[DONE]")
    )
    events, error = _run_transcript(tmp_path, body)
    assert error is None
    step = assemble(events)["step"]
    assert assemble(events)["content"] == "ok"
    assert (step.response_id, step.model) == ("chatcmpl-late", "late")


def test_reasoning_field_wins_over_reasoning_content(tmp_path: Path) -> None:
    body = _sse(
        _chunk({"reasoning": "A", "reasoning_content": "B"}),
        _chunk({"reasoning_content": "C"}),
        _chunk({"reasoning": None, "reasoning_content": "D"}),
        _chunk({}, "stop"),
    )
    events, error = _run_transcript(tmp_path, body)
    assert error is None
    assert assemble(events)["reasoning"] == "ACD"


def test_tool_call_assembly_edge_cases(tmp_path: Path) -> None:
    def call(**fields: Any) -> dict[str, Any]:
        return {"tool_calls": [fields]}

    body = _sse(
        # Missing index: a named entry starts a call, an unnamed one continues it.
        _chunk(call(id="call_a", function={"name": "first", "arguments": '{"x":'})),
        _chunk(call(function={"arguments": "1}"})),
        _chunk(call(id="call_b", function={"name": "second", "arguments": "{}"})),
        # Index 0 reused by a different id with a name: a new call.
        _chunk(call(index=0, id="call_c", function={"name": "third", "arguments": ""})),
        _chunk(call(index=0, function={"arguments": '{"y": 2}'})),
        # Same id again on index 0: a continuation, its name is not replaced.
        _chunk(call(index=0, id="call_c", function={"name": "ignored", "arguments": ""})),
        # Arguments sent as an object; no id at all.
        _chunk(call(index=1, function={"name": "fourth", "arguments": {"z": [1, 2]}})),
        _chunk({}, "stop"),
    )
    events, error = _run_transcript(tmp_path, body)
    assert error is None
    step = assemble(events)["step"]
    assert step.finish_reason == "tool_calls"  # "stop" with tool calls
    assert [(c.name, json.loads(c.arguments)) for c in step.tool_calls] == [
        ("first", {"x": 1}),
        ("second", {}),
        ("third", {"y": 2}),
        ("fourth", {"z": [1, 2]}),
    ]
    assert [c.call_id for c in step.tool_calls[:3]] == ["call_a", "call_b", "call_c"]
    assert step.tool_calls[3].call_id.startswith("call_")


def test_last_usage_wins_and_deepseek_cache_hits(tmp_path: Path) -> None:
    body = _sse(
        _chunk({"content": "a"}, usage={"prompt_tokens": 10, "completion_tokens": 1}),
        _chunk({"content": "b"}, usage={"prompt_tokens": 10, "completion_tokens": 2}),
        _chunk(
            {},
            "stop",
            usage={"prompt_tokens": 10, "completion_tokens": 3, "prompt_cache_hit_tokens": 8},
        ),
    )
    events, error = _run_transcript(tmp_path, body)
    assert error is None
    assert assemble(events)["step"].usage == TokenUsage(
        input_tokens=10, output_tokens=3, cache_read_tokens=8
    )


def test_refusal_is_accumulated(tmp_path: Path) -> None:
    body = _sse(
        _chunk({"role": "assistant", "content": None, "refusal": ""}),
        _chunk({"refusal": "I can't"}),
        _chunk({"refusal": " help."}),
        _chunk({}, "stop"),
    )
    events, error = _run_transcript(tmp_path, body)
    assert error is None
    assert assemble(events)["step"].refusal == "I can't help."


@pytest.mark.parametrize("newline", ["\r\n", "\r"])
def test_crlf_and_cr_line_endings(tmp_path: Path, newline: str) -> None:
    body = _sse(
        ": keep-alive",
        _chunk({"content": "line one"}),
        _chunk({"content": " and two"}),
        _chunk({}, "stop"),
        "[DONE]",
    ).replace("\n", newline)
    body = body.replace("data: : keep-alive", ": keep-alive")
    _write_transcript(tmp_path, "t.sse", body)
    with ScriptedModelServer(fixtures_dir=tmp_path) as own:
        # One write per byte: a CR and its LF land in different reads.
        own.enqueue({"fixture": "t.sse", "splitAt": list(range(1, len(body)))})
        events, error = run(collect(config(own, max_attempts=1)))
    assert error is None
    assert assemble(events)["content"] == "line one and two"


def test_malformed_event_is_an_interruption(tmp_path: Path) -> None:
    events, error = _run_transcript(tmp_path, _sse(_chunk({"content": "a"}), "{not json"))
    assert events == [TextDelta("a")]
    assert error is not None and error.name == "StreamInterrupted"


def test_a_server_that_ignores_stream_true(tmp_path: Path) -> None:
    completion = {
        "id": "chatcmpl-whole",
        "object": "chat.completion",
        "model": "whole",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "all at once"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 3},
    }
    events, error = _run_transcript(
        tmp_path, json.dumps(completion), content_type="application/json"
    )
    assert error is None
    result = assemble(events)
    assert result["content"] == "all at once"
    assert result["step"].usage == TokenUsage(input_tokens=3, output_tokens=3)


# ---------------------------------------------------------------------------
# Secrets and startup cost


def test_api_key_never_appears_in_errors_or_logs(
    srv: ScriptedModelServer, caplog: pytest.LogCaptureFixture
) -> None:
    key = "sk-live-SECRET-0123456789abcdef"
    echo = {"error": {"message": f"Incorrect API key provided: {key}", "code": "invalid_api_key"}}
    srv.enqueue({"error": {"status": 503}}, {"error": {"status": 401, "body": echo}})
    cfg = config(srv, api_key=key)
    assert key not in repr(cfg)
    with caplog.at_level(logging.DEBUG):
        _, error = run(collect(cfg))
        _, refused = run(
            collect(
                ProviderConfig(
                    base_url=f"http://127.0.0.1:{_closed_port()}/v1", api_key=key, max_attempts=1
                )
            )
        )
    assert error is not None and error.name == "ProviderAuthError"
    assert refused is not None
    for err in (error, refused):
        assert (
            key not in err.message and key not in str(err) and key not in json.dumps(err.to_wire())
        )
    assert "[redacted]" in error.message
    assert key not in caplog.text
    assert "retry 1 of" in caplog.text  # the retry was logged, without the key


def test_importing_the_provider_does_not_import_openai() -> None:
    code = (
        "import sys, agentd.provider\n"
        "assert 'openai' not in sys.modules, 'openai imported'\n"
        "assert 'httpx2' not in sys.modules, 'httpx2 imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
