"""MCP servers as tool sources, end to end: the real daemon over real pipes, the
scripted model on loopback, and real MCP servers as subprocesses: `mcp-server-time`
(PyPI), `@modelcontextprotocol/server-everything` (npm, installed by `make dev`) and
tests/mcp/context_server.py (written with the SDK's own server API)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from helpers import (
    CONTEXT_SERVER,
    CTX_TOOLS,
    EVERYTHING,
    chat,
    ctx_server,
    new_session,
    offered,
    pid_alive,
    replay,
    run_notes,
    statuses,
    tool_parts,
    write_config,
)


def test_time_server_from_pypi_in_a_streamed_turn(spawn, model, tmp_path):
    env = write_config(
        tmp_path,
        {"time": {"command": sys.executable, "args": ["-m", "mcp_server_time"], "trust": "allow"}},
    )
    d = spawn(model.base_url, **env)
    sid = new_session(d)
    model.enqueue(
        {"toolCalls": [{"name": "time_get_current_time", "arguments": {"timezone": "Asia/Tokyo"}}]},
        {"text": "It is evening in Tokyo."},
    )
    result = chat(d, sid, "what time is it in Tokyo?")
    message = result["message"]
    [part] = tool_parts(message)
    assert part["tool"] == "time_get_current_time"
    assert part["state"]["status"] == "completed", part["state"]
    output = json.loads(part["state"]["output"])
    assert output["timezone"] == "Asia/Tokyo" and output["datetime"].endswith("+09:00")
    assert part["state"]["metadata"] == {"mcpServer": "time", "mcpTool": "get_current_time"}
    # The model saw the server's tools under their qualified names, with their schemas.
    body = model.requests()[0]["body"]
    spec = next(t for t in body["tools"] if t["function"]["name"] == "time_get_current_time")
    assert "timezone" in spec["function"]["parameters"]["properties"]
    assert {"time_get_current_time", "time_convert_time", "read_file"} <= set(offered(model, 0))
    # ... and the result went back to it.
    tool_msg = next(m for m in model.requests()[1]["body"]["messages"] if m["role"] == "tool")
    assert "+09:00" in tool_msg["content"]
    # The call streamed: pending, running, completed, in that order, then the text.
    snapshots = [
        n["params"]["part"]["state"]["status"]
        for n in run_notes(d, result["runId"])
        if n["method"] == "part/updated" and n["params"]["part"]["id"] == part["id"]
    ]
    assert snapshots[0] == "pending" and "running" in snapshots and snapshots[-1] == "completed"
    assert snapshots.index("running") < snapshots.index("completed")
    running = next(
        n["params"]["part"]["state"]
        for n in run_notes(d, result["runId"])
        if n["method"] == "part/updated"
        and n["params"]["part"].get("state", {}).get("status") == "running"
    )
    assert running["title"] == 'time: get_current_time {"timezone": "Asia/Tokyo"}'
    assert running["metadata"] == {"mcpServer": "time", "mcpTool": "get_current_time"}
    assert part["state"]["title"] == running["title"]
    parts = replay(run_notes(d, result["runId"]), message["id"])
    assert parts[-2]["text"] == "It is evening in Tokyo."
    assert statuses(d, "time")[:2] == ["starting", "ready"]
    listed = d.call("mcp/list", {})["servers"]
    assert listed[0]["name"] == "time" and listed[0]["state"] == "ready"
    assert {t["qualifiedName"] for t in listed[0]["tools"]} == {
        "time_get_current_time",
        "time_convert_time",
    }


def test_everything_server_from_npm(spawn, model, tmp_path):
    assert EVERYTHING.exists(), "run `make dev` (it installs the npm MCP servers the tests use)"
    env = write_config(
        tmp_path, {"everything": {"command": "node", "args": [str(EVERYTHING)], "trust": "allow"}}
    )
    d = spawn(model.base_url, **env)
    sid = new_session(d, accessToken="tok-secret-abcdef")
    model.enqueue(
        {
            "toolCalls": [
                {"name": "everything_echo", "arguments": {"message": "hello mcp"}},
                {"name": "everything_get-env", "arguments": {}},
                {"name": "everything_get-tiny-image", "arguments": {}},
                {"name": "everything_get-sum", "arguments": {"a": "x"}},
            ]
        },
        {"text": "done"},
    )
    message = chat(d, sid, "go")["message"]
    echo, env_part, image, bad = tool_parts(message)
    assert echo["state"]["status"] == "completed" and echo["state"]["output"] == "Echo: hello mcp"
    server_env = env_part["state"]["output"]
    state_dir = tmp_path / "state"
    assert f'"AGENTD_TOOL_CONTEXT_DIR": "{state_dir}/tool-context"' in server_env
    assert "tok-secret-abcdef" not in server_env
    assert image["state"]["status"] == "completed"
    assert (
        "[image (image/png" in image["state"]["output"] and "not shown]" in image["state"]["output"]
    )
    # Invalid arguments: an error the model reads, not a protocol error.
    assert bad["state"]["status"] == "error" and bad["state"]["error"]
    assert message["finishReason"] == "stop"
    # The server announces tools/list_changed right after it starts; the list is relisted.
    listed = d.call("mcp/list", {})["servers"][0]
    assert listed["state"] == "ready" and len(listed["tools"]) >= 10


def test_tool_context_reaches_the_server(spawn, model, tmp_path):
    d = spawn(model.base_url, **write_config(tmp_path, {"ctx": ctx_server()}))
    created = d.call(
        "session/create", {"accessToken": "tok-never-shared-123", "projectId": "proj-1"}
    )["session"]
    sid = created["id"]
    model.enqueue({"toolCalls": [{"name": "ctx_whoami", "arguments": {}}]}, {"text": "ok"})
    result = chat(d, sid, "who am I?")
    [part] = tool_parts(result["message"])
    assert part["state"]["status"] == "completed", part["state"]
    found = json.loads(part["state"]["output"])
    meta = found["meta"]
    assert meta["sessionScopeKey"] == created["sessionScopeKey"]
    assert meta["sessionId"] == sid and meta["runId"] == result["runId"]
    assert found["contextDir"] == str(tmp_path / "state" / "tool-context")
    context = found["context"]
    assert context["runId"] == result["runId"] and context["sessionId"] == sid
    assert context["projectId"] == "proj-1"
    assert "tok-never-shared-123" not in part["state"]["output"]
    assert "accessToken" not in context


def test_server_crash_mid_call_is_a_tool_error_and_the_server_restarts(spawn, model, tmp_path):
    starts = tmp_path / "starts"
    d = spawn(
        model.base_url,
        args=["-v"],
        **write_config(tmp_path, {"ctx": ctx_server(env={"STARTS_FILE": str(starts)})}),
    )
    sid = new_session(d)
    model.enqueue({"toolCalls": [{"name": "ctx_crash", "arguments": {}}]}, {"text": "hm"})
    message = chat(d, sid, "crash")["message"]
    [part] = tool_parts(message)
    assert part["state"]["status"] == "error"
    assert (
        "the server exited" in part["state"]["error"]
        and "during the call" in part["state"]["error"]
    )
    assert message["finishReason"] == "stop"
    # Reported and restarted with backoff: failed, then starting, then ready again.
    d.wait_for(lambda: statuses(d, "ctx")[-3:] == ["failed", "starting", "ready"], timeout=30)
    failed = next(
        n["params"]["server"]
        for n in d.notifications("mcp/status")
        if n["params"]["server"]["state"] == "failed"
    )
    assert "crashing on purpose" in failed["error"]
    assert len(starts.read_text().split()) == 2
    model.enqueue(
        {"toolCalls": [{"name": "ctx_echo", "arguments": {"text": "back"}}]}, {"text": "ok"}
    )
    [again] = tool_parts(chat(d, sid, "again")["message"])
    assert again["state"]["status"] == "completed" and again["state"]["output"] == "back"
    # Its stderr went to agentd's log (stderr), never to stdout (which stays JSON-RPC).
    assert any("[ctx] context_server: crashing on purpose" in line for line in d.stderr_lines)


def test_a_call_past_the_timeout_is_a_tool_error(spawn, model, tmp_path):
    d = spawn(model.base_url, **write_config(tmp_path, {"ctx": ctx_server(timeout=1)}))
    sid = new_session(d)
    model.enqueue(
        {"toolCalls": [{"name": "ctx_hang", "arguments": {"ignore_cancel": True}}]},
        {"text": "moving on"},
    )
    message = chat(d, sid, "hang")["message"]
    [part] = tool_parts(message)
    assert part["state"]["status"] == "error"
    assert part["state"]["error"] == "ctx: hang did not answer within 1 s"
    assert message["finishReason"] == "stop"
    assert d.call("mcp/list", {})["servers"][0]["state"] == "ready"


def test_abort_during_a_call_does_not_wait_for_the_server(spawn, model, tmp_path):
    d = spawn(model.base_url, **write_config(tmp_path, {"ctx": ctx_server()}))
    sid = new_session(d, title="t")  # no title request to take a queued answer
    model.enqueue({"toolCalls": [{"name": "ctx_hang", "arguments": {"ignore_cancel": True}}]})
    chat_id = d.request_async(
        "session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "hang"}]}
    )
    d.wait_for(
        lambda: any(
            n["params"]["part"].get("tool") == "ctx_hang"
            and n["params"]["part"]["state"]["status"] == "running"
            for n in d.notifications("part/updated")
        )
    )
    assert d.call("session/abort", {"sessionId": sid})["aborted"] is True
    message = d.result(chat_id, timeout=10)["message"]
    assert message["finishReason"] == "aborted"
    [part] = tool_parts(message)
    assert part["state"]["status"] == "error" and part["state"]["error"] == "aborted"
    # The server ignored the cancellation and is still busy sleeping, yet it is usable.
    model.enqueue(
        {"toolCalls": [{"name": "ctx_echo", "arguments": {"text": "still here"}}]}, {"text": "ok"}
    )
    [again] = tool_parts(chat(d, sid, "echo")["message"])
    assert again["state"]["output"] == "still here"


def test_abort_sends_the_mcp_cancellation(spawn, model, tmp_path):
    d = spawn(model.base_url, args=["-v"], **write_config(tmp_path, {"ctx": ctx_server()}))
    sid = new_session(d, title="t")
    model.enqueue({"toolCalls": [{"name": "ctx_hang", "arguments": {}}]})
    chat_id = d.request_async(
        "session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "hang"}]}
    )
    d.wait_for(
        lambda: any(
            n["params"]["part"].get("state", {}).get("status") == "running"
            for n in d.notifications("part/updated")
        )
    )
    d.call("session/abort", {"sessionId": sid})
    assert d.result(chat_id, timeout=10)["message"]["finishReason"] == "aborted"
    # The server heard notifications/cancelled and stopped the call (its stderr is in
    # agentd's log).
    d.wait_for(
        lambda: any(
            "[ctx] context_server: hang cancelled by the client" in line for line in d.stderr_lines
        )
    )


def test_tools_list_changed_refreshes_the_tools(spawn, model, tmp_path):
    d = spawn(model.base_url, **write_config(tmp_path, {"ctx": ctx_server()}))
    # (A title: else the title, written after the first answer, may take a queued answer.)
    sid = new_session(d, title="t")
    model.enqueue(
        {"toolCalls": [{"name": "ctx_add_tool", "arguments": {"name": "fresh"}}]}, {"text": "added"}
    )
    chat(d, sid, "add")
    assert "ctx_fresh" not in offered(model, 0)
    d.wait_for(
        lambda: any(
            n["params"]["server"].get("toolCount") == CTX_TOOLS + 1
            for n in d.notifications("mcp/status")
        )
    )
    model.enqueue({"toolCalls": [{"name": "ctx_fresh", "arguments": {}}]}, {"text": "ok"})
    [part] = tool_parts(chat(d, sid, "use it")["message"])
    assert "ctx_fresh" in offered(model, 2)
    assert part["state"]["output"] == "fresh works"
    names = [t["name"] for t in d.call("mcp/list", {})["servers"][0]["tools"]]
    assert "fresh" in names


def test_session_only_server(spawn, model, tmp_path):
    d = spawn(model.base_url)
    mine = new_session(
        d,
        mcpServers=[
            {
                "name": "mine",
                "command": sys.executable,
                "args": [str(CONTEXT_SERVER)],
                "trust": "allow",
            }
        ],
    )
    other = new_session(d)
    assert d.call("mcp/list", {})["servers"] == []
    assert d.call("mcp/list", {"sessionId": other})["servers"] == []
    [listed] = d.call("mcp/list", {"sessionId": mine})["servers"]
    assert listed["state"] == "stopped" and listed["sessionId"] == mine
    model.enqueue(
        {"toolCalls": [{"name": "mine_echo", "arguments": {"text": "only mine"}}]}, {"text": "ok"}
    )
    [part] = tool_parts(chat(d, mine, "go")["message"])
    assert part["state"]["output"] == "only mine"
    chat(d, other, "plain")
    assert "mine_echo" in offered(model, 0) and "mine_echo" not in offered(model, -1)
    status = d.notifications("mcp/status")[-1]["params"]["server"]
    assert status == {"name": "mine", "state": "ready", "sessionId": mine, "toolCount": CTX_TOOLS}
    # Its definition (which may carry secrets in env) is never written to disk.
    data = tmp_path / "data"
    assert not any(
        "context_server.py" in p.read_text(errors="replace") for p in data.rglob("*.jsonl")
    )
    # session/update replaces the session's servers; [] removes them.
    d.call("session/update", {"sessionId": mine, "mcpServers": []})
    assert d.call("mcp/list", {"sessionId": mine})["servers"] == []


def test_trust_ask_goes_through_permission_request(spawn, model, tmp_path):
    d = spawn(
        model.base_url,
        initialize=False,
        **write_config(tmp_path, {"ctx": {**ctx_server(), "trust": "ask"}}),
    )
    d.initialize(workspaceRoot=str(tmp_path), capabilities={"permissionRequests": True})
    asked = []

    def answer(params):  # type: ignore[no-untyped-def]
        asked.append(params)
        return {"outcome": "reject_once" if params["input"]["text"] == "no" else "allow_always"}

    d.handlers["permission/request"] = answer
    sid = new_session(d)
    calls = [
        {"name": "ctx_echo", "arguments": {"text": "no"}},
        {"name": "ctx_echo", "arguments": {"text": "yes"}},
        {"name": "ctx_echo", "arguments": {"text": "again"}},
    ]
    model.enqueue({"toolCalls": calls}, {"text": "ok"})
    refused, allowed, remembered = tool_parts(chat(d, sid, "echo")["message"])
    assert refused["state"]["status"] == "error" and "refused" in refused["state"]["error"]
    assert allowed["state"]["output"] == "yes" and remembered["state"]["output"] == "again"
    # allow_always covers the tool whatever its input: two questions, not three.
    assert [a["tool"] for a in asked] == ["ctx_echo", "ctx_echo"]
    assert asked[0]["sessionId"] == sid and asked[0]["callId"] == refused["callId"]
    assert asked[0]["mcpServer"] == "ctx" and asked[0]["mcpTool"] == "echo"
    assert asked[0]["title"] == 'ctx: echo {"text": "no"}'


def test_trust_ask_without_the_capability_is_refused(spawn, model, tmp_path):
    d = spawn(model.base_url, **write_config(tmp_path, {"ctx": {**ctx_server(), "trust": "ask"}}))
    sid = new_session(d)
    model.enqueue({"toolCalls": [{"name": "ctx_echo", "arguments": {"text": "x"}}]}, {"text": "ok"})
    [part] = tool_parts(chat(d, sid, "echo")["message"])
    assert part["state"]["status"] == "error" and "permission" in part["state"]["error"]


def test_allow_list_disabled_servers_and_tool_patterns(spawn, model, tmp_path):
    env = write_config(
        tmp_path,
        {
            "ctx": ctx_server(tools=["echo", "whoami"]),
            "off": {**ctx_server(), "enabled": False},
        },
    )
    d = spawn(model.base_url, **env)
    sid = new_session(d)
    chat(d, sid, "hi")
    names = offered(model)
    assert "ctx_echo" in names and "ctx_whoami" in names and "ctx_crash" not in names
    assert not any(n.startswith("off_") for n in names)
    # `tools` may name MCP tools, with wildcards; naming none of a server's tools leaves it unused.
    chat(d, sid, "hi", tools=["read_file", "ctx_e*"])
    assert offered(model) == ["read_file", "ctx_echo"]
    chat(d, sid, "hi", tools=["grep"])
    assert offered(model) == ["grep"]
    servers = {s["name"]: s for s in d.call("mcp/list", {})["servers"]}
    assert servers["off"]["state"] == "stopped" and servers["off"]["enabled"] is False
    assert servers["ctx"]["enabled"] is True
    allowed = {t["name"]: t["allowed"] for t in servers["ctx"]["tools"]}
    assert allowed["echo"] is True and allowed["crash"] is False


def test_a_server_that_cannot_start_is_reported_and_the_run_goes_on(spawn, model, tmp_path):
    env = write_config(tmp_path, {"broken": {"command": "agentd-no-such-server", "trust": "allow"}})
    d = spawn(model.base_url, **env)
    [server] = d.call("mcp/list", {"connect": True})["servers"]
    assert server["state"] == "failed"
    assert server["error"] == "cannot start 'agentd-no-such-server': command not found"
    sid = new_session(d)
    message = chat(d, sid, "hello")["message"]
    assert message["finishReason"] == "stop"
    assert not any(n.startswith("broken_") for n in offered(model))


@pytest.mark.unshared
def test_shutdown_stops_every_server(spawn, model, tmp_path):
    starts = tmp_path / "starts"
    env = write_config(
        tmp_path,
        {
            "a": ctx_server(env={"STARTS_FILE": str(starts)}),
            "b": ctx_server(env={"STARTS_FILE": str(starts)}),
        },
    )
    d = spawn(model.base_url, **env)
    servers = d.call("mcp/list", {"connect": True}, timeout=30)["servers"]
    assert [s["state"] for s in servers] == ["ready", "ready"]
    pids = [int(p) for p in starts.read_text().split()]
    assert len(pids) == 2 and all(pid_alive(p) for p in pids)
    d.stop()
    assert d.proc.returncode == 0
    assert not any(pid_alive(p) for p in pids)


def test_invalid_mcp_servers_are_invalid_params(spawn):
    d = spawn()
    from rpc_client import RpcError

    cases = [
        ([{"name": "x"}], "either command"),
        ([{"name": "x", "command": "a", "url": "http://h"}], "either command"),
        ([{"name": "x", "url": "ftp://h"}], "url"),
        ([{"name": "x", "command": "a", "trust": "never"}], "trust"),
        ([{"name": "x", "command": "a"}, {"name": "x", "command": "b"}], "given twice"),
        ([{"name": "", "command": "a"}], "name"),
    ]
    for servers, words in cases:
        with pytest.raises(RpcError) as err:
            d.call("session/create", {"mcpServers": servers})
        assert err.value.code == -32602 and words in err.value.message, err.value.message
        assert "mcpServers[" in err.value.message
    with pytest.raises(RpcError) as err:
        d.call("mcp/list", {"sessionId": "ses_unknown"})
    assert err.value.code == 1001


def test_config_problems_are_reported_and_the_server_ignored(spawn, tmp_path):
    env = write_config(tmp_path, {"bad": {"command": "x", "url": "http://y"}, "ok": ctx_server()})
    d = spawn(args=["-v"], **env)
    names = [s["name"] for s in d.call("mcp/list", {})["servers"]]
    assert names == ["ok"]
    d.wait_for(lambda: any("mcp_servers.bad" in line for line in d.stderr_lines))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def everything_http():  # type: ignore[no-untyped-def]
    """server-everything over streamable HTTP on a free loopback port."""
    port = _free_port()
    proc = subprocess.Popen(
        ["node", str(EVERYTHING), "streamableHttp"],
        env={**os.environ, "PORT": str(port)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(proc.stdout.read().decode()) from None
            time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/mcp", proc
    proc.terminate()
    proc.wait(10)


def test_streamable_http_server(spawn, model, tmp_path, everything_http):
    url, server = everything_http
    d = spawn(model.base_url)
    sid = new_session(
        d, mcpServers=[{"name": "web", "url": url, "trust": "allow", "headers": {"X-Test": "1"}}]
    )
    echo = {"name": "web_echo", "arguments": {"message": "over http"}}
    model.enqueue({"toolCalls": [echo]}, {"text": "ok"})
    [part] = tool_parts(chat(d, sid, "echo")["message"])
    assert part["state"]["status"] == "completed" and part["state"]["output"] == "Echo: over http"
    [listed] = d.call("mcp/list", {"sessionId": sid})["servers"]
    assert listed["transport"] == "http" and listed["state"] == "ready"
    # The server goes away: the call is a tool error, and agentd notices and reconnects.
    server.kill()
    server.wait(10)
    model.enqueue({"toolCalls": [echo]}, {"text": "ok"})
    [lost] = tool_parts(chat(d, sid, "echo")["message"])
    assert lost["state"]["status"] == "error"
    assert lost["state"]["error"] == "MCP server 'web': the connection was lost during the call"
    d.wait_for(lambda: statuses(d, "web")[-2:] == ["starting", "failed"], timeout=30)


def test_qualified_names_are_valid_for_every_provider():
    from agentd.mcp_servers import qualified_name

    assert qualified_name("time", "get_current_time") == "time_get_current_time"
    assert qualified_name("my server", "do.it/now") == "my_server_do_it_now"
    long_a = qualified_name("s" * 40, "t" * 40 + "a")
    long_b = qualified_name("s" * 40, "t" * 40 + "b")
    assert len(long_a) == 64 and len(long_b) == 64 and long_a != long_b
    assert all(c.isalnum() or c in "_-" for c in long_a)


def test_new_user_asks_agentd_chat_the_time_in_tokyo(tmp_path):
    """The README's walk-through: mcp-server-time in the config file, `agentd chat`
    offline; the scripted model calls the tool, the user allows it, the call and its
    result stream to the terminal."""
    from rpc_client import daemon_env

    config = write_config(tmp_path, {"time": {"command": "mcp-server-time"}})
    out = subprocess.run(
        [sys.executable, "-m", "agentd", "chat", "what time is it in Tokyo?"],
        input="y\n",
        capture_output=True,
        text=True,
        env={**os.environ, **daemon_env(tmp_path), **config},
        timeout=90,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout
    # (The question is on stderr, as `rm -i` asks: seen when the answer goes to a file.)
    assert 'allow time: get_current_time {"timezone": "Asia/Tokyo"}?' in out.stderr
    assert "[tool time: get_current_time" in lines and "running..." in lines
    assert '"timezone": "Asia/Tokyo"' in lines and "+09:00" in lines
    assert "Tool time_get_current_time returned:" in lines


def test_config_tables_env_references_and_problems(tmp_path):
    from agentd.config import load_config

    path = tmp_path / "config.toml"
    path.write_text(
        """
