"""The JSON-RPC layer over real pipes: lifecycle, framing, error codes, malformed input.
Each test here covers a way stock pygls misbehaves (see agentd/jsonrpc.py)."""

from __future__ import annotations

import json
import os

import pytest
from rpc_client import RpcError, frame


def _error(d, msg_id):  # type: ignore[no-untyped-def]
    return d.response(msg_id)["error"]


def test_initialize_result_is_contract_and_lsp_shaped(spawn, tmp_path):
    d = spawn(initialize=False)
    result = d.call(
        "initialize",
        {"processId": os.getpid(), "protocolVersion": 1, "capabilities": {"clientTools": True}},
    )
    assert result["protocolVersion"] == 1
    assert result["serverInfo"]["name"] == "agentd"
    assert "session/chat" in result["capabilities"]["requests"]
    assert "part/delta" in result["capabilities"]["notifications"]
    assert result["toolContextDir"] == str(tmp_path / "state" / "tool-context")
    assert oct(os.stat(result["toolContextDir"]).st_mode & 0o777) == "0o700"


def test_requests_before_initialize_get_32002(spawn):
    d = spawn(initialize=False)
    with pytest.raises(RpcError) as err:
        d.call("session/list", {})
    assert err.value.code == -32002
    with pytest.raises(RpcError) as err:
        d.call("no/such/method", {})
    assert err.value.code == -32002
    d.initialize()
    assert d.call("session/list", {})["sessions"] == []


def test_lsp_initialize_params_are_accepted(spawn, tmp_path):
    d = spawn(initialize=False)
    root = tmp_path / "proj"
    root.mkdir()
    result = d.call(
        "initialize",
        {
            "processId": None,
            "rootUri": root.as_uri(),
            "capabilities": {"textDocument": {"synchronization": {"dynamicRegistration": True}}},
            "workspaceFolders": [{"uri": root.as_uri(), "name": "proj"}],
            "trace": "off",
        },
    )
    assert "capabilities" in result and "serverInfo" in result
    d.notify("initialized", {})
    d.notify("textDocument/didOpen", {"textDocument": {"uri": "file:///x", "text": ""}})
    d.notify("$/setTrace", {"value": "off"})
    created = d.call("session/create", {})
    assert created["session"]["workspaceRoot"] == str(root)


def test_request_without_params_is_answered(spawn):
    d = spawn()
    msg_id = d.request_async("session/list")  # no params member at all: valid JSON-RPC
    assert d.result(msg_id)["sessions"] == []
    msg_id = d.request_async("models/list")
    assert "models" in d.result(msg_id)


def test_invalid_params_name_the_field(spawn):
    d = spawn()
    for params, field in [
        ({"sessionId": 5}, "sessionId"),
        ({}, "sessionId"),
    ]:
        with pytest.raises(RpcError) as err:
            d.call("session/get", params)
        assert err.value.code == -32602
        assert field in err.value.message
        assert any(field in e for e in err.value.data["errors"])
    with pytest.raises(RpcError) as err:
        d.call("session/list", {"limit": "10"})
    assert err.value.code == -32602 and "limit" in err.value.message
    with pytest.raises(RpcError) as err:
        d.call("session/list", {"rootsOnly": 1})
    assert err.value.code == -32602 and "rootsOnly" in err.value.message
    with pytest.raises(RpcError) as err:
        d.call("session/list", [1, 2])
    assert err.value.code == -32602
    with pytest.raises(RpcError) as err:
        d.call("session/chat", {"sessionId": "ses_x", "parts": [{"type": "image"}]})
    assert err.value.code == -32602 and "parts[0]" in err.value.message
    with pytest.raises(RpcError) as err:
        d.call("session/chat", {"sessionId": "ses_x", "parts": [], "onBusy": "later"})
    assert err.value.code == -32602 and "onBusy" in err.value.message
    # Unknown fields are ignored.
    assert d.call("session/list", {"futureField": {"x": 1}})["sessions"] == []


