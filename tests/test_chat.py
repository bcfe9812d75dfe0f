"""session/chat end to end: the real daemon, real pipes, the scripted model on loopback."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest
from helpers import chat, new_session, replay, run_notes, text_of
from rpc_client import RpcError, daemon_env, frame


def test_streamed_text_usage_and_notification_order(spawn, model):
    d = spawn(model.base_url)
    sid = new_session(d)
    model.enqueue(
        {
            "text": "Hello there, how can I help?",
            "chunkSize": 3,
            "usage": {"prompt_tokens": 120, "completion_tokens": 9, "cached_tokens": 100},
        }
    )
    res = chat(d, sid, "hi")
    msg = res["message"]
    assert text_of(msg) == "Hello there, how can I help?"
    assert msg["finishReason"] == "stop" and msg["role"] == "assistant"
    assert msg["usage"] == {
        "inputTokens": 120,
        "outputTokens": 9,
        "reasoningTokens": 0,
        "cacheReadTokens": 100,
        "cacheWriteTokens": 0,
    }
    types = [p["type"] for p in msg["parts"]]
    assert types == ["step-start", "text", "step-finish"]
    assert msg["parts"][-1]["usage"] == msg["usage"]
    notes = run_notes(d, res["runId"])
    methods = [n["method"] for n in notes]
    # Order within a run (contract): busy, user message and its parts, assistant
    # message, parts and deltas, completed message, idle.
    assert methods[0] == "session/status" and notes[0]["params"]["status"] == "busy"
    first_msg = methods.index("message/updated")
    assert notes[first_msg]["params"]["message"]["role"] == "user"
    assert "parts" not in notes[first_msg]["params"]["message"]
    assert methods[first_msg + 1] == "part/updated"
    assistant_at = next(
        i
        for i, n in enumerate(notes)
        if n["method"] == "message/updated" and n["params"]["message"]["role"] == "assistant"
    )
    assert assistant_at > first_msg + 1
    last_msg = max(i for i, m in enumerate(methods) if m == "message/updated")
    assert notes[last_msg]["params"]["message"]["time"]["completed"]
    status = [n["params"]["status"] for n in notes if n["method"] == "session/status"]
    assert status == ["busy", "idle"]
    assert methods.index("session/status", 1) > last_msg
    assert "part/delta" in methods
    # Replaying the notifications reproduces the final message exactly.
    assert replay(notes, msg["id"]) == msg["parts"]
    # Deltas come after their part's first part/updated and before its last.
    text_id = msg["parts"][1]["id"]
    idx = [
        i
        for i, n in enumerate(notes)
        if n["params"].get("partId") == text_id or n["params"].get("part", {}).get("id") == text_id
    ]
    assert notes[idx[0]]["method"] == "part/updated" and notes[idx[-1]]["method"] == "part/updated"
    # The user message is stored with its parts.
    stored = d.call("session/messages", {"sessionId": sid})["messages"]
    assert stored[0]["role"] == "user" and text_of(stored[0]) == "hi"
    assert stored[1] == msg
    session = d.call("session/get", {"sessionId": sid})["session"]
    assert session["usage"]["inputTokens"] >= 120  # title generation counts too


def test_history_is_sent_back_to_the_model(spawn, model):
    d = spawn(model.base_url)
    sid = new_session(d, title="fixed")  # an explicit title: no title request
    model.enqueue({"text": "first answer"}, {"text": "second answer"})
    chat(d, sid, "first question", system=["Answer in English."])
    chat(d, sid, "second question")
    last = model.requests()[-1]["body"]
    roles = [(m["role"], m.get("content")) for m in last["messages"]]
    assert roles[0][0] == "system" and "Answer in English." not in roles[0][1]
    assert roles[1:] == [
        ("user", "first question"),
        ("assistant", "first answer"),
        ("user", "second question"),
    ]
    first = model.requests()[0]["body"]
    assert "Answer in English." in first["messages"][0]["content"]
    assert first["stream"] is True and first["stream_options"] == {"include_usage": True}
    assert first["model"] == "scripted"


def test_reasoning_parts(spawn, model):
    d = spawn(model.base_url)
    sid = new_session(d, title="t")
    model.enqueue({"reasoning": "Let me think step by step.", "text": "42"})
    msg = chat(d, sid, "answer?")["message"]
    kinds = [(p["type"], p.get("text")) for p in msg["parts"] if p["type"] in ("text", "reasoning")]
    assert kinds == [("reasoning", "Let me think step by step."), ("text", "42")]


def test_builtin_tool_call_round_trip(spawn, model, tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "notes.txt").write_text("alpha\nbeta\n")
    d = spawn(model.base_url, workspace=ws)
    sid = new_session(d, title="t")
    model.enqueue(
        {"toolCalls": [{"name": "read_file", "arguments": {"path": "notes.txt"}}]},
        {"text": "The file has two lines."},
    )
    res = chat(d, sid, "read notes")
    msg = res["message"]
    tool = next(p for p in msg["parts"] if p["type"] == "tool")
    assert tool["tool"] == "read_file" and tool["state"]["status"] == "completed"
    assert "alpha" in tool["state"]["output"] and tool["state"]["input"] == {"path": "notes.txt"}
    assert [p["type"] for p in msg["parts"]] == [
        "step-start",
        "tool",
        "step-finish",
        "step-start",
        "text",
        "step-finish",
    ]
    assert msg["parts"][2]["reason"] == "tool-calls"
    statuses = [
        n["params"]["part"]["state"]["status"]
        for n in run_notes(d, res["runId"])
        if n["method"] == "part/updated" and n["params"]["part"]["id"] == tool["id"]
    ]
    assert statuses[0] == "pending" and statuses[-1] == "completed" and "running" in statuses
    second = model.requests()[-1]["body"]["messages"]
    assert second[-2]["role"] == "assistant" and second[-2]["tool_calls"][0]["id"] == tool["callId"]
    assert second[-1]["role"] == "tool" and "alpha" in second[-1]["content"]
    assert replay(run_notes(d, res["runId"]), msg["id"]) == msg["parts"]


def test_tool_confinement_is_a_tool_error(spawn, model, tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    os.symlink("/etc", ws / "etc-link")
    d = spawn(model.base_url, workspace=ws)
    sid = new_session(d, title="t")
    model.enqueue(
        {
            "toolCalls": [
                {"name": "read_file", "arguments": {"path": "../outside.txt"}},
                {"name": "read_file", "arguments": {"path": "etc-link/passwd"}},
                {"name": "read_file", "arguments": {"path": "/etc/passwd"}},
                {"name": "no_such_tool", "arguments": {}},
                {"name": "read_file", "arguments": "{not json"},
            ]
        },
        {"text": "ok"},
    )
    msg = chat(d, sid, "escape")["message"]
    tools = [p for p in msg["parts"] if p["type"] == "tool"]
    assert len(tools) == 5
    assert all(t["state"]["status"] == "error" for t in tools)
    assert "root:" not in json.dumps(msg)
    assert "unknown tool" in tools[3]["state"]["error"]
    assert "JSON" in tools[4]["state"]["error"]
    results = [m for m in model.requests()[-1]["body"]["messages"] if m["role"] == "tool"]
    assert len(results) == 5 and all(r["content"].startswith("Error:") for r in results)
    assert msg["finishReason"] == "stop"


def test_write_tools_need_permission(spawn, model, tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    d = spawn(model.base_url, initialize=False)
    d.initialize(workspaceRoot=str(ws), capabilities={"permissionRequests": True})
    asked = []

    def answer(params):  # type: ignore[no-untyped-def]
        asked.append(params)
        return {"outcome": "allow_always" if params["input"]["path"] == "a.txt" else "reject_once"}

    d.handlers["permission/request"] = answer
    sid = new_session(d, title="t")
    write = {"name": "write_file", "arguments": {"path": "a.txt", "content": "A"}}
    model.enqueue(
        {
            "toolCalls": [
                write,
                {"name": "write_file", "arguments": {"path": "b.txt", "content": "B"}},
            ]
        },
        {"text": "done"},
        {"toolCalls": [write]},
        {"text": "again"},
    )
    msg = chat(d, sid, "write", tools=["write_file"])["message"]
    tools = [p for p in msg["parts"] if p["type"] == "tool"]
    assert tools[0]["state"]["status"] == "completed" and (ws / "a.txt").read_text() == "A"
    assert tools[1]["state"]["status"] == "error" and not (ws / "b.txt").exists()
    assert "refused" in tools[1]["state"]["error"]
    assert [a["tool"] for a in asked] == ["write_file", "write_file"]
    assert asked[0]["sessionId"] == sid and asked[0]["title"]
    # allow_always is remembered for the same tool and input: no second question.
    chat(d, sid, "write again", tools=["write_file"])
    assert len(asked) == 2


def test_write_tools_refused_without_capability(spawn, model, tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    d = spawn(model.base_url, workspace=ws)
    sid = new_session(d, title="t")
    model.enqueue(
        {"toolCalls": [{"name": "bash", "arguments": {"command": "touch x"}}]}, {"text": "ok"}
    )
    msg = chat(d, sid, "run", tools=["bash"])["message"]
    tool = next(p for p in msg["parts"] if p["type"] == "tool")
    assert tool["state"]["status"] == "error" and "permission" in tool["state"]["error"]
    assert not (ws / "x").exists()


def test_client_tool_and_tool_context_file(spawn, model, tmp_path):
    d = spawn(model.base_url, initialize=False)
    init = d.initialize(workspaceRoot=str(tmp_path), capabilities={"clientTools": True})
    ctx_dir = init["toolContextDir"]
    s = d.call(
        "session/create",
        {
            "userId": "bob",
            "projectId": "p1",
            "accessToken": "tok-xyz-999",
            "clientSessionId": "thr-1",
            "traceId": "trace-abc",
            "title": "t",
        },
    )["session"]
    seen = {}

    def execute(params):  # type: ignore[no-untyped-def]
        path = os.path.join(ctx_dir, params["sessionScopeKey"] + ".json")
        seen["params"] = params
        seen["mode"] = stat.S_IMODE(os.stat(path).st_mode)
        seen["dir_mode"] = stat.S_IMODE(os.stat(ctx_dir).st_mode)
        seen["raw"] = open(path).read()
        seen["ctx"] = json.loads(seen["raw"])
        seen["rpc"] = d.call("toolContext/get", {"sessionScopeKey": params["sessionScopeKey"]})
        return {"output": "selected: foo()", "title": "selection"}

    d.handlers["tool/execute"] = execute
    model.enqueue(
        {"toolCalls": [{"name": "editor_selection", "arguments": {}}]},
        {"text": "You selected foo."},
    )
    res = d.call(
        "session/chat",
        {
            "sessionId": s["id"],
            "parts": [{"type": "text", "text": "what did I select?"}],
            "clientTools": [
                {
                    "name": "editor_selection",
                    "description": "the selection",
                    "parameters": {"type": "object", "properties": {}},
                }
            ],
        },
        timeout=30,
    )
    p = seen["params"]
    assert p["name"] == "editor_selection" and p["sessionScopeKey"] == s["sessionScopeKey"]
    assert p["sessionId"] == s["id"] and p["runId"] == res["runId"]
    assert p["messageId"] == res["message"]["id"]
    assert seen["mode"] == 0o600 and seen["dir_mode"] == 0o700
    ctx = seen["ctx"]
    assert ctx["sessionScopeKey"] == s["sessionScopeKey"] and ctx["runId"] == res["runId"]
    assert ctx["clientSessionId"] == "thr-1" and ctx["actorKey"] == "bob"
    assert ctx["projectKey"] == "p1" and ctx["projectId"] == "p1"
    assert ctx["traceId"] == "trace-abc" and ctx["learningMode"] == "interactive"
    assert ctx["allowLearningWrite"] is True and isinstance(ctx["pid"], int)
    assert "tok-xyz-999" not in seen["raw"] and "accessToken" not in seen["raw"]
    assert seen["rpc"]["runId"] == res["runId"]
    tool = next(x for x in res["message"]["parts"] if x["type"] == "tool")
    assert tool["state"]["output"] == "selected: foo()" and tool["state"]["title"] == "selection"
    # After the run the file is gone and the lookup answers null.
    assert not os.path.exists(os.path.join(ctx_dir, s["sessionScopeKey"] + ".json"))
    assert d.call("toolContext/get", {"sessionScopeKey": s["sessionScopeKey"]}) is None
    assert d.call("run/resolve", {"runId": res["runId"]})["sessionScopeKey"] == s["sessionScopeKey"]


def test_client_tool_error_is_a_tool_result(spawn, model):
    from rpc_client import RpcError as Err

    d = spawn(model.base_url)
    sid = new_session(d, title="t")

    def fail(params):  # type: ignore[no-untyped-def]
        raise Err({"code": -32000, "message": "buffer not found"})

    d.handlers["tool/execute"] = fail
    model.enqueue(
        {"toolCalls": [{"name": "read_buffer", "arguments": {"name": "x"}}]}, {"text": "sorry"}
    )
    msg = d.call(
        "session/chat",
        {
            "sessionId": sid,
            "parts": [{"type": "text", "text": "x"}],
            "clientTools": [
                {"name": "read_buffer", "description": "d", "parameters": {"type": "object"}}
            ],
        },
    )["message"]
    tool = next(x for x in msg["parts"] if x["type"] == "tool")
    assert tool["state"]["status"] == "error" and "buffer not found" in tool["state"]["error"]
    assert msg["finishReason"] == "stop"


# Answers to tool/execute that are not `{output: string, title?, metadata?, isError?}`,
# and what the model reads for each.
NO_OUTPUT = "the editor answered tool/execute without an output string"
MALFORMED_TOOL_ANSWERS = [
    (None, NO_OUTPUT),
    ([], NO_OUTPUT),
    ("the output", NO_OUTPUT),
    (42, NO_OUTPUT),
    ({}, NO_OUTPUT),
    ({"output": None}, NO_OUTPUT),
    ({"output": 5}, NO_OUTPUT),
    ({"output": ["a", "b"]}, NO_OUTPUT),
    ({"output": {"text": "x"}}, NO_OUTPUT),
    ({"title": "t", "isError": True}, NO_OUTPUT),
    (
        {"output": "x", "title": 5},
        "the editor answered tool/execute with an invalid result: "
        "result.title: expected string, got int",
    ),
    (
        {"output": "x", "isError": "yes"},
        "the editor answered tool/execute with an invalid result: "
        "result.isError: expected boolean, got str",
    ),
    (
        {"output": "x", "metadata": [1]},
        "the editor answered tool/execute with an invalid result: "
        "result.metadata: expected object, got list",
    ),
    (
        {"output": "x", "metadata": "m", "isError": 0},
        "the editor answered tool/execute with an invalid result: "
        "result.metadata: expected object, got str; result.isError: expected boolean, got int",
    ),
]


def test_malformed_editor_tool_answers_are_tool_errors(spawn, model):
    """Whatever shape the editor's answer has, the call ends as a tool error the model
    reads (never a protocol error, never a crash), and the run goes on."""
    d = spawn(model.base_url)
    sid = new_session(d, title="t")
    d.handlers["tool/execute"] = lambda params: MALFORMED_TOOL_ANSWERS[params["input"]["case"]][0]
    cases = range(len(MALFORMED_TOOL_ANSWERS))
    model.enqueue(
        {"toolCalls": [{"name": "editor_thing", "arguments": {"case": i}} for i in cases]},
        {"text": "noted"},
    )
    msg = chat(
        d,
        sid,
        "go",
        clientTools=[{"name": "editor_thing", "description": "d", "parameters": {}}],
    )["message"]
    tools = [p for p in msg["parts"] if p["type"] == "tool"]
    assert [p["state"]["status"] for p in tools] == ["error"] * len(tools)
    assert [p["state"]["error"] for p in tools] == [why for _, why in MALFORMED_TOOL_ANSWERS]
    results = [m for m in model.requests()[-1]["body"]["messages"] if m["role"] == "tool"]
    assert [r["content"] for r in results] == [f"Error: {why}" for _, why in MALFORMED_TOOL_ANSWERS]
    assert text_of(msg) == "noted" and msg["finishReason"] == "stop"


def test_editor_tool_answers_with_every_optional_field(spawn, model):
    """Unknown fields in the editor's answer are ignored; null means absent."""
    d = spawn(model.base_url)
    sid = new_session(d, title="t")
    answers = [
        {"output": "plain", "futureField": {"x": 1}},
        {"output": "full", "title": "T", "metadata": {"k": [1]}, "isError": False},
        {"output": "failed", "isError": True},
        {"output": "nulls", "title": None, "metadata": None, "isError": None},
    ]
    d.handlers["tool/execute"] = lambda params: answers[params["input"]["case"]]
    model.enqueue(
        {"toolCalls": [{"name": "editor_thing", "arguments": {"case": i}} for i in range(4)]},
        {"text": "ok"},
    )
    msg = chat(
        d, sid, "go", clientTools=[{"name": "editor_thing", "description": "d", "parameters": {}}]
    )["message"]
    states = [p["state"] for p in msg["parts"] if p["type"] == "tool"]
    assert [s["status"] for s in states] == ["completed", "completed", "error", "completed"]
    assert states[0]["output"] == "plain" and "metadata" not in states[0]
    assert states[1]["title"] == "T" and states[1]["metadata"] == {"k": [1]}
    assert states[2]["error"] == "failed"
    assert states[3]["output"] == "nulls" and "metadata" not in states[3]


