"""The scripted model server, driven by the real openai SDK and by raw sockets."""

# The SDK types every response field Optional; these tests know which ones the server fills.
# mypy: disable-error-code="union-attr,index"

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from agentd.scripted_model import ScriptedModelServer, main

pytestmark = pytest.mark.timeout(30)

FIXTURES = Path(__file__).parent / "fixtures" / "openai-compat"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def client(srv: ScriptedModelServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=srv.base_url, api_key="sk-test", max_retries=0) as sdk:
        yield sdk


def user(text: Any) -> Any:  # Any: the SDK wants its own TypedDicts
    return [{"role": "user", "content": text}]


# ---------------------------------------------------------------------------
# A minimal HTTP/1.1 client that shares nothing with the server.


class RawHttp:
    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def send(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        lines = [f"{method} {path} HTTP/1.1", "host: 127.0.0.1", f"content-length: {len(data)}"]
        if body is not None:
            lines.append("content-type: application/json")
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + data)

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed")
        self.buf += data

    def _take_line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_head(self) -> tuple[int, dict[str, str]]:
        status_line = self._take_line().decode()
        headers = {}
        while line := self._take_line():
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(status_line.split()[1]), headers

    def read_chunk(self) -> bytes | None:
        """One HTTP chunk's payload; None for the terminating chunk."""
        size = int(self._take_line().split(b";")[0], 16)
        while len(self.buf) < size + 2:
            self._fill()
        payload, self.buf = self.buf[:size], self.buf[size + 2 :]
        if size == 0:
            return None
        return payload

    def read_data_chunk(self) -> bytes:
        chunk = self.read_chunk()
        assert chunk is not None, "unexpected end of the chunked body"
        return chunk

    def read_response(self) -> tuple[int, dict[str, str], bytes, list[bytes]]:
        status, headers = self.read_head()
        chunks: list[bytes] = []
        if headers.get("transfer-encoding") == "chunked":
            while (chunk := self.read_chunk()) is not None:
                chunks.append(chunk)
            body = b"".join(chunks)
        else:
            length = int(headers["content-length"])
            while len(self.buf) < length:
                self._fill()
            body, self.buf = self.buf[:length], self.buf[length:]
        return status, headers, body, chunks


def sse_payloads(body: bytes) -> list[Any]:
    """The `data:` payloads of an SSE body, JSON-decoded except [DONE]."""
    out: list[Any] = []
    for event in body.decode().split("\n\n"):
        for line in event.splitlines():
            if line.startswith("data: "):
                data = line[6:]
                out.append(data if data == "[DONE]" else json.loads(data))
    return out


