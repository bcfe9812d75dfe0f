"""Values that cannot be stored or sent: lone surrogates, integers beyond 64 bits, deep
nesting. From the editor they are refused (-32602) before anything is stored; from the
model they are repaired (text) or become a tool error the model reads (arguments). In
every case the session stays usable, in this daemon and after a restart."""

from __future__ import annotations

import json

import pytest
from helpers import chat, text_of
from rpc_client import RpcError

LONE = ["\ud800", "\udfff", "a\ud83d", "\ude00b", "x" * 5000 + "\udbff"]


def nested(depth: int, leaf: object = 1) -> object:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def stored(d, sid):  # type: ignore[no-untyped-def]
    return d.call("session/messages", {"sessionId": sid})["messages"]


def assert_refused(d, method, params, field):  # type: ignore[no-untyped-def]
    with pytest.raises(RpcError) as err:
        d.call(method, params)
    assert err.value.code == -32602, err.value.message
    assert any(field in line for line in err.value.data["errors"]), err.value.data


def test_lone_surrogates_from_the_editor_are_refused_before_anything_is_stored(spawn, model):
    d = spawn(model.base_url)
    sid = d.call("session/create", {"title": "t"})["session"]["id"]
    before = d.call("session/list", {})["sessions"]
    for bad in LONE:
        assert_refused(d, "session/create", {"title": bad}, "params.title")
        assert_refused(d, "session/create", {"clientSessionId": bad}, "params.clientSessionId")
        assert_refused(d, "session/update", {"sessionId": sid, "title": bad}, "params.title")
        chat_params = {"sessionId": sid, "parts": [{"type": "text", "text": bad}]}
        assert_refused(d, "session/chat", chat_params, "params.parts[0].text")
        tool = {"name": "t", "description": "d", "parameters": {"type": "object", bad: {}}}
        assert_refused(
            d,
            "session/chat",
            {"sessionId": sid, "parts": [{"type": "text", "text": "hi"}], "clientTools": [tool]},
            "params.clientTools[0].parameters",
        )
    # Nothing was created, renamed or stored, and the session still chats.
    assert d.call("session/list", {})["sessions"] == before
    assert stored(d, sid) == []
    model.enqueue({"text": "fine"})
    assert text_of(chat(d, sid, "hello")["message"]) == "fine"


@pytest.mark.parametrize("value", [nested(300), {"k": nested(125)}], ids=["300", "k-125"])
def test_nesting_that_cannot_be_stored_is_refused(spawn, model, value):
    d = spawn(model.base_url)
    sid = d.call("session/create", {"title": "t"})["session"]["id"]
    tool = {"name": "t", "description": "d", "parameters": {"type": "object", "x": value}}
    with pytest.raises(RpcError) as err:
        d.call(
            "session/chat",
            {"sessionId": sid, "parts": [{"type": "text", "text": "hi"}], "clientTools": [tool]},
        )
    assert err.value.code == -32602
    assert any("nested deeper than" in line for line in err.value.data["errors"]), err.value.data
    assert stored(d, sid) == []


@pytest.mark.parametrize("value", [10**22, -(10**20), 2**64])
def test_integers_beyond_64_bits_from_the_editor_are_read_as_numbers(spawn, model, value):
    """The frame parser reads them as floats (orjson): nothing fails, nothing is lost
    but digits no JSON reader keeps anyway."""
    d = spawn(model.base_url)
    sid = d.call("session/create", {"title": "t"})["session"]["id"]
    tool = {"name": "t", "description": "d", "parameters": {"type": "object", "x": value}}
    model.enqueue({"text": "ok"})
    res = d.call(
        "session/chat",
        {"sessionId": sid, "parts": [{"type": "text", "text": "hi"}], "clientTools": [tool]},
    )
    assert text_of(res["message"]) == "ok"
    [sent] = [
        tool["function"]["parameters"]["x"]
        for tool in model.requests()[-1]["body"]["tools"]
        if tool["function"]["name"] == "t"
    ]
    assert sent == float(value)


def test_nesting_at_the_limit_is_accepted(spawn, model):
    d = spawn(model.base_url)
    sid = d.call("session/create", {"title": "t"})["session"]["id"]
    # 128 levels in all, counted from params: params, clientTools, the tool, parameters,
    # then 124 lists.
    tool = {"name": "t", "description": "d", "parameters": {"x": nested(124)}}
    model.enqueue({"text": "ok"})
    res = d.call(
        "session/chat",
        {"sessionId": sid, "parts": [{"type": "text", "text": "hi"}], "clientTools": [tool]},
    )
    assert text_of(res["message"]) == "ok"