# Answers to permission/request that are not `{outcome: one of the four}`.
MALFORMED_PERMISSION_ANSWERS = [
    (None, "None"),
    ("allow_once", "None"),
    (["allow_once"], "None"),
    ({}, "None"),
    ({"outcome": None}, "None"),
    ({"outcome": "maybe"}, "'maybe'"),
    ({"outcome": "ALLOW_ONCE"}, "'ALLOW_ONCE'"),
    ({"outcome": 1}, "1"),
    ({"outcome": True}, "True"),
    ({"outcome": ["allow_once"]}, "['allow_once']"),
]


def test_malformed_permission_answers_refuse_the_tool(spawn, model, tmp_path):
    """An answer that is not one of the four outcomes never lets the tool run; the model
    reads what the editor answered."""
    ws = tmp_path / "ws"
    ws.mkdir()
    d = spawn(model.base_url, initialize=False)
    d.initialize(workspaceRoot=str(ws), capabilities={"permissionRequests": True})

    def answer(params):  # type: ignore[no-untyped-def]
        if params["input"]["path"] == "ok.txt":
            return {"outcome": "allow_once", "futureField": 1}
        return MALFORMED_PERMISSION_ANSWERS[int(params["input"]["path"].split(".")[0])][0]

    d.handlers["permission/request"] = answer
    sid = new_session(d, title="t")
    paths = [f"{i}.txt" for i in range(len(MALFORMED_PERMISSION_ANSWERS))] + ["ok.txt"]
    model.enqueue(
        {
            "toolCalls": [
                {"name": "write_file", "arguments": {"path": p, "content": "x"}} for p in paths
            ]
        },
        {"text": "done"},
    )
    msg = chat(d, sid, "write", tools=["write_file"])["message"]
    tools = [p for p in msg["parts"] if p["type"] == "tool"]
    assert [p["state"]["status"] for p in tools] == ["error"] * (len(paths) - 1) + ["completed"]
    assert [p["state"]["error"] for p in tools[:-1]] == [
        f"permission request got an invalid answer: {shown}"
        for _, shown in MALFORMED_PERMISSION_ANSWERS
    ]
    assert sorted(os.listdir(ws)) == ["ok.txt"]


