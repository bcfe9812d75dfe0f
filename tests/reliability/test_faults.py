"""Crash loops, concurrency, abort storms, upstream faults and a security pass, bounded
for CI (`AGENTD_RELIABILITY_SCALE` multiplies the counts; bench/soak.py runs the long
versions)."""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import threading
from pathlib import Path

import pytest
from helpers import text_of
from rpc_client import Daemon, RpcError, daemon_env

pytestmark = pytest.mark.reliability

SCALE = float(os.environ.get("AGENTD_RELIABILITY_SCALE", "1"))


def n(count: int) -> int:
    return max(1, int(count * SCALE))


def check_storage(tmp: Path, base_url: str) -> dict:
    """Invariants after any crash: every log readable, every finished message intact,
    no run left open, no stale tool-context file, no session busy."""
    d = Daemon(daemon_env(tmp, base_url))
    try:
        d.initialize(workspaceRoot=str(tmp))
        sessions = d.call("session/list", {"limit": 500})["sessions"]
        counts = {"sessions": len(sessions), "messages": 0, "interrupted": 0}
        for s in sessions:
            assert s["status"] == "idle", s
            msgs = d.call("session/messages", {"sessionId": s["id"], "limit": 10_000})["messages"]
            for m in msgs:
                counts["messages"] += 1
                if m["role"] == "assistant":
                    assert m.get("finishReason"), m
                    assert m["time"].get("completed"), m
                    counts["interrupted"] += m["finishReason"] == "interrupted"
                    for p in m["parts"]:
                        if p["type"] == "tool":
                            assert p["state"]["status"] in ("completed", "error"), p
        ctx_dir = tmp / "state" / "tool-context"
        assert not [f for f in os.listdir(ctx_dir) if f.endswith(".json")]
        return counts
    finally:
        d.stop()


@pytest.mark.unshared
def test_crash_loop_kill_9_during_streaming_turns_with_tools(tmp_path, model):
    rng = random.Random(1234)
    ws = tmp_path
    (ws / "a.txt").write_text("alpha\n")
    totals = {"kills": 0, "interrupted": 0}
    for _ in range(n(6)):
        d = Daemon(daemon_env(tmp_path, model.base_url))
        d.initialize(workspaceRoot=str(ws))
        sid = d.call("session/create", {"title": "crash"})["session"]["id"]
        model.reset()
        model.enqueue(
            {"toolCalls": [{"name": "read_file", "arguments": {"path": "a.txt"}}], "delayMs": 5},
            {"text": " ".join(f"w{i}" for i in range(300)), "delayMs": 3},
        )
        d.request_async(
            "session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "go"}]}
        )
        target = rng.randint(1, 400)
        d.wait_for(lambda t=target, d=d: len(d.notifications()) >= min(t, 40), timeout=30)
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        totals["kills"] += 1
        counts = check_storage(tmp_path, model.base_url)
        totals["interrupted"] = counts["interrupted"]
    print(f"\ncrash loop: {totals}")
    assert totals["interrupted"] >= 1


def test_truncated_log_line_and_corrupt_catalog(tmp_path, model):
    d = Daemon(daemon_env(tmp_path, model.base_url))
    d.initialize(workspaceRoot=str(tmp_path))
    sid = d.call("session/create", {"title": "t"})["session"]["id"]
    model.enqueue({"text": "complete answer"})
    d.call("session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "x"}]})
    d.stop()
    log = tmp_path / "data" / "sessions" / sid / "log.jsonl"
    data = log.read_bytes()
    log.write_bytes(data + data.splitlines(keepends=True)[-1][:17])  # a torn copy
    (tmp_path / "data" / "catalog.sqlite3").write_bytes(b"\x00" * 4096)
    counts = check_storage(tmp_path, model.base_url)
    assert counts["messages"] == 2


@pytest.mark.parametrize("count", [2, 4])
def test_daemons_chat_create_and_delete_concurrently(tmp_path, model, count):
    daemons = [Daemon(daemon_env(tmp_path, model.base_url)) for _ in range(count)]
    for d in daemons:
        d.initialize(workspaceRoot=str(tmp_path))
    errors: list[BaseException] = []
    kept: list[str] = []
    lock = threading.Lock()

    def worker(d: Daemon, k: int) -> None:
        try:
            for i in range(n(8)):
                sid = d.call("session/create", {"title": f"{k}-{i}"})["session"]["id"]
                res = d.call(
                    "session/chat",
                    {"sessionId": sid, "parts": [{"type": "text", "text": f"hi {k} {i}"}]},
                )
                assert (
                    text_of(res["message"])
                    == f"You said: hi {k} {i}"
                    + text_of(res["message"])[len(f"You said: hi {k} {i}") :]
                )
                if i % 2:
                    assert d.call("session/delete", {"sessionId": sid}) == {"deleted": True}
                else:
                    with lock:
                        kept.append(sid)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(d, k)) for k, d in enumerate(daemons)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for d in daemons:
        d.stop()
    assert not errors, (errors, [line for d in daemons for line in d.stderr_lines][-40:])
    counts = check_storage(tmp_path, model.base_url)
    assert counts["sessions"] == len(kept)
    assert counts["messages"] == 2 * len(kept)