def raw_chat(srv: ScriptedModelServer, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    conn = RawHttp(srv.port)
    try:
        conn.send("POST", "/v1/chat/completions", body)
        status, headers, data, _ = conn.read_response()
        return status, headers, data
    finally:
        conn.close()


def stream_body(messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"model": "scripted", "messages": messages, "stream": True, **extra}


def contents(chunks: list[Any]) -> list[str]:
    return [
        c["choices"][0]["delta"]["content"]
        for c in chunks
        if isinstance(c, dict) and c["choices"] and "content" in c["choices"][0]["delta"]
    ]


def sdk_text(client: openai.OpenAI, messages: Any) -> str:
    stream = client.chat.completions.create(model="scripted", messages=messages, stream=True)
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


# ---------------------------------------------------------------------------
# Streaming shape


def test_text_streams_in_openai_chunk_shape(srv: ScriptedModelServer) -> None:
    srv.enqueue({"text": "Hello brave new world"})
    status, headers, body = raw_chat(srv, stream_body(user("hi"), model="my-model"))
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["transfer-encoding"] == "chunked"
    payloads = sse_payloads(body)
    assert payloads[-1] == "[DONE]"
    chunks = payloads[:-1]
    for chunk in chunks:
        assert chunk["id"] == chunks[0]["id"] and chunk["id"].startswith("chatcmpl-")
        assert chunk["object"] == "chat.completion.chunk"
        assert isinstance(chunk["created"], int)
        assert chunk["model"] == "my-model"
        assert len(chunk["choices"]) == 1 and chunk["choices"][0]["index"] == 0
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    # Default chunking: one word plus its following space per chunk.
    assert contents(chunks) == ["Hello ", "brave ", "new ", "world"]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * 4 + ["stop"]
    assert chunks[-1]["choices"][0]["delta"] == {}
    assert all("usage" not in c for c in chunks)  # include_usage was not asked for


def test_text_through_the_sdk(client: openai.OpenAI, srv: ScriptedModelServer) -> None:
    srv.enqueue({"text": "Hello from the script"})
    assert sdk_text(client, user("hi")) == "Hello from the script"


def test_chunk_size_splits_by_characters(srv: ScriptedModelServer) -> None:
    srv.enqueue({"text": "abcdefg", "chunkSize": 3})
    _, _, body = raw_chat(srv, stream_body(user("hi")))
    assert contents(sse_payloads(body)) == ["abc", "def", "g"]


def test_usage_chunk_when_include_usage(srv: ScriptedModelServer) -> None:
    srv.enqueue({"text": "one two three"})
    _, _, body = raw_chat(srv, stream_body(user("x" * 400), stream_options={"include_usage": True}))
    payloads = sse_payloads(body)
    usage_chunk = payloads[-2]
    assert usage_chunk["choices"] == []
    assert usage_chunk["object"] == "chat.completion.chunk"
    # Defaults: prompt ~ request chars / 4, completion = number of chunks.
    assert usage_chunk["usage"] == {
        "prompt_tokens": 100,
        "completion_tokens": 3,
        "total_tokens": 103,
    }


def test_usage_spec_with_cached_and_reasoning_tokens(
    client: openai.OpenAI, srv: ScriptedModelServer
) -> None:
    srv.enqueue(
        {
            "text": "ok",
            "usage": {
                "prompt_tokens": 50,
                "completion_tokens": 7,
                "cached_tokens": 40,
                "reasoning_tokens": 5,
            },
        }
    )
    stream = client.chat.completions.create(
        model="scripted",
        messages=user("hi"),
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = [c.usage for c in stream if c.usage is not None]
    assert len(usage) == 1
    assert usage[0].prompt_tokens == 50 and usage[0].completion_tokens == 7
    assert usage[0].total_tokens == 57
    assert usage[0].prompt_tokens_details.cached_tokens == 40
    assert usage[0].completion_tokens_details.reasoning_tokens == 5


def test_reasoning_precedes_text(srv: ScriptedModelServer) -> None:
    srv.enqueue({"reasoning": "let me think", "text": "answer"})
    _, _, body = raw_chat(srv, stream_body(user("hi")))
    deltas = [c["choices"][0]["delta"] for c in sse_payloads(body)[:-1]]
    assert [d.get("reasoning_content") for d in deltas[:3]] == ["let ", "me ", "think"]
    assert deltas[3]["content"] == "answer"
    assert all("reasoning_content" not in d for d in deltas[3:])


def test_reasoning_field_name_can_be_switched(srv: ScriptedModelServer) -> None:
    srv.enqueue({"reasoning": "hmm", "text": "ok", "reasoningField": "reasoning"})
    _, _, body = raw_chat(srv, stream_body(user("hi")))
    deltas = [c["choices"][0]["delta"] for c in sse_payloads(body)[:-1]]
    assert deltas[0]["reasoning"] == "hmm"
    assert all("reasoning_content" not in d for d in deltas)


def test_tool_calls_are_split_across_chunks(srv: ScriptedModelServer) -> None:
    srv.enqueue(
        {
            "toolCalls": [
                {"name": "read_file", "arguments": {"path": "src/main.py", "limit": 20}},
                {"name": "ls", "arguments": '{"dir": "."}', "id": "call_fixed"},
            ]
        }
    )
    _, _, body = raw_chat(srv, stream_body(user("hi")))
    chunks = sse_payloads(body)[:-1]
    entries = [
        (c["choices"][0]["delta"]["tool_calls"][0])
        for c in chunks
        if c["choices"][0]["delta"].get("tool_calls")
    ]
    first = entries[0]
    assert first["index"] == 0 and first["type"] == "function"
    assert first["id"].startswith("call_")
    assert first["function"] == {"name": "read_file", "arguments": ""}
    args0 = [e["function"]["arguments"] for e in entries[1:4]]
    assert all(
        e["index"] == 0 and "id" not in e and "name" not in e["function"] for e in entries[1:4]
    )
    assert len(args0) == 3 and json.loads("".join(args0)) == {"path": "src/main.py", "limit": 20}
    second = entries[4]
    assert second["index"] == 1 and second["id"] == "call_fixed"
    assert "".join(e["function"]["arguments"] for e in entries[5:]) == '{"dir": "."}'
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_tool_calls_assembled_by_the_sdk(client: openai.OpenAI, srv: ScriptedModelServer) -> None:
    srv.enqueue({"toolCalls": [{"name": "grep", "arguments": {"pattern": "TODO"}}]})
    stream = client.chat.completions.create(model="scripted", messages=user("hi"), stream=True)
    args = ""
    names = []
    finish = None
    for chunk in stream:
        choice = chunk.choices[0]
        for call in choice.delta.tool_calls or []:
            if call.function.name:
                names.append(call.function.name)
            args += call.function.arguments or ""
        finish = choice.finish_reason or finish
    assert names == ["grep"]
    assert json.loads(args) == {"pattern": "TODO"}
    assert finish == "tool_calls"


def test_finish_reason_override(srv: ScriptedModelServer) -> None:
    srv.enqueue({"text": "cut", "finishReason": "length"})
    _, _, body = raw_chat(srv, stream_body(user("hi")))
    assert sse_payloads(body)[-2]["choices"][0]["finish_reason"] == "length"


def test_non_stream_request_gets_a_chat_completion(
    client: openai.OpenAI, srv: ScriptedModelServer
) -> None:
    srv.enqueue(
        {
            "text": "whole answer",
            "reasoning": "why",
            "toolCalls": [{"name": "ls", "arguments": {}}],
        }
    )
    completion = client.chat.completions.create(model="scripted", messages=user("hi"))
    assert completion.object == "chat.completion"
    message = completion.choices[0].message
    assert message.content == "whole answer"
    assert message.tool_calls[0].function.name == "ls"
    assert message.tool_calls[0].function.arguments == "{}"
    assert message.model_extra["reasoning_content"] == "why"
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.usage.completion_tokens > 0


def test_models_lists_scripted(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == ["scripted"]


# ---------------------------------------------------------------------------
# Failures on purpose


def test_error_spec_with_status_body_and_headers(
    client: openai.OpenAI, srv: ScriptedModelServer
) -> None:
    body = {"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}}
    srv.enqueue(
        {"error": {"status": 429, "body": body, "headers": {"retry-after": "7", "x-extra": "yes"}}}
    )
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="scripted", messages=user("hi"), stream=True)
    assert info.value.status_code == 429
    assert info.value.response.headers["retry-after"] == "7"
    assert info.value.response.headers["x-extra"] == "yes"
    assert info.value.body == body["error"]
    assert len(srv.requests()) == 1


def test_error_spec_default_body(client: openai.OpenAI, srv: ScriptedModelServer) -> None:
    srv.enqueue({"error": {"status": 503}})
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="scripted", messages=user("hi"))
    assert info.value.status_code == 503
    assert info.value.type == "server_error"


def test_stall_sends_chunks_then_hangs_without_closing(srv: ScriptedModelServer) -> None:
    srv.enqueue({"text": "a b c d e", "stallAfterChunks": 2})
    conn = RawHttp(srv.port)
    conn.send("POST", "/v1/chat/completions", stream_body(user("hi")))
    status, _ = conn.read_head()
    assert status == 200
    first, second = conn.read_data_chunk(), conn.read_data_chunk()
    assert contents(sse_payloads(first + second)) == ["a ", "b "]
    # The server holds the connection open and silent: proving a hang needs a wait.
    conn.sock.settimeout(0.5)
    with pytest.raises(TimeoutError):
        conn.read_chunk()
    assert srv.wait_response_end(0, timeout=0) is None  # still stalling
    conn.close()
    assert srv.wait_response_end(0) == "client_closed"


def test_drop_aborts_without_the_terminating_chunk(srv: ScriptedModelServer) -> None:
    srv.enqueue({"text": "a b c d e", "dropAfterChunks": 2})
    conn = RawHttp(srv.port)
    conn.send("POST", "/v1/chat/completions", stream_body(user("hi")))
    conn.read_head()
    received = conn.read_data_chunk() + conn.read_data_chunk()
    assert contents(sse_payloads(received)) == ["a ", "b "]
    with pytest.raises((EOFError, ConnectionResetError)):
        conn.read_chunk()
    conn.close()
    assert srv.wait_response_end(0) == "dropped"


def test_drop_is_a_connection_error_for_the_sdk(
    client: openai.OpenAI, srv: ScriptedModelServer
) -> None:
    srv.enqueue({"text": "a b c d e", "dropAfterChunks": 3})
    stream = client.chat.completions.create(model="scripted", messages=user("hi"), stream=True)
    seen = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in stream:
            seen.append(chunk.choices[0].delta.content)
    assert seen == ["a ", "b ", "c "]


def test_chunks_are_flushed_as_they_are_sent(srv: ScriptedModelServer) -> None:
    # The first chunk must reach the client while the server is still mid-response.
    srv.enqueue({"text": "first second", "stallAfterChunks": 1})
    conn = RawHttp(srv.port)
    conn.send("POST", "/v1/chat/completions", stream_body(user("hi")))
    conn.read_head()
    assert contents(sse_payloads(conn.read_data_chunk())) == ["first "]
    assert srv.wait_response_end(0, timeout=0) is None
    conn.close()


def test_bad_spec_is_answered_500(srv: ScriptedModelServer) -> None:
    srv.enqueue({"fixture": "no-such-file.sse"})
    status, _, body = raw_chat(srv, stream_body(user("hi")))
    assert status == 500
    assert "no-such-file.sse" in json.loads(body)["error"]["message"]


def test_unknown_route_and_bad_json(srv: ScriptedModelServer) -> None:
    conn = RawHttp(srv.port)
    conn.send("GET", "/nope")
    assert conn.read_response()[0] == 404
    conn.sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\n{oops"
    )
    status, _, body, _ = conn.read_response()
    assert status == 400 and "JSON" in json.loads(body)["error"]["message"]
    conn.close()


# ---------------------------------------------------------------------------
# Default behaviour (empty queue)


def test_default_echo_explains_the_offline_model(client: openai.OpenAI) -> None:
    text = sdk_text(client, user("hello there"))
    assert text.startswith("You said: hello there")
    assert "scripted model" in text
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "AGENTD_MODEL"):
        assert name in text


def test_default_echo_accepts_content_parts(client: openai.OpenAI) -> None:
    parts = [{"type": "text", "text": "part one"}, {"type": "image_url", "image_url": {"url": "x"}}]
    assert sdk_text(client, user(parts)).startswith("You said: part one")


def test_default_title(client: openai.OpenAI) -> None:
    messages = [
        {"role": "system", "content": "Write a short title for this conversation."},
        {"role": "user", "content": "How do I parse JSON in Rust, quickly?"},
    ]
    assert sdk_text(client, messages) == "How do I parse JSON"
    messages[1]["content"] = "Fix the bug!"
    assert sdk_text(client, messages) == "Fix the bug"


def test_default_tool_result(client: openai.OpenAI) -> None:
    messages = [
        {"role": "user", "content": "/tool read_file {}"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "read_file", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "x" * 300},
    ]
    assert sdk_text(client, messages) == "Tool read_file returned: " + "x" * 200


def test_default_tool_command(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="scripted", messages=user('/tool read_file {"path": "a.txt"}')
    )
    calls = completion.choices[0].message.tool_calls
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("read_file", {"path": "a.txt"})
    ]
    assert completion.choices[0].finish_reason == "tool_calls"