def test_max_steps_ends_with_tool_calls(spawn, model, tmp_path):
    d = spawn(model.base_url)
    sid = new_session(d, title="t")
    model.enqueue({"toolCalls": [{"name": "list_dir", "arguments": {}}], "repeat": 5})
    msg = chat(d, sid, "loop", maxSteps=3)["message"]
    assert msg["finishReason"] == "tool-calls"
    assert sum(p["type"] == "step-start" for p in msg["parts"]) == 3
    assert len(model.requests()) == 3


def _wait_delta(d, sid):  # type: ignore[no-untyped-def]
    return d.wait_for(
        lambda: [n for n in d.notifications("part/delta") if n["params"]["sessionId"] == sid]
    )


def test_abort_keeps_what_was_streamed(spawn, model, tmp_path):
    d = spawn(model.base_url)
    sid = new_session(d, title="t")
    model.enqueue({"text": " ".join(f"word{i}" for i in range(400)), "delayMs": 20})
    chat_id = d.request_async(
        "session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "long"}]}
    )
    _wait_delta(d, sid)
    started = time.monotonic()
    aborted = d.call("session/abort", {"sessionId": sid})
    elapsed = time.monotonic() - started
    assert aborted["aborted"] is True and aborted["runId"]
    res = d.result(chat_id)
    msg = res["message"]
    assert msg["finishReason"] == "aborted"
    assert msg["parts"][-1]["type"] == "step-finish" and msg["parts"][-1]["reason"] == "aborted"
    streamed = "".join(
        n["params"]["delta"]
        for n in d.notifications("part/delta")
        if n["params"]["messageId"] == msg["id"]
    )
    assert streamed and text_of(msg) == streamed
    # Persisted before the abort answered.
    stored = d.call("session/messages", {"sessionId": sid})["messages"][-1]
    assert stored == msg
    assert replay(run_notes(d, res["runId"]), msg["id"]) == msg["parts"]
    # The upstream connection was closed by the abort.
    assert model.wait_response_end(0, timeout=5) == "client_closed"
    assert elapsed < 5
    assert d.call("session/abort", {"sessionId": sid}) == {"aborted": False}
    # The session works afterwards.
    model.enqueue({"text": "fine"})
    assert text_of(chat(d, sid, "again")["message"]) == "fine"