def chunk(delta: dict, finish: str | None = None) -> str:
    return json.dumps(
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "scripted",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
    )


def test_lone_surrogates_from_the_model_are_replaced_and_stored(spawn, model, tmp_path):
    d = spawn(model.base_url)
    sid = d.call("session/create", {"title": "t"})["session"]["id"]
    # json.dumps writes each lone surrogate as a \\uXXXX escape, as a server splitting an
    # emoji's UTF-16 pair across tokens would.
    model.enqueue(
        {
            "events": [
                chunk({"role": "assistant", "content": "a\ud83d"}),
                chunk({"content": "\ude00b \udfff", "reasoning_content": "r\ud800"}),
                chunk({}, "stop"),
            ]
        }
    )
    message = chat(d, sid, "emoji please")["message"]
    assert message["finishReason"] == "stop"
    assert text_of(message) == "a\ufffd\ufffdb \ufffd"
    reasoning = [p["text"] for p in message["parts"] if p["type"] == "reasoning"]
    assert reasoning == ["r\ufffd"]
    d.stop()
    # Stored as it was shown, and the session goes on after a restart.
    d2 = spawn(model.base_url)
    [_, assistant] = stored(d2, sid)
    assert text_of(assistant) == "a\ufffd\ufffdb \ufffd"
    model.enqueue({"text": "again"})
    assert text_of(chat(d2, sid, "more")["message"]) == "again"


BAD_ARGUMENTS = [
    '{"path": 10000000000000000000000}',
    '{"path": -100000000000000000000}',
    '{"path": ' + "[" * 300 + "]" * 300 + "}",
    '{"path": ' + "[" * 100_000 + "]" * 100_000 + "}",
    '{"path": "\\ud800"}',
    '{"\\udc00": 1}',
]


def test_model_arguments_that_cannot_be_stored_become_a_tool_error(spawn, model):
    d = spawn(model.base_url)
    sessions = []
    for arguments in BAD_ARGUMENTS:
        sid = d.call("session/create", {"title": "t"})["session"]["id"]
        sessions.append(sid)
        model.enqueue(
            {"toolCalls": [{"name": "read_file", "arguments": arguments}]},
            {"text": "I see the error"},
        )
        message = chat(d, sid, "read it")["message"]
        [part] = [p for p in message["parts"] if p["type"] == "tool"]
        assert part["state"]["status"] == "error", arguments[:40]
        error = part["state"]["error"]
        assert error.startswith(("the arguments cannot be used", "the arguments are")), error
        assert message["finishReason"] == "stop" and text_of(message) == "I see the error"
        # The model read the error as the tool's result.
        sent = model.requests()[-1]["body"]["messages"]
        tool_result = [m["content"] for m in sent if m["role"] == "tool"]
        assert tool_result == [f"Error: {error}"]
    d.stop()
    d2 = spawn(model.base_url)
    for sid in sessions:
        assert [m["role"] for m in stored(d2, sid)] == ["user", "assistant"]
        model.enqueue({"text": "still fine"})
        assert text_of(chat(d2, sid, "again")["message"]) == "still fine"


def test_an_editor_tool_answer_that_cannot_be_stored_is_repaired(spawn, model):
    d = spawn(model.base_url)
    sid = d.call("session/create", {"title": "t"})["session"]["id"]
    d.handlers["tool/execute"] = lambda params: {
        "output": "half an emoji: \ud83d",
        "title": "t\udfff",
        "metadata": {"n": 10**22, "deep": nested(300)},
    }
    model.enqueue(
        {"toolCalls": [{"name": "editor_thing", "arguments": {}}]},
        {"text": "done"},
    )
    res = d.call(
        "session/chat",
        {
            "sessionId": sid,
            "parts": [{"type": "text", "text": "go"}],
            "clientTools": [{"name": "editor_thing", "description": "d", "parameters": {}}],
        },
        timeout=30,
    )
    [part] = [p for p in res["message"]["parts"] if p["type"] == "tool"]
    assert part["state"]["status"] == "completed"
    assert part["state"]["output"] == "half an emoji: \ufffd"
    assert part["state"]["title"] == "t\ufffd"
    assert "metadata" not in part["state"] or "n" not in part["state"]["metadata"]
    [_, assistant] = stored(d, sid)
    assert assistant["parts"] == res["message"]["parts"]