def test_default_parallel_tool_commands(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="scripted", messages=user('/tool ls\n/tool grep {"pattern": "x"}')
    )
    calls = completion.choices[0].message.tool_calls
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("ls", {}),
        ("grep", {"pattern": "x"}),
    ]
    assert len({c.id for c in calls}) == 2


def test_default_stream_command(srv: ScriptedModelServer) -> None:
    _, _, body = raw_chat(srv, stream_body(user("/stream 5 1")))
    assert contents(sse_payloads(body)) == ["w1 ", "w2 ", "w3 ", "w4 ", "w5"]


def test_default_reason_command(srv: ScriptedModelServer) -> None:
    _, _, body = raw_chat(srv, stream_body(user("/reason the sky")))
    deltas = [c["choices"][0]["delta"] for c in sse_payloads(body)[:-1]]
    reasoning = "".join(d.get("reasoning_content", "") for d in deltas)
    assert reasoning == "Thinking about: the sky"
    assert "".join(d.get("content", "") for d in deltas) == "the sky"


@pytest.mark.parametrize("status", [400, 401, 404, 429, 500, 503])
def test_default_error_command(srv: ScriptedModelServer, status: int) -> None:
    code, headers, body = raw_chat(srv, stream_body(user(f"/error {status}")))
    assert code == status
    error = json.loads(body)["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert {"type", "param", "code"} <= error.keys()
    assert (headers.get("retry-after") == "0") == (status == 429)


# ---------------------------------------------------------------------------
# Queue and control API


def _post(url: str, body: Any) -> Any:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_control_api_over_http(client: openai.OpenAI, srv: ScriptedModelServer) -> None:
    assert _post(
        srv.url + "/_scripted/enqueue", {"responses": [{"text": "one"}, {"text": "two"}]}
    ) == {"queued": 2}
    assert sdk_text(client, user("a")) == "one"
    assert sdk_text(client, user("b")) == "two"
    assert sdk_text(client, user("c")).startswith("You said: c")
    log = _get(srv.url + "/_scripted/requests")["requests"]
    assert [r["body"]["messages"][0]["content"] for r in log] == ["a", "b", "c"]
    assert all(r["path"] == "/v1/chat/completions" for r in log)
    assert all("authorization" not in r["headers"] for r in log)
    assert all(r["headers"]["content-type"] == "application/json" for r in log)
    _post(srv.url + "/_scripted/enqueue", {"responses": [{"text": "stale"}]})
    assert _post(srv.url + "/_scripted/reset", {}) == {"ok": True}
    assert _get(srv.url + "/_scripted/requests") == {"requests": []}
    assert sdk_text(client, user("d")).startswith("You said: d")


def test_python_control_api(client: openai.OpenAI, srv: ScriptedModelServer) -> None:
    srv.enqueue({"text": "queued"})
    client.chat.completions.create(
        model="scripted", messages=user("q"), extra_headers={"x-trace": "t1"}
    )
    [entry] = srv.requests()
    assert entry["body"]["model"] == "scripted"
    assert entry["headers"]["x-trace"] == "t1"
    assert "authorization" not in entry["headers"]


def test_enqueue_rejects_a_malformed_payload(srv: ScriptedModelServer) -> None:
    request = urllib.request.Request(
        srv.url + "/_scripted/enqueue", data=b'{"responses": 3}', method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 400


def test_repeat_uses_a_spec_several_times(client: openai.OpenAI, srv: ScriptedModelServer) -> None:
    srv.enqueue({"text": "again", "repeat": 3}, {"text": "then"})
    assert [sdk_text(client, user("x")) for _ in range(4)] == ["again", "again", "again", "then"]


def test_script_preloads_the_queue() -> None:
    with ScriptedModelServer(script=[{"text": "preloaded"}]) as srv:
        with openai.OpenAI(base_url=srv.base_url, api_key="k", max_retries=0) as sdk:
            assert sdk_text(sdk, user("x")) == "preloaded"


# ---------------------------------------------------------------------------
# HTTP behaviour


def test_keep_alive_serves_several_requests_on_one_connection(srv: ScriptedModelServer) -> None:
    srv.enqueue({"text": "first"}, {"text": "second"})
    conn = RawHttp(srv.port)
    texts = []
    for _ in range(2):
        conn.send("POST", "/v1/chat/completions", stream_body(user("x")))
        status, headers, body, _ = conn.read_response()
        assert status == 200 and "connection" not in headers
        texts.append("".join(contents(sse_payloads(body))))
    conn.send("GET", "/v1/models")
    assert json.loads(conn.read_response()[2])["data"][0]["id"] == "scripted"
    conn.close()
    assert texts == ["first", "second"]


def test_connection_close_is_honoured(srv: ScriptedModelServer) -> None:
    conn = RawHttp(srv.port)
    conn.send("GET", "/v1/models", headers={"connection": "close"})
    _, headers, _, _ = conn.read_response()
    assert headers["connection"] == "close"
    with pytest.raises(EOFError):
        conn._fill()
    conn.close()


def test_many_concurrent_streams(srv: ScriptedModelServer) -> None:
    count = 64

    async def one(sdk: openai.AsyncOpenAI, i: int) -> str:
        stream = await sdk.chat.completions.create(
            model="scripted", messages=user(f"/stream 20 2 #{i}"), stream=True
        )
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    async def run() -> list[str]:
        async with openai.AsyncOpenAI(base_url=srv.base_url, api_key="k", max_retries=0) as sdk:
            return await asyncio.gather(*(one(sdk, i) for i in range(count)))

    expected = " ".join(f"w{i}" for i in range(1, 21))
    assert asyncio.run(run()) == [expected] * count
    assert len(srv.requests()) == count


def test_long_answer_without_delay_does_not_hang(
    client: openai.OpenAI, srv: ScriptedModelServer
) -> None:
    words = [f"w{i}" for i in range(1, 2001)]
    srv.enqueue({"text": " ".join(words)})
    stream = client.chat.completions.create(model="scripted", messages=user("x"), stream=True)
    pieces = [
        c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) == 2000
    assert "".join(pieces).split() == words


# ---------------------------------------------------------------------------
# Fixture replay


def _fixture(name: str) -> tuple[dict[str, Any], bytes]:
    head, _, body = (FIXTURES / name).read_bytes().partition(b"\n")
    return json.loads(head), body


def test_sse_fixture_is_replayed_verbatim(srv: ScriptedModelServer) -> None:
    meta, expected = _fixture("deepseek-reasoner-usage.sse")
    srv.enqueue({"fixture": "deepseek-reasoner-usage.sse"})
    status, headers, body = raw_chat(srv, stream_body(user("x")))
    assert status == meta["status"] == 200
    assert body == expected
    assert headers["transfer-encoding"] == "chunked"
    assert "content-length" not in headers
    for name, value in meta["headers"].items():
        if name not in ("content-length", "transfer-encoding", "connection"):
            assert headers[name] == value


def test_fixture_split_at_offsets(srv: ScriptedModelServer) -> None:
    _, expected = _fixture("openai-text.sse")
    offsets = [1, 7, 100, 101, len(expected) - 3]
    srv.enqueue({"fixture": "openai-text.sse", "splitAt": offsets})
    conn = RawHttp(srv.port)
    conn.send("POST", "/v1/chat/completions", stream_body(user("x")))
    _, _, body, chunks = conn.read_response()
    conn.close()
    assert body == expected
    bounds = [0, *offsets, len(expected)]
    assert [len(c) for c in chunks] == [b - a for a, b in itertools.pairwise(bounds)]


def test_http_fixture_is_replayed_with_its_status(
    client: openai.OpenAI, srv: ScriptedModelServer
) -> None:
    meta, expected = _fixture("azure-error-429.http")
    srv.enqueue({"fixture": "azure-error-429.http"})
    status, headers, body = raw_chat(srv, stream_body(user("x")))
    assert status == 429
    assert body == expected
    assert headers["content-length"] == str(len(expected))
    assert headers["retry-after-ms"] == meta["headers"]["retry-after-ms"]


def test_fixtures_cannot_escape_their_directory(srv: ScriptedModelServer) -> None:
    srv.enqueue({"fixture": "../../agentd/errors.py"})
    status, _, body = raw_chat(srv, stream_body(user("x")))
    assert status == 500
    assert "outside" in json.loads(body)["error"]["message"]


# ---------------------------------------------------------------------------
# Ways to run it


def test_async_start_stop_on_the_callers_loop() -> None:
    async def run() -> str:
        async with ScriptedModelServer() as srv:
            srv.enqueue({"text": "async ok"})
            async with openai.AsyncOpenAI(base_url=srv.base_url, api_key="k", max_retries=0) as sdk:
                stream = await sdk.chat.completions.create(
                    model="scripted", messages=user("x"), stream=True
                )
                return "".join(
                    [c.choices[0].delta.content or "" async for c in stream if c.choices]
                )

    assert asyncio.run(run()) == "async ok"


def test_stop_ends_a_stalled_response() -> None:
    srv = ScriptedModelServer()
    with srv:
        srv.enqueue({"text": "a b", "stallAfterChunks": 1})
        conn = RawHttp(srv.port)
        conn.send("POST", "/v1/chat/completions", stream_body(user("x")))
        conn.read_head()
        conn.read_chunk()
    assert srv.wait_response_end(0, timeout=0) == "server_stopped"
    conn.close()


def test_cli_prints_its_address_and_serves_until_sigterm(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps([{"text": "from the script"}]))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agentd.scripted_model",
            "--script",
            str(script),
            "--fixtures",
            str(FIXTURES),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert info["baseUrl"] == f"http://127.0.0.1:{info['port']}/v1"
        with openai.OpenAI(base_url=info["baseUrl"], api_key="k", max_retries=0) as sdk:
            assert sdk_text(sdk, user("x")) == "from the script"
            assert sdk_text(sdk, user("y")).startswith("You said: y")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert proc.stdout.read() == b""  # exactly one line on stdout
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_rejects_a_bad_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = tmp_path / "bad.json"
    script.write_text('{"not": "a list"}')
    assert main(["--script", str(script)]) == 2
    assert "script" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "argv",
    [
        ["-m", "agentd", "scripted-model", "--port", "0"],
        ["-m", "agentd", "scripted-model", "--port=0"],
        ["-m", "agentd", "scripted-model"],
        ["-m", "agentd", "scripted-model", "--host", "127.0.0.1", "--port", "FREE"],
        ["-m", "agentd", "-v", "scripted-model", "--fixtures", str(FIXTURES), "--port=0"],
        ["-m", "agentd", "scripted-model", "--script", "SCRIPT", "--port", "0"],
        ["-m", "agentd.scripted_model", "--port", "0"],
    ],
    ids=["port-0", "port=0", "no-options", "free-port", "fixtures", "script", "module"],
)
def test_the_documented_command_lines_serve(tmp_path: Path, argv: list[str]) -> None:
    """`agentd scripted-model --port 0` as the README documents it (and its variants):
    the address line, then real answers."""
    script = tmp_path / "script.json"
    script.write_text(json.dumps([{"text": "from the script"}]))
    port = _free_port()
    argv = [str(port) if a == "FREE" else str(script) if a == "SCRIPT" else a for a in argv]
    proc = subprocess.Popen(
        [sys.executable, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, proc.communicate(timeout=10)[1].decode()
        info = json.loads(line)
        if "FREE" in argv or str(port) in argv:
            assert info["port"] == port
        with openai.OpenAI(base_url=info["baseUrl"], api_key="k", max_retries=0) as sdk:
            first = sdk_text(sdk, user("hello"))
            if "--script" in argv:
                assert first == "from the script"
            else:
                assert first.startswith("You said: hello")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--port", "-1"], "port must be between 0 and 65535, got -1"),
        (["--port", "70000"], "port must be between 0 and 65535, got 70000"),
        (["--port", "abc"], "invalid int value: 'abc'"),
        (["--port"], "expected one argument"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--script", "/nonexistent/script.json"], "No such file"),
    ],
)
def test_bad_command_lines_are_clear_errors(args: list[str], words: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agentd", "scripted-model", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 2 and words in out.stderr, out.stderr
    assert out.stdout == "" and "Traceback" not in out.stderr


def test_help_lists_the_same_options_as_the_module() -> None:
    def options(*argv: str) -> list[str]:
        out = subprocess.run(
            [sys.executable, *argv, "--help"], capture_output=True, text=True, timeout=30
        )
        assert out.returncode == 0, out.stderr
        return sorted(set(re.findall(r"(--[a-z-]+)", out.stdout)))

    documented = options("-m", "agentd", "scripted-model")
    assert documented == ["--fixtures", "--help", "--host", "--port", "--script"]
    assert options("-m", "agentd.scripted_model") == documented


def test_wait_response_end_times_out_for_unknown_requests(srv: ScriptedModelServer) -> None:
    start = time.monotonic()
    assert srv.wait_response_end(5, timeout=0.05) is None
    assert time.monotonic() - start < 5


def test_offline_tool_picking_calls_a_matching_non_builtin_tool():
    from agentd.scripted_model import default_spec

    def tools(*specs):  # type: ignore[no-untyped-def]
        return [{"type": "function", "function": {"name": n, "parameters": p}} for n, p in specs]

    offered = tools(
        ("read_file", {"required": ["path"], "properties": {"path": {"type": "string"}}}),
        (
            "time_get_current_time",
            {"required": ["timezone"], "properties": {"timezone": {"type": "string"}}},
        ),
        ("time_convert_time", {"required": ["source_timezone", "time", "target_timezone"]}),
        (
            "calc_add",
            {
                "required": ["a", "b"],
                "properties": {"a": {"type": "integer"}, "b": {"type": "object"}},
            },
        ),
    )

    def ask(text):  # type: ignore[no-untyped-def]
        return default_spec({"messages": [{"role": "user", "content": text}], "tools": offered})

    assert ask("What time is it in New York?") == {
        "toolCalls": [
            {"name": "time_get_current_time", "arguments": {"timezone": "America/New_York"}}
        ]
    }
    assert ask("time please")["toolCalls"][0]["arguments"] == {"timezone": "UTC"}
    # Built-in tools are never picked, and a tool whose arguments cannot be filled is not.
    assert ask("read the file").get("toolCalls") is None
    assert ask("add 2 and 3").get("toolCalls") is None
    assert ask("hello")["text"].startswith("You said: hello")