[mcp_servers.gh]
url = "https://example.invalid/mcp"
headers = { Authorization = "Bearer ${GH_TOKEN}" }
tools = ["get_issue"]
timeout = 5
trust = "allow"

[mcpServers.pasted]
command = "npx"
args = ["-y", "some-server"]
env = { KEY = "${MISSING_VAR}" }

[mcp_servers.wrong]
command = "x"
tools = "get_issue"
"""
    )
    config = load_config({"GH_TOKEN": "ghp-secret-value"}, path=path)
    gh, pasted = config.mcp_servers
    assert gh.headers == {"Authorization": "Bearer ghp-secret-value"}
    assert gh.tools == ("get_issue",) and gh.timeout_s == 5.0 and gh.trust == "allow"
    assert pasted.command == "npx" and pasted.args == ("-y", "some-server")
    assert pasted.trust == "ask" and pasted.env == {"KEY": ""}
    assert (
        "mcpServers.pasted.env: ${MISSING_VAR} is not set in agentd's environment"
        in config.problems
    )
    assert (
        'mcp_servers.wrong.tools: expected a list of strings, got string "get_issue"; '
        "server ignored" in config.problems
    )
    # Secrets in headers and env stay out of reprs (and so out of logs).
    assert "ghp-secret-value" not in repr(config)


def test_mcp_secrets_stay_out_of_files_and_logs(spawn, model, tmp_path):
    env_secret, header_secret = "mcp-SECRET-ENV-99", "mcp-SECRET-HEADER-42"
    log_file = tmp_path / "debug.log"
    config = write_config(
        tmp_path,
        {
            "ctx": ctx_server(env={"SERVICE_TOKEN": "${SERVICE_TOKEN}"}),
            "web": {"url": "http://127.0.0.1:9/mcp", "headers": {"Authorization": header_secret}},
        },
    )
    d = spawn(
        model.base_url,
        args=["-vv", "--log-file", str(log_file)],
        SERVICE_TOKEN=env_secret,
        **config,
    )
    sid = new_session(
        d,
        mcpServers=[{**ctx_server(env={"OTHER_TOKEN": env_secret}), "name": "mine"}],
    )
    model.enqueue(
        {
            "toolCalls": [
                {"name": "ctx_whoami", "arguments": {}},
                {"name": "mine_echo", "arguments": {"text": "x"}},
            ]
        },
        {"text": "done"},
    )
    message = chat(d, sid, "go")["message"]
    assert [p["state"]["status"] for p in tool_parts(message)] == ["completed", "completed"]
    d.call("mcp/list", {"sessionId": sid, "connect": True}, timeout=40)
    d.stop()
    for root in (tmp_path / "data", tmp_path / "state"):
        for path in root.rglob("*"):
            if path.is_file():
                blob = path.read_bytes()
                assert env_secret.encode() not in blob and header_secret.encode() not in blob, path
    logs = log_file.read_text() + "".join(d.stderr_lines)
    assert "[ctx]" in logs  # the servers' stderr is there ...
    assert env_secret not in logs and header_secret not in logs  # ... the secrets are not
    assert all(
        env_secret not in json.dumps(m) and header_secret not in json.dumps(m) for m in d.messages
    )


def test_the_daemon_does_not_import_the_mcp_sdk_until_a_server_starts():
    """The SDK takes about a second to import: startup must not pay for it."""
    code = (
        "import sys, agentd.server, agentd.session, agentd.tool_calls, agentd.runs\n"
        "assert not [m for m in sys.modules if m == 'mcp' or m.startswith(('mcp.', 'mcp_types'))]\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_the_background_import_covers_what_a_server_start_imports():
    """A server's first start must not import the SDK on the event loop: everything
    mcp_servers imports when connecting is already loaded by `import_sdk` (run in a
    thread)."""
    code = (
        "import sys\n"
        "from agentd.mcp_servers import import_sdk\n"
        "import_sdk()\n"
        "before = set(sys.modules)\n"
        "import anyio, httpx2\n"
        "from mcp.client.session import ClientSession\n"
        "from mcp.client.stdio import get_default_environment\n"
        "from mcp.client.streamable_http import streamable_http_client\n"
        "from mcp.shared.exceptions import MCPError\n"
        "from mcp.shared.message import SessionMessage\n"
        "from mcp_types import CONNECTION_CLOSED, INTERNAL_ERROR, ErrorData, Implementation\n"
        "from mcp_types import JSONRPCError, JSONRPCNotification, JSONRPCRequest\n"
        "from mcp_types import JSONRPCResponse, PaginatedRequestParams, jsonrpc_message_adapter\n"
        "assert set(sys.modules) == before, sorted(set(sys.modules) - before)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.unshared
def test_servers_end_when_the_daemon_is_killed(spawn, model, tmp_path):
    """kill -9 of agentd: its stdio servers see their stdin close and exit."""
    starts = tmp_path / "starts"
    d = spawn(
        model.base_url,
        **write_config(tmp_path, {"ctx": ctx_server(env={"STARTS_FILE": str(starts)})}),
    )
    d.call("mcp/list", {"connect": True}, timeout=30)
    [pid] = [int(p) for p in starts.read_text().split()]
    assert pid_alive(pid)
    d.proc.kill()
    d.proc.wait(10)
    deadline = time.monotonic() + 20
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(pid)


def test_a_server_that_never_answers_initialize(spawn, model, tmp_path):
    """Startup is bounded by startup_timeout; an abort while a run waits for a server
    ends the run at once."""
    env = write_config(
        tmp_path,
        {
            "mute": {"command": "sleep", "args": ["120"], "startup_timeout": 1},
            "slow": {"command": "sleep", "args": ["120"], "startup_timeout": 60},
        },
    )
    d = spawn(model.base_url, **env)
    sid = new_session(d, title="no title request")
    chat_id = d.request_async(
        "session/chat",
        {"sessionId": sid, "parts": [{"type": "text", "text": "hi"}], "tools": ["slow_*"]},
    )
    d.wait_for(lambda: statuses(d, "slow") == ["starting"])
    assert d.call("session/abort", {"sessionId": sid})["aborted"] is True
    message = d.result(chat_id, timeout=10)["message"]
    assert message["finishReason"] == "aborted" and model.requests() == []
    message = chat(d, sid, "hello", tools=["read_file", "mute_*"])["message"]
    assert message["finishReason"] == "stop"
    assert offered(model) == ["read_file"]
    servers = {s["name"]: s for s in d.call("mcp/list", {})["servers"]}
    assert servers["mute"]["state"] == "failed"
    assert servers["mute"]["error"] == "no answer to initialize within 1 s"


def test_a_long_call_reports_its_progress(spawn, model, tmp_path):
    """server-everything's long-running operation sends progress notifications: they
    reach the editor in the running tool part, throttled, and are not written to disk."""
    env = write_config(
        tmp_path, {"everything": {"command": "node", "args": [str(EVERYTHING)], "trust": "allow"}}
    )
    d = spawn(model.base_url, **env)
    sid = new_session(d, title="t")
    call = {
        "name": "everything_trigger-long-running-operation",
        "arguments": {"duration": 1, "steps": 5},
    }
    model.enqueue({"toolCalls": [call]}, {"text": "done"})
    result = chat(d, sid, "go")
    [part] = tool_parts(result["message"])
    assert part["state"]["status"] == "completed", part["state"]
    progress = [
        n["params"]["part"]["state"]["metadata"]["progress"]
        for n in run_notes(d, result["runId"])
        if n["method"] == "part/updated"
        and n["params"]["part"]["id"] == part["id"]
        and "progress" in (n["params"]["part"]["state"].get("metadata") or {})
    ]
    assert progress and progress[-1]["total"] == 5
    assert [p["progress"] for p in progress] == sorted(p["progress"] for p in progress)
    assert "progress" not in part["state"]["metadata"]
    log = next((tmp_path / "data" / "sessions").rglob("*.jsonl")).read_text()
    assert '"progress"' not in log