def test_abort_during_client_tool_and_during_retry_wait(spawn, model):
    d = spawn(model.base_url)
    sid = new_session(d, title="t")
    import threading

    hang: list = []
    release = threading.Event()
    d.handlers["tool/execute"] = lambda params: (
        hang.append(params) or release.wait(30) or {"output": "too late"}
    )
    model.enqueue({"toolCalls": [{"name": "slow_tool", "arguments": {}}]})
    chat_id = d.request_async(
        "session/chat",
        {
            "sessionId": sid,
            "parts": [{"type": "text", "text": "x"}],
            "clientTools": [{"name": "slow_tool", "description": "d", "parameters": {}}],
        },
    )
    d.wait_for(lambda: hang)
    d.call("session/abort", {"sessionId": sid})
    msg = d.result(chat_id)["message"]
    tool = next(p for p in msg["parts"] if p["type"] == "tool")
    assert tool["state"]["status"] == "error" and tool["state"]["error"] == "aborted"
    # agentd told the editor to stop the pending tool/execute.
    d.wait_for(lambda: [n for n in d.notifications("$/cancelRequest")])
    release.set()  # the editor answers late: agentd ignores the stale response
    # The aborted call is sent back as an error result next time (strict providers).
    model.enqueue({"text": "ok"})
    chat(d, sid, "next")
    sent = model.requests()[-1]["body"]["messages"]
    tool_msgs = [m for m in sent if m["role"] == "tool"]
    assert tool_msgs and tool_msgs[0]["content"].startswith("Error:")
    # Abort while waiting to retry a 429 with a long retry-after.
    model.enqueue({"error": {"status": 429, "headers": {"retry-after": "60"}}})
    chat_id = d.request_async(
        "session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "y"}]}
    )
    retry = d.wait_for(
        lambda: [n for n in d.notifications("session/status") if n["params"]["status"] == "retry"]
    )
    assert retry[0]["params"]["attempt"] >= 1 and retry[0]["params"]["nextRetryAt"] > 0
    started = time.monotonic()
    d.call("session/abort", {"sessionId": sid})
    assert d.result(chat_id)["message"]["finishReason"] == "aborted"
    assert time.monotonic() - started < 5


