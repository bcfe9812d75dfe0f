"""The JSON-RPC layer over real pipes: lifecycle, framing, error codes, malformed input.
Each test here covers a way stock pygls misbehaves (see agentd/server.py)."""

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
    assert d.closed
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