def test_abort_storm(tmp_path, model):
    d = Daemon(daemon_env(tmp_path, model.base_url))
    d.initialize(workspaceRoot=str(tmp_path))
    sid = d.call("session/create", {"title": "storm"})["session"]["id"]
    rng = random.Random(7)
    model.enqueue({"text": " ".join(["tok"] * 200), "delayMs": 2, "repeat": 10_000})
    pairs = n(60)
    for _ in range(pairs):
        chat = d.request_async(
            "session/chat",
            {"sessionId": sid, "onBusy": "queue", "parts": [{"type": "text", "text": "x"}]},
        )
        if rng.random() < 0.5:
            d.wait_for(
                lambda c=len(d.notifications("part/delta")), chat=chat: (
                    len(d.notifications("part/delta")) > c or chat in d.responses
                ),
                timeout=30,
            )
        d.call("session/abort", {"sessionId": sid})
        resp = d.response(chat, timeout=30)
        assert "result" in resp or resp["error"]["code"] == -32800
    pid = d.proc.pid
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    d.stop()
    counts = check_storage(tmp_path, model.base_url)
    assert counts["messages"] <= 2 * pairs
    assert fds < 64, f"{fds} open descriptors after {pairs} aborts"


@pytest.mark.parametrize(
    "spec,name",
    [
        ({"error": {"status": 403}}, "ProviderAuthError"),
        ({"error": {"status": 502}, "repeat": 10}, "ProviderUnavailable"),
        ({"error": {"status": 429}, "repeat": 10}, "ProviderRateLimited"),
        (
            {
                "toolCalls": [{"name": "read_file", "arguments": '{"path": "a.t'}],
                "dropAfterChunks": 3,
            },
            None,
        ),
        ({"fixture": "openai-error-429-insufficient-quota.http"}, "ProviderRateLimited"),
    ],
)
def test_upstream_faults_leave_the_session_usable(tmp_path, model, spec, name):
    d = Daemon(daemon_env(tmp_path, model.base_url))
    d.initialize(workspaceRoot=str(tmp_path))
    try:
        sid = d.call("session/create", {"title": "t"})["session"]["id"]
        model.enqueue(spec)
        msg = d.call(
            "session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "x"}]}, timeout=60
        )["message"]
        assert msg["finishReason"] == "error"
        if name:
            assert msg["error"]["name"] == name
        assert all(p["state"]["status"] == "error" for p in msg["parts"] if p["type"] == "tool")
        model.reset()
        ok = d.call("session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "y"}]})
        assert ok["message"]["finishReason"] == "stop"
        history = model.requests()[-1]["body"]["messages"]
        # A tool call cut mid-arguments never reaches history without a result.
        for i, m in enumerate(history):
            for call in m.get("tool_calls") or []:
                assert any(h.get("tool_call_id") == call["id"] for h in history[i:])
    finally:
        d.stop()


def test_a_stream_that_stalls_forever_times_out(tmp_path, model):
    config = tmp_path / "config.toml"
    config.write_text(f"""
default_model = "stally"
[providers.local]
base_url = "{model.base_url}"
stall_timeout = 1
max_attempts = 1
[models.stally]
provider = "local"
name = "scripted"
""")
    d = Daemon(daemon_env(tmp_path, None, AGENTD_CONFIG=str(config)))
    d.initialize(workspaceRoot=str(tmp_path))
    try:
        sid = d.call("session/create", {"title": "t"})["session"]["id"]
        model.enqueue({"text": "one two three four", "stallAfterChunks": 2})
        msg = d.call(
            "session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "x"}]}, timeout=60
        )["message"]
        assert msg["finishReason"] == "error" and msg["error"]["name"] == "ProviderTimeout"
        assert text_of(msg) == "one two "
        assert model.wait_response_end(0, timeout=10) == "client_closed"
    finally:
        d.stop()


def test_a_huge_single_chunk_arrives_whole(tmp_path, model):
    d = Daemon(daemon_env(tmp_path, model.base_url))
    d.initialize(workspaceRoot=str(tmp_path))
    try:
        sid = d.call("session/create", {"title": "t"})["session"]["id"]
        big = "abcdefgh" * 250_000  # 2 MB in one SSE event
        model.enqueue({"text": big, "chunkSize": len(big)})
        msg = d.call(
            "session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "x"}]}, timeout=60
        )["message"]
        assert msg["finishReason"] == "stop" and text_of(msg) == big
        stored = d.call("session/messages", {"sessionId": sid})["messages"][-1]
        assert text_of(stored) == big
    finally:
        d.stop()


def test_connection_refused_is_provider_unavailable(tmp_path):
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    d = Daemon(daemon_env(tmp_path, f"http://127.0.0.1:{port}/v1"))
    d.initialize(workspaceRoot=str(tmp_path))
    try:
        sid = d.call("session/create", {"title": "t"})["session"]["id"]
        msg = d.call(
            "session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "x"}]}, timeout=60
        )["message"]
        assert msg["error"]["name"] == "ProviderUnavailable"
    finally:
        d.stop()


def test_secrets_appear_in_no_file_and_no_log(tmp_path, model):
    token, api_key = "tok-SECRET-ACCESS-77", "sk-SECRET-APIKEY-88"
    log_file = tmp_path / "debug.log"
    d = Daemon(
        daemon_env(tmp_path, model.base_url, OPENAI_API_KEY=api_key),
        args=["-vv", "--log-file", str(log_file)],
    )
    d.initialize(workspaceRoot=str(tmp_path), capabilities={"permissionRequests": True})
    d.handlers["permission/request"] = lambda p: {"outcome": "allow_once"}
    sid = d.call("session/create", {"accessToken": token, "userId": "u"})["session"]["id"]
    model.enqueue(
        {"toolCalls": [{"name": "bash", "arguments": {"command": "env"}}]},
        {"text": "done"},
        {"error": {"status": 401}},
    )
    res = d.call(
        "session/chat",
        {"sessionId": sid, "tools": ["bash"], "parts": [{"type": "text", "text": "x"}]},
    )
    tool = next(p for p in res["message"]["parts"] if p["type"] == "tool")
    assert "AGENTD_SESSION_SCOPE_KEY=" in tool["state"]["output"]
    assert api_key not in tool["state"]["output"] and token not in tool["state"]["output"]
    d.call("session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "y"}]})
    d.stop()
    for root in (tmp_path / "data", tmp_path / "state"):
        for dirpath, _, files in os.walk(root):
            for f in files:
                blob = (Path(dirpath) / f).read_bytes()
                assert token.encode() not in blob and api_key.encode() not in blob, f
    logs = log_file.read_text() + "".join(d.stderr_lines)
    assert logs and token not in logs and api_key not in logs
    assert all(token not in json.dumps(m) and api_key not in json.dumps(m) for m in d.messages)
    assert "authorization" not in json.dumps(model.requests()).lower()


def test_tool_context_modes_with_a_permissive_umask(tmp_path, model):
    old = os.umask(0)
    try:
        d = Daemon(daemon_env(tmp_path, model.base_url))
    finally:
        os.umask(old)
    d.initialize(workspaceRoot=str(tmp_path))
    seen = {}

    def execute(params):  # type: ignore[no-untyped-def]
        ctx_dir = tmp_path / "state" / "tool-context"
        seen["dir"] = stat.S_IMODE(os.stat(ctx_dir).st_mode)
        seen["file"] = stat.S_IMODE(os.stat(ctx_dir / f"{params['sessionScopeKey']}.json").st_mode)
        # The run's record too (and anything else agentd put there).
        seen["all"] = {stat.S_IMODE(p.lstat().st_mode) for p in ctx_dir.iterdir()}
        seen["count"] = len(list(ctx_dir.iterdir()))
        return {"output": "ok"}

    d.handlers["tool/execute"] = execute
    sid = d.call("session/create", {"title": "t"})["session"]["id"]
    model.enqueue({"toolCalls": [{"name": "probe", "arguments": {}}]}, {"text": "ok"})
    d.call(
        "session/chat",
        {
            "sessionId": sid,
            "parts": [{"type": "text", "text": "x"}],
            "clientTools": [{"name": "probe", "description": "d", "parameters": {}}],
        },
    )
    d.stop()
    assert seen == {"dir": 0o700, "file": 0o600, "all": {0o600}, "count": 2}
    log_dir = tmp_path / "data" / "sessions" / sid
    assert stat.S_IMODE(os.stat(log_dir / "log.jsonl").st_mode) == 0o600


def test_ids_from_the_editor_are_not_paths(tmp_path):
    d = Daemon(daemon_env(tmp_path))
    d.initialize(workspaceRoot=str(tmp_path))
    try:
        for bad in ("../../x", "/etc/passwd", "ses_../../etc", "ses_" + "a" * 24 + "/..", ""):
            with pytest.raises(RpcError) as err:
                d.call("session/get", {"sessionId": bad})
            assert err.value.code == 1001
            assert d.call("session/delete", {"sessionId": bad}) == {"deleted": False}
            assert d.call("run/resolve", {"runId": bad}) is None
            assert d.call("toolContext/get", {"sessionScopeKey": bad}) is None
    finally:
        d.stop()


@pytest.mark.unshared
def test_disk_full_gives_a_clear_error_damages_nothing_and_recovers(tmp_path, model):
    """Writes beyond a size limit fail (RLIMIT_FSIZE: EFBIG, as a full disk would give
    ENOSPC); raising the limit again is space returning."""
    import resource

    limit = 1024 * 1024

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    d = Daemon(daemon_env(tmp_path, model.base_url), preexec_fn=small_files)
    d.initialize(workspaceRoot=str(tmp_path))
    try:
        sid = d.call("session/create", {"title": "disk"})["session"]["id"]
        model.enqueue({"text": "short answer"})
        d.call("session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "hi"}]})
        before = d.call("session/messages", {"sessionId": sid})["messages"]
        model.enqueue({"text": "x" * (limit + 100_000), "chunkSize": 16384})
        with pytest.raises(RpcError) as err:
            d.call(
                "session/chat",
                {"sessionId": sid, "parts": [{"type": "text", "text": "big"}]},
                timeout=60,
            )
        assert err.value.code == -32603 and "cannot write" in err.value.message
        assert "Traceback" not in err.value.message
        # What was stored before is intact, and the session is not stuck.
        after = d.call("session/messages", {"sessionId": sid})["messages"]
        assert after[: len(before)] == before
        assert d.call("session/get", {"sessionId": sid})["session"]["status"] == "idle"
        # Space returns: the same daemon works again.
        resource.prlimit(
            d.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
        )
        model.enqueue({"text": "works again"})
        res = d.call("session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "ok?"}]})
        assert text_of(res["message"]) == "works again"
        final = d.call("session/messages", {"sessionId": sid})["messages"]
        assert final[: len(before)] == before and text_of(final[-1]) == "works again"
    finally:
        d.stop()
    # A fresh daemon reads every log line it can and closes what was left open.
    counts = check_storage(tmp_path, model.base_url)
    assert counts["messages"] >= len(before) + 2


@pytest.mark.unshared
def test_run_whose_end_could_not_be_written_is_closed_at_next_start(tmp_path, model):
    import resource

    limit = 1024 * 1024

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    d = Daemon(daemon_env(tmp_path, model.base_url), preexec_fn=small_files)
    d.initialize(workspaceRoot=str(tmp_path))
    sid = d.call("session/create", {"title": "disk"})["session"]["id"]
    model.enqueue({"text": "y" * (limit + 100_000), "chunkSize": 16384})
    with pytest.raises(RpcError):
        d.call(
            "session/chat",
            {"sessionId": sid, "parts": [{"type": "text", "text": "big"}]},
            timeout=60,
        )
    d.proc.send_signal(signal.SIGKILL)  # the daemon dies before its session runs again
    d.proc.wait()
    counts = check_storage(tmp_path, model.base_url)
    assert counts["interrupted"] == 1