def test_busy_reject_preempt_queue(spawn, model):
    d = spawn(model.base_url)
    sid = new_session(d, title="t")
    model.enqueue({"text": " ".join(["slow"] * 200), "delayMs": 20})
    first = d.request_async(
        "session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "one"}]}
    )
    _wait_delta(d, sid)
    with pytest.raises(RpcError) as err:
        chat(d, sid, "two")
    assert err.value.code == 1002
    run_id = d.wait_for(
        lambda: [
            n["params"]["runId"]
            for n in d.notifications("session/status")
            if n["params"]["status"] == "busy"
        ]
    )[0]
    assert err.value.data == {"sessionId": sid, "runId": run_id}
    # queue: runs after the current one, in order; its user message is appended only then.
    model.enqueue({"text": "queued-1"}, {"text": "queued-2"})
    q1 = d.request_async(
        "session/chat",
        {"sessionId": sid, "onBusy": "queue", "parts": [{"type": "text", "text": "q1"}]},
    )
    q2 = d.request_async(
        "session/chat",
        {"sessionId": sid, "onBusy": "queue", "parts": [{"type": "text", "text": "q2"}]},
    )
    stored = d.call("session/messages", {"sessionId": sid})["messages"]
    assert [text_of(m) for m in stored if m["role"] == "user"] == ["one"]
    d.call("session/abort", {"sessionId": sid})
    # Abort drops runs that never started: they answer -32800 and store nothing.
    assert d.response(first)["result"]["message"]["finishReason"] == "aborted"
    for q in (q1, q2):
        assert d.response(q)["error"]["code"] == -32800
    users = [
        text_of(m)
        for m in d.call("session/messages", {"sessionId": sid})["messages"]
        if m["role"] == "user"
    ]
    assert users == ["one"]
    # queue without an abort: both run, in order.
    model.reset()
    model.enqueue({"text": " ".join(["slow"] * 50), "delayMs": 10}, {"text": "A"}, {"text": "B"})
    r0 = d.request_async(
        "session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "0"}]}
    )
    _wait_delta(d, sid)
    ra = d.request_async(
        "session/chat",
        {"sessionId": sid, "onBusy": "queue", "parts": [{"type": "text", "text": "a"}]},
    )
    rb = d.request_async(
        "session/chat",
        {"sessionId": sid, "onBusy": "queue", "parts": [{"type": "text", "text": "b"}]},
    )
    assert text_of(d.result(ra, 30)["message"]) == "A"
    assert text_of(d.result(rb, 30)["message"]) == "B"
    d.result(r0)
    msgs = d.call("session/messages", {"sessionId": sid})["messages"]
    assert [text_of(m) for m in msgs[-6:]] == ["0", " ".join(["slow"] * 50), "a", "A", "b", "B"]
    # preempt: aborts the running run, then runs.
    model.enqueue({"text": " ".join(["slow"] * 200), "delayMs": 20}, {"text": "preempted!"})
    busy_before = len(
        [n for n in d.notifications("session/status") if n["params"]["status"] == "busy"]
    )
    long_id = d.request_async(
        "session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "long"}]}
    )
    long_run = d.wait_for(
        lambda: [
            n["params"]["runId"]
            for n in d.notifications("session/status")
            if n["params"]["status"] == "busy"
        ][busy_before:]
    )[0]
    d.wait_for(
        lambda: [n for n in d.notifications("part/delta") if n["params"]["runId"] == long_run]
    )
    res = chat(d, sid, "urgent", onBusy="preempt")
    assert text_of(res["message"]) == "preempted!"
    assert d.result(long_id)["message"]["finishReason"] == "aborted"