def test_containers_of_the_wrong_type_are_invalid_params(spawn, model):
    """A list is a JSON array and an object a JSON object: a string is not a list of its
    characters, an object not the list of its keys. Refused whole, naming the field, and
    nothing is stored."""
    d = spawn(model.base_url)
    sid = d.call("session/create", {"title": "t"})["session"]["id"]
    text = [{"type": "text", "text": "hi"}]
    cases = [
        ("session/chat", {"sessionId": sid, "parts": text, "tools": "read_file"}, "tools"),
        ("session/chat", {"sessionId": sid, "parts": text, "tools": {"read_file": 1}}, "tools"),
        ("session/chat", {"sessionId": sid, "parts": text, "system": "be brief"}, "system"),
        ("session/chat", {"sessionId": sid, "parts": "hi"}, "parts"),
        ("session/chat", {"sessionId": sid, "parts": {"type": "text", "text": "hi"}}, "parts"),
        (
            "session/chat",
            {
                "sessionId": sid,
                "parts": text,
                "clientTools": [{"name": "t", "description": "d", "parameters": []}],
            },
            "clientTools[0].parameters",
        ),
        (
            "session/chat",
            {"sessionId": sid, "parts": text, "clientTools": {"name": "t"}},
            "clientTools",
        ),
        ("session/create", {"mcpServers": {"name": "x", "command": "true"}}, "mcpServers"),
        (
            "session/create",
            {"mcpServers": [{"name": "x", "command": "true", "args": "-v"}]},
            "mcpServers[0].args",
        ),
        (
            "session/create",
            {"mcpServers": [{"name": "x", "command": "true", "env": ["A=1"]}]},
            "mcpServers[0].env",
        ),
        ("session/create", {"mcpServers": ["x"]}, "mcpServers[0]"),
    ]
    for method, params, field in cases:
        with pytest.raises(RpcError) as err:
            d.call(method, params)
        assert err.value.code == -32602, (params, err.value.message)
        assert f"params.{field}: expected " in err.value.message, (params, err.value.message)
    assert d.call("session/messages", {"sessionId": sid})["messages"] == []
    assert [s["id"] for s in d.call("session/list", {})["sessions"]] == [sid]
    assert not model.requests()


def test_unknown_method_is_32601(spawn):
    d = spawn()
    with pytest.raises(RpcError) as err:
        d.call("session/teleport", {})
    assert err.value.code == -32601
    # Methods agentd sends (not receives) are not callable either.
    with pytest.raises(RpcError) as err:
        d.call("part/delta", {})
    assert err.value.code == -32601