def test_cancel_request_aborts_the_run(spawn, model):
    d = spawn(model.base_url)
    sid = new_session(d, title="t")
    model.enqueue({"text": " ".join(["tok"] * 300), "delayMs": 20})
    chat_id = d.request_async(
        "session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "x"}]}
    )
    _wait_delta(d, sid)
    d.notify("$/cancelRequest", {"id": chat_id})
    resp = d.response(chat_id)
    assert resp["error"]["code"] == -32800
    stored = d.call("session/messages", {"sessionId": sid})["messages"][-1]
    assert stored["finishReason"] == "aborted" and text_of(stored).startswith("tok")
    # Cancelling again, or a finished request, never hangs or errors.
    d.notify("$/cancelRequest", {"id": chat_id})
    d.notify("$/cancelRequest", {"id": "unknown"})
    assert d.call("session/abort", {"sessionId": sid}) == {"aborted": False}


def test_cancel_request_of_a_waiting_chat_drops_it_and_nothing_else(spawn, model):
    """`$/cancelRequest` for a chat queued behind a running one, and for one cancelled in
    the write that sent it: each answers -32800 and is never stored; the running run
    goes on to its end, and the session takes new chats afterwards."""
    d = spawn(model.base_url)
    sid = new_session(d, title="t")
    model.enqueue({"text": " ".join(["slow"] * 40), "delayMs": 20}, {"text": "after"})
    first = d.request_async(
        "session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "one"}]}
    )
    _wait_delta(d, sid)
    queued = d.request_async(
        "session/chat",
        {"sessionId": sid, "parts": [{"type": "text", "text": "queued"}], "onBusy": "queue"},
    )
    # The catalog answers in order: once this is answered, the chat has read its session
    # and waits in the queue.
    d.call("session/get", {"sessionId": sid})
    d.notify("$/cancelRequest", {"id": queued})
    assert d.response(queued)["error"]["code"] == -32800
    chat_msg = {
        "jsonrpc": "2.0",
        "id": "at-once",
        "method": "session/chat",
        "params": {
            "sessionId": sid,
            "parts": [{"type": "text", "text": "gone"}],
            "onBusy": "queue",
        },
    }
    cancel = {"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": "at-once"}}
    d.send_raw(frame(chat_msg) + frame(cancel))
    assert d.response("at-once")["error"]["code"] == -32800
    assert d.result(first, timeout=30)["message"]["finishReason"] == "stop"
    assert text_of(chat(d, sid, "next")["message"]) == "after"
    users = [
        text_of(m)
        for m in d.call("session/messages", {"sessionId": sid})["messages"]
        if m["role"] == "user"
    ]
    assert users == ["one", "next"]


@pytest.mark.parametrize(
    "status,name",
    [
        (401, "ProviderAuthError"),
        (404, "ModelNotFound"),
        (500, "ProviderUnavailable"),
    ],
)
def test_provider_errors_end_the_run_with_a_named_error(spawn, model, status, name):
    d = spawn(model.base_url)
    sid = new_session(d, title="t")
    model.enqueue({"error": {"status": status}, "repeat": 10})
    msg = chat(d, sid, "x")["message"]
    assert msg["finishReason"] == "error" and msg["error"]["name"] == name
    assert msg["error"]["message"]
    assert "sk-test-key" not in json.dumps(msg)
    stored = d.call("session/messages", {"sessionId": sid})["messages"][-1]
    assert stored["error"]["name"] == name
    model.reset()
    assert text_of(chat(d, sid, "again")["message"]).startswith("You said")


def test_rate_limit_is_retried_with_status(spawn, model):
    d = spawn(model.base_url)
    sid = new_session(d, title="t")
    model.enqueue(
        {"error": {"status": 429, "headers": {"retry-after": "0"}}}, {"text": "after retry"}
    )
    res = chat(d, sid, "x")
    assert text_of(res["message"]) == "after retry"
    statuses = [n["params"] for n in run_notes(d, res["runId"]) if n["method"] == "session/status"]
    assert [s["status"] for s in statuses] == ["busy", "retry", "busy", "idle"]
    assert statuses[1]["attempt"] == 1


def test_dropped_stream_keeps_partial_text(spawn, model):
    d = spawn(model.base_url)
    sid = new_session(d, title="t")
    model.enqueue({"text": "partial answer that will be cut", "chunkSize": 4, "dropAfterChunks": 3})
    msg = chat(d, sid, "x")["message"]
    assert msg["finishReason"] == "error"
    assert msg["error"]["name"] in ("StreamInterrupted", "ProviderUnavailable")
    assert text_of(msg) == "partial answer that will be cut"[:12]


def test_no_model_configured_is_1003(spawn):
    d = spawn()
    sid = new_session(d)
    with pytest.raises(RpcError) as err:
        chat(d, sid, "x")
    assert err.value.code == 1003
    with pytest.raises(RpcError) as err:
        d.call("session/create", {"model": "nope"})
    assert err.value.code == 1003


def test_title_is_generated_in_the_background(spawn, model):
    d = spawn(model.base_url)
    sid = new_session(d)
    chat(d, sid, "Please refactor the parser module today")
    note = d.wait_for(
        lambda: [
            n
            for n in d.notifications("session/updated")
            if n["params"]["session"]["title"] != "New session"
        ]
    )
    assert note[0]["params"]["session"]["title"] == "Please refactor the parser module"
    title_req = [
        r for r in model.requests() if "short title" in json.dumps(r["body"]["messages"][0])
    ]
    assert len(title_req) == 1


def test_title_falls_back_to_first_words(spawn, model):
    d = spawn(model.base_url)
    sid = new_session(d)
    model.enqueue({"text": "answer"}, {"error": {"status": 400}})
    chat(d, sid, "one two three four five six seven eight nine ten")
    note = d.wait_for(
        lambda: [
            n
            for n in d.notifications("session/updated")
            if n["params"]["session"]["title"] != "New session"
        ]
    )
    assert note[0]["params"]["session"]["title"] == "one two three four five six seven eight"


def test_summarize_and_history_from_the_summary(spawn, model):
    d = spawn(model.base_url)
    sid = new_session(d, title="t")
    for i in range(5):
        model.enqueue({"text": f"answer {i}"})
        chat(d, sid, f"question {i}")
    model.enqueue({"text": "SUMMARY: five questions asked."})
    summary = d.call("session/summarize", {"sessionId": sid})["message"]
    assert summary["summary"] is True
    assert [p["type"] for p in summary["parts"]] == ["compaction", "text"]
    assert summary["parts"][0]["auto"] is False
    model.enqueue({"text": "next"})
    chat(d, sid, "question 5")
    sent = model.requests()[-1]["body"]["messages"]
    contents = json.dumps(sent)
    assert "SUMMARY: five questions asked." in contents
    assert "question 0" not in contents and "question 4" in contents


@pytest.mark.unshared
def test_crash_recovery_after_kill(spawn, model, tmp_path):
    d = spawn(model.base_url)
    s = d.call("session/create", {"title": "t"})["session"]
    model.enqueue({"text": " ".join(f"w{i}" for i in range(1000)), "delayMs": 10})
    d.request_async(
        "session/chat", {"sessionId": s["id"], "parts": [{"type": "text", "text": "x"}]}
    )
    d.wait_for(lambda: sum(len(n["params"]["delta"]) for n in d.notifications("part/delta")) > 200)
    # Let at least one checkpoint happen (they are at most 250 ms apart).
    d.wait_for(
        lambda: (
            b'"k":"delta"' in (tmp_path / "data" / "sessions" / s["id"] / "log.jsonl").read_bytes()
        )
    )
    ctx_file = tmp_path / "state" / "tool-context" / (s["sessionScopeKey"] + ".json")
    assert ctx_file.exists()
    streamed = "".join(n["params"]["delta"] for n in d.notifications("part/delta"))
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()
    d2 = spawn(model.base_url)
    msg = d2.call("session/messages", {"sessionId": s["id"]})["messages"][-1]
    assert msg["finishReason"] == "interrupted" and msg["time"]["completed"]
    assert text_of(msg) and streamed.startswith(text_of(msg))
    assert d2.call("session/get", {"sessionId": s["id"]})["session"]["status"] == "idle"
    assert not ctx_file.exists()
    model.enqueue({"text": "alive"})
    assert text_of(chat(d2, s["id"], "again")["message"]) == "alive"