def test_non_json_frame_gets_32700_and_server_keeps_serving(spawn):
    d = spawn()
    body = b"{this is not json"
    d.send_raw(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    d.wait_for(lambda: any(m.get("error", {}).get("code") == -32700 for m in d.messages))
    assert d.call("session/list", {})["sessions"] == []


def test_lf_only_headers_and_header_case(spawn):
    d = spawn()
    body = json.dumps(
        {"jsonrpc": "2.0", "id": "lf", "method": "session/list", "params": {}}
    ).encode()
    d.send_raw(b"content-length: %d\n\n%s" % (len(body), body))
    body2 = json.dumps({"jsonrpc": "2.0", "id": "next", "method": "session/list"}).encode()
    d.send_raw(
        b"Content-Length: %d\r\nContent-Type: application/vscode-jsonrpc; charset=utf-8\r\n\r\n%s"
        % (len(body2), body2)
    )
    assert d.result("lf")["sessions"] == []
    assert d.result("next")["sessions"] == []


def test_garbage_between_frames_and_short_body_resync(spawn):
    d = spawn()
    d.send_raw(b"garbage line\r\nmore garbage\r\n")
    ok = json.dumps({"jsonrpc": "2.0", "id": "g1", "method": "session/list"}).encode()
    d.send_raw(b"Content-Length: %d\r\n\r\n%s" % (len(ok), ok))
    assert d.result("g1")["sessions"] == []
    # A body shorter than announced swallows the next frame's start: agentd answers
    # -32700 and resynchronises on the header inside it.
    short = b'{"jsonrpc":"2.0"'
    follow = json.dumps({"jsonrpc": "2.0", "id": "g2", "method": "session/list"}).encode()
    d.send_raw(b"Content-Length: %d\r\n\r\n%s" % (len(short) + 30, short))
    d.send_raw(b"Content-Length: %d\r\n\r\n%s" % (len(follow), follow))
    # The resync may land either on this frame or the one after: send a third.
    third = json.dumps({"jsonrpc": "2.0", "id": "g3", "method": "session/list"}).encode()
    d.send_raw(b"Content-Length: %d\r\n\r\n%s" % (len(third), third))
    assert d.result("g3")["sessions"] == []
    assert any(m.get("error", {}).get("code") == -32700 for m in d.messages)


def test_bad_content_length_values(spawn):
    d = spawn()
    d.send_raw(b"Content-Length: -5\r\n\r\n")
    d.wait_for(lambda: any(m.get("error", {}).get("code") == -32700 for m in d.messages))
    d.send_raw(b"Content-Length: abc\r\n\r\n")
    ok = json.dumps({"jsonrpc": "2.0", "id": "c7", "method": "session/list"}).encode()
    d.send_raw(b"Content-Length: %d\r\n\r\n%s" % (len(ok), ok))
    assert d.result("c7")["sessions"] == []


def test_frame_over_the_size_limit_is_32600(spawn):
    d = spawn(args=["--max-frame-bytes", "1000"])
    big = json.dumps(
        {"jsonrpc": "2.0", "id": "big", "method": "session/create", "params": {"title": "x" * 5000}}
    ).encode()
    d.send_raw(b"Content-Length: %d\r\n\r\n%s" % (len(big), big))
    d.wait_for(lambda: any(m.get("error", {}).get("code") == -32600 for m in d.messages))
    err = next(m for m in d.messages if m.get("error", {}).get("code") == -32600)["error"]
    assert "limit" in err["message"]
    assert d.call("session/list", {})["sessions"] == []


def test_batches_are_processed(spawn):
    d = spawn()
    batch = [
        {"jsonrpc": "2.0", "id": "b1", "method": "session/list"},
        {"jsonrpc": "2.0", "id": "b2", "method": "models/list", "params": {}},
    ]
    d.send(batch)
    assert d.result("b1")["sessions"] == []
    assert "models" in d.result("b2")


def test_invalid_request_shapes(spawn):
    d = spawn()
    d.send({"jsonrpc": "1.0", "id": "i11", "method": "session/list"})
    assert _error(d, "i11")["code"] == -32600
    d.send({"jsonrpc": "2.0", "id": "i12", "method": 42})
    assert _error(d, "i12")["code"] == -32600
    d.send_raw(frame([]))
    d.send_raw(frame("just a string"))
    # Responses to requests agentd never sent are ignored.
    d.send({"jsonrpc": "2.0", "id": "never-sent", "result": {"x": 1}})
    d.send({"jsonrpc": "2.0", "id": 99, "error": {"code": 1, "message": "x"}})
    assert d.call("session/list", {})["sessions"] == []


def test_duplicate_request_id_in_flight(spawn, model):
    d = spawn(model.base_url)
    sid = d.call("session/create", {})["session"]["id"]
    model.enqueue({"text": "slow answer", "delayMs": 200, "chunkSize": 2})
    d.request_async(
        "session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "hi"}]}, msg_id="dup"
    )
    d.wait_for(lambda: d.notifications("part/delta"))
    d.send({"jsonrpc": "2.0", "id": "dup", "method": "session/list"})
    d.wait_for(lambda: any(m.get("id") == "dup" and "error" in m for m in d.messages))
    d.call("session/abort", {"sessionId": sid})


def test_internal_errors_carry_no_traceback(spawn, tmp_path):
    d = spawn()
    sid = d.call("session/create", {})["session"]["id"]
    # Make the session's log unreadable as a directory: reading it fails inside a handler.
    log = tmp_path / "data" / "sessions" / sid / "log.jsonl"
    log.unlink()
    log.mkdir()
    resp = d.response(d.request_async("session/messages", {"sessionId": sid}))
    assert resp["error"]["code"] == -32603
    assert "Traceback" not in json.dumps(resp) and 'File "' not in json.dumps(resp)


def test_end_of_stdin_shuts_down_cleanly(spawn):
    d = spawn()
    d.call("session/create", {})
    d.close_stdin()
    assert d.wait_exit() == 0


def test_shutdown_then_exit_codes(spawn):
    d = spawn()
    assert d.call("shutdown") is None
    with pytest.raises(RpcError) as err:
        d.call("session/list", {})
    assert err.value.code == -32600
    d.notify("exit")
    assert d.wait_exit() == 0
    d2 = spawn()
    d2.notify("exit")  # exit without shutdown
    assert d2.wait_exit() == 1


def test_stdout_carries_only_frames_and_logs_go_to_stderr(spawn):
    d = spawn(args=["-vv"])
    d.call("session/create", {"title": "t"})
    d.close_stdin()
    d.wait_exit()
    # The reader thread parsed every byte of stdout as frames (it would have raised).
    # The process's exit does not wait for the reader to take the last frames: join it.
    d._reader.join(10)
    assert d.closed and not d._reader.is_alive()
    d._err.join(10)  # stderr is read by a thread of its own: let it reach the end
    assert any("agentd" in line for line in d.stderr_lines)


def test_slow_reader_does_not_block_the_daemon(spawn, tmp_path):
    """The editor stops reading stdout for a while: agentd keeps serving (writes are
    buffered in memory by the event loop, never a blocking write)."""
    import subprocess
    import sys

    from rpc_client import daemon_env

    env = {**os.environ, **daemon_env(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentd"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {}}
        proc.stdin.write(frame(init))
        # 2,000 requests whose answers (~1 MB) overflow the 64 KiB pipe while nobody reads.
        for i in range(1, 2001):
            proc.stdin.write(frame({"jsonrpc": "2.0", "id": i, "method": "models/list"}))
        proc.stdin.write(
            frame(
                {
                    "jsonrpc": "2.0",
                    "id": "last",
                    "method": "session/create",
                    "params": {"title": "after the flood"},
                }
            )
        )
        proc.stdin.flush()
        # Only now read: every response must be there (none lost, none an error), and
        # the create done.
        seen = []
        while True:
            header = proc.stdout.readline()
            length = int(header.split(b":")[1])
            proc.stdout.readline()
            msg = json.loads(proc.stdout.read(length))
            if "method" in msg:
                continue  # notifications (session/updated)
            assert "error" not in msg, msg
            seen.append(msg["id"])
            if msg.get("id") == "last":
                assert msg.get("result", {}).get("created") is True, msg
                break
        assert sorted(i for i in seen if i != "last") == list(range(0, 2001))
    finally:
        proc.kill()
        proc.wait()


def _initialize(msg_id, root, **caps):  # type: ignore[no-untyped-def]
    params = {"workspaceRoot": str(root), "capabilities": caps}
    return {"jsonrpc": "2.0", "id": msg_id, "method": "initialize", "params": params}


def test_a_second_initialize_is_refused_and_changes_nothing(spawn, tmp_path):
    """Whatever the order (pipelined behind the first, after `initialized`, in a batch,
    with invalid params, after shutdown), a second `initialize` is -32600 and the
    workspace root and capabilities stay those of the first."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()

    def root_of_a_new_session(d):  # type: ignore[no-untyped-def]
        return d.call("session/create", {})["session"]["workspaceRoot"]

    # Pipelined: both in one write, the second before the first is answered.
    d = spawn(initialize=False)
    d.send_raw(frame(_initialize("a", first)) + frame(_initialize("b", second)))
    assert d.result("a")["protocolVersion"] == 1
    assert _error(d, "b")["code"] == -32600
    assert root_of_a_new_session(d) == str(first)

    # After `initialized`, as a batch member, with params that would be invalid.
    d = spawn(workspace=first)
    invalid = {"jsonrpc": "2.0", "id": "d", "method": "initialize", "params": {"workspaceRoot": 5}}
    d.send_raw(frame([_initialize("c", second), invalid]))
    assert _error(d, "c")["code"] == -32600
    assert _error(d, "d")["code"] == -32600
    d.send({"jsonrpc": "2.0", "id": "e", "method": "initialize"})  # no params at all
    assert _error(d, "e")["code"] == -32600
    assert root_of_a_new_session(d) == str(first)

    # After shutdown.
    assert d.call("shutdown") is None
    d.send(_initialize("f", second))
    assert _error(d, "f")["code"] == -32600

    # A first initialize that was refused (-32602) did not take: the next one does.
    d = spawn(initialize=False)
    d.send({"jsonrpc": "2.0", "id": "g", "method": "initialize", "params": {"workspaceRoot": 5}})
    assert _error(d, "g")["code"] == -32602
    d.send(_initialize("h", second))
    assert d.result("h")["protocolVersion"] == 1
    assert root_of_a_new_session(d) == str(second)


def test_a_second_initialize_cannot_take_a_capability_back(spawn, model, tmp_path):
    """The first initialize declared permissionRequests; a second one without it is
    refused, so a write tool still asks the editor first."""
    d = spawn(model.base_url, initialize=False)
    d.initialize(workspaceRoot=str(tmp_path), capabilities={"permissionRequests": True})
    with pytest.raises(RpcError) as err:
        d.call("initialize", {"workspaceRoot": str(tmp_path), "capabilities": {}})
    assert err.value.code == -32600
    asked = []
    d.handlers["permission/request"] = lambda p: asked.append(p) or {"outcome": "allow_once"}
    sid = d.call("session/create", {})["session"]["id"]
    model.enqueue(
        {"toolCalls": [{"name": "write_file", "arguments": {"path": "a.txt", "content": "A"}}]},
        {"text": "done"},
    )
    d.call(
        "session/chat",
        {"sessionId": sid, "parts": [{"type": "text", "text": "w"}], "tools": ["write_file"]},
        timeout=30,
    )
    assert [a["tool"] for a in asked] == ["write_file"]
    assert (tmp_path / "a.txt").read_text() == "A"


# The junk that made agentd deaf after `initialize`, and its relatives.
_JUNK = [
    b"xyz",
    b"Content-Length: -5\r\n\r\n{}",
    b"Content-Length: abc\r\n\r\n{}",
    b"Content-Type: application/json\r\n\r\n{}",
    b"Content-Length: 5\r\n\r\n" + json.dumps({"jsonrpc": "2.0", "method": "x"}).encode(),
    b"Content-Length: 90\r\n\r\n" + json.dumps({"jsonrpc": "2.0", "method": "x"}).encode(),
    b"Content-Length: 99999999999999999999\r\n\r\n",
    b"Content-Length: +2\r\n\r\n{}",
    b"Content-Length: 0\r\n\r\n",
    b"Content-Length: 2\r\nX-Partial: abc",
    b"Content-Length",
    b"Content-Length: 12",
    b"\xff\xfe" * 100,
    b"Content-Length: " + b"7" * 20_000,
]


def test_any_junk_then_the_next_frame_is_answered(spawn):
    """After each kind of junk, glued straight to the next frame's header or written
    separately, the next frame is served; junk gets only id-null -32700/-32600."""
    d = spawn()
    for i, junk in enumerate(_JUNK):
        request = frame({"jsonrpc": "2.0", "id": f"glued{i}", "method": "session/list"})
        d.send_raw(junk + request)
        assert d.result(f"glued{i}")["sessions"] == [], junk
        d.send_raw(junk[: len(junk) // 2])
        d.send_raw(junk[len(junk) // 2 :])
        request = frame({"jsonrpc": "2.0", "id": f"split{i}", "method": "session/list"})
        d.send_raw(request[:9])
        d.send_raw(request[9:])
        assert d.result(f"split{i}")["sessions"] == [], junk
    errors = [m for m in d.messages if "error" in m]
    assert errors and all(m["id"] is None for m in errors)
    assert {m["error"]["code"] for m in errors} <= {-32700, -32600}


def test_content_length_text_inside_a_body_is_only_text(spawn):
    """A body whose strings hold `Content-Length` headers, written in pieces: it is one
    frame, and the text lands as it was sent."""
    d = spawn()
    title = 'Content-Length: 5\r\n\r\n{}x}Content-Length: 3\n\n"}'
    body = json.dumps(
        {"jsonrpc": "2.0", "id": "t", "method": "session/create", "params": {"title": title}},
        indent=1,
    ).encode()
    data = b"Content-Length: %d\r\n\r\n" % len(body) + body
    at = body.index(b"Content-Length") + 30
    d.send_raw(data[:at])
    d.send_raw(data[at:])
    assert d.result("t")["session"]["title"] == title
    assert not [m for m in d.messages if "error" in m]


def test_requests_cancelled_in_the_write_that_sent_them_are_answered_once(spawn):
    """Each request followed by its `$/cancelRequest` in one write, so the cancel is read
    before the request's handler has run, for three times as many requests as agentd
    handles at once: each is answered exactly once (a result or -32800), none keeps its
    slot, and the daemon keeps serving."""
    d = spawn()
    count = 3 * 32
    methods = ["session/list", "models/list", "session/get"]
    d.send_raw(
        b"".join(
            frame(
                {
                    "jsonrpc": "2.0",
                    "id": f"c{i}",
                    "method": methods[i % 3],
                    "params": {"sessionId": "ses_nope"} if i % 3 == 2 else {},
                }
            )
            + frame({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": f"c{i}"}})
            for i in range(count)
        )
    )

    def answers() -> list[dict]:
        return [m for m in d.messages if str(m.get("id", "")).startswith("c")]

    d.wait_for(lambda: len({m["id"] for m in answers()}) == count, timeout=60)
    assert d.call("session/list", {})["sessions"] == []
    assert sorted(m["id"] for m in answers()) == sorted(f"c{i}" for i in range(count))
    for m in answers():
        code = m.get("error", {}).get("code")
        assert "result" in m or code in (-32800, 1001), m


def test_cancel_request_ids_that_only_look_like_a_running_one_cancel_nothing(spawn, model):
    """A chat with id 0 runs while `$/cancelRequest` names false, 0.0, "0", [0], {"id": 0},
    nothing, or carries params that are not an object: none of them is that id, so the
    chat ends normally, and none gets an answer."""
    d = spawn(model.base_url)
    sid = d.call("session/create", {})["session"]["id"]
    model.enqueue({"text": "slow answer", "delayMs": 100, "chunkSize": 2})
    d.request_async(
        "session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "hi"}]}, msg_id=0
    )
    d.wait_for(lambda: d.notifications("part/delta"))
    before = len([m for m in d.messages if "id" in m])
    for params in [
        {"id": False},
        {"id": 0.0},
        {"id": -0.0},
        {"id": "0"},
        {"id": [0]},
        {"id": {"id": 0}},
        {"id": None},
        {},
        [{"id": 0}],
        "0",
        None,
    ]:
        d.send({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": params})
    d.send({"jsonrpc": "2.0", "method": "$/cancelRequest"})
    result = d.result(0, timeout=30)
    assert result["message"]["finishReason"] == "stop"
    assert "".join(p.get("text", "") for p in result["message"]["parts"]) == "slow answer"
    answered = [m for m in d.messages if "id" in m][before:]
    assert [m["id"] for m in answered] == [0], answered