@pytest.mark.unshared
def test_shutdown_aborts_runs_and_releases_tool_context(spawn, model, tmp_path):
    d = spawn(model.base_url)
    s = d.call("session/create", {"title": "t"})["session"]
    model.enqueue({"text": " ".join(["x"] * 500), "delayMs": 20})
    chat_id = d.request_async(
        "session/chat", {"sessionId": s["id"], "parts": [{"type": "text", "text": "x"}]}
    )
    _wait_delta(d, s["id"])
    assert d.call("shutdown") is None
    assert d.response(chat_id)["result"]["message"]["finishReason"] == "aborted"
    assert not (tmp_path / "state" / "tool-context" / (s["sessionScopeKey"] + ".json")).exists()
    d.notify("exit")
    assert d.wait_exit() == 0


def test_offline_chat_cli_streams_an_answer(tmp_path):
    env = {**os.environ, **daemon_env(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-m", "agentd", "chat", "hello", "offline"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "You said: hello offline" in out.stdout


def _config(tmp_path, body: str) -> str:
    path = tmp_path / "config.toml"
    path.write_text(body)
    return str(path)


def test_context_overflow_compacts_and_retries(spawn, model, tmp_path):
    d = spawn(model.base_url)
    sid = new_session(d, title="t")
    for i in range(5):
        model.enqueue({"text": f"answer {i}"})
        chat(d, sid, f"question {i}")
    model.enqueue(
        {"fixture": "openai-error-400-context-length.http"},
        {"text": "SUMMARY of the long talk"},
        {"text": "fresh answer"},
    )
    res = chat(d, sid, "question 5")
    assert res["message"]["finishReason"] == "stop"
    assert text_of(res["message"]) == "fresh answer"
    msgs = d.call("session/messages", {"sessionId": sid})["messages"]
    summary = next(m for m in msgs if m.get("summary"))
    assert summary["parts"][0] == {
        "id": summary["parts"][0]["id"],
        "type": "compaction",
        "auto": True,
    }
    retried = json.dumps(model.requests()[-1]["body"]["messages"])
    assert "SUMMARY of the long talk" in retried and "question 0" not in retried
    assert "question 5" in retried
    # The summary reached the editor as notifications of the run.
    assert any(
        n["params"]["message"].get("summary")
        for n in run_notes(d, res["runId"])
        if n["method"] == "message/updated"
    )


def test_compaction_can_be_disabled(spawn, model, tmp_path):
    d = spawn(model.base_url, AGENTD_CONFIG=_config(tmp_path, "compaction = false\n"))
    sid = new_session(d, title="t")
    model.enqueue({"fixture": "openai-error-400-context-length.http"})
    msg = chat(d, sid, "too long")["message"]
    assert msg["finishReason"] == "error" and msg["error"]["name"] == "ContextOverflow"
    assert len(model.requests()) == 1
    note = d.wait_for(lambda: d.notifications("session/error"))[0]["params"]
    assert note["error"]["name"] == "ContextOverflow" and note["sessionId"] == sid


def test_auto_compaction_before_a_run_over_the_usable_context(spawn, model, tmp_path):
    config = _config(
        tmp_path,
        """
[models.small]
provider = "default"
name = "scripted"
context_window = 1000
max_output_tokens = 200
input_price = 1.5
output_price = 2
""",
    )
    d = spawn(model.base_url, AGENTD_CONFIG=config, AGENTD_MODEL="small")
    sid = new_session(d, title="t")
    model.enqueue({"text": "big", "usage": {"prompt_tokens": 900, "completion_tokens": 10}})
    first = chat(d, sid, "hello")["message"]
    # 900 input at $1.5/M + 10 output at $2/M, exactly.
    assert first["cost"] == 0.00137
    model.enqueue({"text": "SUMMARY"}, {"text": "small again"})
    res = chat(d, sid, "next")
    assert text_of(res["message"]) == "small again"
    assert "SUMMARY" in json.dumps(model.requests()[-1]["body"]["messages"])
    session = d.call("session/get", {"sessionId": sid})["session"]
    assert session["usage"]["inputTokens"] >= 900


@pytest.mark.unshared
def test_sigterm_aborts_and_persists_before_exiting(spawn, model, tmp_path):
    d = spawn(model.base_url)
    s = d.call("session/create", {"title": "t"})["session"]
    model.enqueue({"text": " ".join(["x"] * 500), "delayMs": 20})
    d.request_async(
        "session/chat", {"sessionId": s["id"], "parts": [{"type": "text", "text": "x"}]}
    )
    _wait_delta(d, s["id"])
    d.proc.send_signal(signal.SIGTERM)
    assert d.wait_exit() == 0
    assert not (tmp_path / "state" / "tool-context" / (s["sessionScopeKey"] + ".json")).exists()
    d2 = spawn(model.base_url)
    msg = d2.call("session/messages", {"sessionId": s["id"]})["messages"][-1]
    assert msg["finishReason"] == "aborted" and text_of(msg).startswith("x")


@pytest.mark.unshared
def test_title_in_progress_survives_an_immediate_shutdown(spawn, model):
    d = spawn(model.base_url)
    sid = new_session(d)
    # The answer is immediate; the title takes a moment, and the editor quits first.
    model.enqueue({"text": "answer"}, {"text": "Walrus talk", "firstDelayMs": 300})
    chat(d, sid, "remember the walrus")
    d.stop()
    d2 = spawn(model.base_url)
    assert d2.call("session/get", {"sessionId": sid})["session"]["title"] == "Walrus talk"
