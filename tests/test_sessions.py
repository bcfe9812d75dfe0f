"""Sessions over real pipes: create, continuity, keys, list, messages, update, delete,
persistence across restarts, two daemons on one data dir, damaged storage."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading

import pytest
from helpers import text_of
from rpc_client import RpcError

KEY_RE = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


def test_create_generates_ids_and_keys(spawn):
    d = spawn()
    res = d.call("session/create", {"userId": "alice", "projectId": "proj-1"})
    s = res["session"]
    assert res["created"] is True
    assert s["id"].startswith("ses_")
    assert re.fullmatch(r"agent-[0-9a-f]{12}", s["clientSessionId"])
    assert s["actorKey"] == "alice" and s["projectKey"] == "proj-1"
    assert s["sessionScopeKey"] == f"alice.proj-1.{s['clientSessionId']}"
    assert s["status"] == "idle" and s["cost"] == 0
    assert s["usage"] == {
        "inputTokens": 0,
        "outputTokens": 0,
        "reasoningTokens": 0,
        "cacheReadTokens": 0,
        "cacheWriteTokens": 0,
    }
    assert s["time"]["created"] == s["time"]["updated"] > 1_600_000_000_000
    anon = d.call("session/create", {})["session"]
    assert anon["actorKey"] == "anonymous" and anon["projectKey"] == "default"


def test_unsafe_components_become_stable_hashes(spawn):
    d = spawn()
    a = d.call(
        "session/create",
        {
            "userId": "alice@example.com",
            "projectId": "../../etc",
            "clientSessionId": "thread/with spaces\u00e9" * 20,
        },
    )["session"]
    b = d.call(
        "session/create",
        {"userId": "alice@example.com", "projectId": "../../etc", "clientSessionId": "other"},
    )["session"]
    for key in (a["actorKey"], a["projectKey"], a["sessionScopeKey"]):
        assert KEY_RE.match(key) and key not in (".", "..")
    assert a["actorKey"] == b["actorKey"] != "alice@example.com"
    assert a["projectKey"] == b["projectKey"]
    assert a["sessionScopeKey"] != b["sessionScopeKey"]
    assert b["sessionScopeKey"].endswith(".other")


def test_client_session_id_continuity_per_actor_and_project(spawn):
    d = spawn()
    first = d.call("session/create", {"clientSessionId": "thread-1", "userId": "u1"})
    again = d.call(
        "session/create", {"clientSessionId": "thread-1", "userId": "u1", "title": "ignored"}
    )
    assert first["created"] is True and again["created"] is False
    assert again["session"]["id"] == first["session"]["id"]
    other_user = d.call("session/create", {"clientSessionId": "thread-1", "userId": "u2"})
    other_project = d.call(
        "session/create", {"clientSessionId": "thread-1", "userId": "u1", "projectId": "p"}
    )
    assert other_user["created"] and other_project["created"]
    assert (
        len({first["session"]["id"], other_user["session"]["id"], other_project["session"]["id"]})
        == 3
    )


def test_parent_child_and_unknown_parent(spawn):
    d = spawn()
    parent = d.call("session/create", {"title": "parent"})["session"]
    child = d.call("session/create", {"parentId": parent["id"], "title": "child"})["session"]
    assert child["parentId"] == parent["id"]
    with pytest.raises(RpcError) as err:
        d.call("session/create", {"parentId": "ses_nope"})
    assert err.value.code == 1001
    children = d.call("session/list", {"parentId": parent["id"]})["sessions"]
    assert [s["id"] for s in children] == [child["id"]]
    roots = d.call("session/list", {"rootsOnly": True})["sessions"]
    assert [s["id"] for s in roots] == [parent["id"]]


def test_get_update_and_session_updated(spawn):
    d = spawn()
    s = d.call("session/create", {"title": "old"})["session"]
    got = d.call("session/get", {"sessionId": s["id"]})["session"]
    assert got == s
    updated = d.call("session/update", {"sessionId": s["id"], "title": "New Title"})["session"]
    assert updated["title"] == "New Title"
    assert updated["time"]["updated"] >= s["time"]["updated"]
    note = d.wait_for(
        lambda: [
            n
            for n in d.notifications("session/updated")
            if n["params"]["session"]["title"] == "New Title"
        ]
    )
    assert note[0]["params"]["session"]["id"] == s["id"]
    for method in ("session/get", "session/update", "session/messages"):
        with pytest.raises(RpcError) as err:
            d.call(method, {"sessionId": "ses_01a2000000000000deadbeef"})
        assert err.value.code == 1001
    # Ids are validated before they go near a path: a traversal is just an unknown id.
    with pytest.raises(RpcError) as err:
        d.call("session/get", {"sessionId": "../../etc/passwd"})
    assert err.value.code == 1001


def test_list_order_filters_query_and_limits(spawn):
    d = spawn()
    ids = [
        d.call("session/create", {"title": f"Session {i}", "projectId": "a" if i % 2 else "b"})[
            "session"
        ]["id"]
        for i in range(6)
    ]
    listed = d.call("session/list", {})["sessions"]
    assert [s["id"] for s in listed] == list(reversed(ids))
    d.call("session/update", {"sessionId": ids[0], "title": "Renamed FIRST"})
    listed = d.call("session/list", {})["sessions"]
    assert listed[0]["id"] == ids[0]  # a change moves it to the front
    assert [s["id"] for s in d.call("session/list", {"query": "first"})["sessions"]] == [ids[0]]
    only_a = d.call("session/list", {"projectId": "a"})["sessions"]
    assert {s["id"] for s in only_a} == {ids[1], ids[3], ids[5]}
    page = d.call("session/list", {"limit": 2, "projectId": "b"})
    assert len(page["sessions"]) == 2 and page["nextCursor"]
    for bad in (0, 501, -1):
        with pytest.raises(RpcError) as err:
            d.call("session/list", {"limit": bad})
        assert err.value.code == -32602
    with pytest.raises(RpcError) as err:
        d.call("session/list", {"cursor": "garbage"})
    assert err.value.code == -32602


def test_list_by_workspace_root_and_the_root_a_session_without_one_gets(spawn, tmp_path):
    d = spawn()  # initialize gave no workspace root: sessions get the daemon's directory
    here = d.call("session/create", {"title": "no root"})["session"]
    assert here["workspaceRoot"] and os.path.isabs(here["workspaceRoot"])
    roots = [tmp_path / "a", tmp_path / "b", tmp_path / "a b"]
    made = {
        str(root): [
            d.call("session/create", {"title": f"{root.name} {i}", "workspaceRoot": str(root)})[
                "session"
            ]["id"]
            for i in range(3)
        ]
        for root in roots
    }
    for root, ids in made.items():
        listed = d.call("session/list", {"workspaceRoot": root})["sessions"]
        assert [x["id"] for x in listed] == list(reversed(ids))  # exact path, not a prefix
        page = d.call("session/list", {"workspaceRoot": root, "limit": 2})
        rest = d.call("session/list", {"workspaceRoot": root, "cursor": page["nextCursor"]})
        assert [x["id"] for x in page["sessions"] + rest["sessions"]] == list(reversed(ids))
    listed = d.call("session/list", {"workspaceRoot": here["workspaceRoot"]})["sessions"]
    assert [x["id"] for x in listed] == [here["id"]]
    assert d.call("session/list", {"workspaceRoot": str(tmp_path / "none")})["sessions"] == []
    with pytest.raises(RpcError) as err:
        d.call("session/list", {"workspaceRoot": 5})
    assert err.value.code == -32602
    # A root no path can be (an outside attacker's: every later chat failed -32603).
    with pytest.raises(RpcError) as err:
        d.call("session/create", {"workspaceRoot": str(tmp_path / "a\u0000b")})
    assert err.value.code == -32602 and err.value.data["field"] == "workspaceRoot"


def two_models(tmp_path, base_url: str) -> str:
    config = tmp_path / "two-models.toml"
    config.write_text(
        'default_model = "first"\n[providers.local]\n'
        f'base_url = "{base_url}"\napi_key_env = "OPENAI_API_KEY"\n'
        '[models.first]\nprovider = "local"\nname = "upstream-first"\n'
        '[models.second]\nprovider = "local"\nname = "upstream-second"\n'
    )
    return str(config)


def test_a_sessions_model_changes_for_later_runs_and_survives_everything(spawn, model, tmp_path):
    config = two_models(tmp_path, model.base_url)
    d = spawn(model.base_url, AGENTD_CONFIG=config)
    sid = d.call("session/create", {"title": "t"})["session"]["id"]
    with pytest.raises(RpcError) as err:
        d.call("session/update", {"sessionId": sid, "model": "nope", "title": "not applied"})
    assert err.value.code == 1003
    got = d.call("session/get", {"sessionId": sid})["session"]
    assert got.get("model") in (None, "first") and got["title"] == "t"
    updated = d.call("session/update", {"sessionId": sid, "model": "second"})["session"]
    assert updated["model"] == "second"
    model.enqueue({"text": "from the second"})
    d.call("session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "q"}]})
    assert model.requests()[-1]["body"]["model"] == "upstream-second"
    forked = d.call("session/fork", {"sessionId": sid})["session"]
    assert forked["model"] == "second"
    exported = json.loads(d.call("session/export", {"sessionId": sid, "format": "json"})["content"])
    assert exported["session"]["model"] == "second"
    d.stop()
    # The catalog rebuilt from the logs keeps it.
    for name in ("catalog.sqlite3", "catalog.sqlite3-wal", "catalog.sqlite3-shm"):
        (tmp_path / "data" / name).unlink(missing_ok=True)
    d = spawn(model.base_url, AGENTD_CONFIG=config)
    assert d.call("session/get", {"sessionId": sid})["session"]["model"] == "second"


def test_cursor_walk_under_concurrent_inserts(spawn):
    d = spawn()
    original = {d.call("session/create", {"title": f"s{i}"})["session"]["id"] for i in range(57)}
    seen: list[str] = []
    cursor = None
    inserted = 0
    while True:
        params = {"limit": 10}
        if cursor:
            params["cursor"] = cursor
        page = d.call("session/list", params)
        seen += [s["id"] for s in page["sessions"]]
        # New sessions arrive during the walk: they go to the front, never duplicated.
        d.call("session/create", {"title": f"new{inserted}"})
        inserted += 1
        cursor = page.get("nextCursor")
        if not cursor:
            break
    assert len(seen) == len(set(seen))
    assert original <= set(seen)


def test_messages_paging(spawn, model):
    d = spawn(model.base_url)
    sid = d.call("session/create", {"title": "t"})["session"]["id"]
    for i in range(3):
        d.call("session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": f"m{i}"}]})
    everything = d.call("session/messages", {"sessionId": sid})
    assert len(everything["messages"]) == 6 and "nextBefore" not in everything
    roles = [m["role"] for m in everything["messages"]]
    assert roles == ["user", "assistant"] * 3
    page = d.call("session/messages", {"sessionId": sid, "limit": 4})
    assert [m["id"] for m in page["messages"]] == [m["id"] for m in everything["messages"][2:]]
    older = d.call("session/messages", {"sessionId": sid, "limit": 4, "before": page["nextBefore"]})
    assert [m["id"] for m in older["messages"]] == [m["id"] for m in everything["messages"][:2]]
    assert "nextBefore" not in older


def test_delete_removes_session_children_and_logs(spawn, tmp_path):
    d = spawn()
    parent = d.call("session/create", {})["session"]
    child = d.call("session/create", {"parentId": parent["id"]})["session"]
    keep = d.call("session/create", {})["session"]
    assert d.call("session/delete", {"sessionId": parent["id"]}) == {"deleted": True}
    for sid in (parent["id"], child["id"]):
        with pytest.raises(RpcError):
            d.call("session/get", {"sessionId": sid})
        assert not (tmp_path / "data" / "sessions" / sid).exists()
    assert [s["id"] for s in d.call("session/list", {})["sessions"]] == [keep["id"]]
    assert d.call("session/delete", {"sessionId": parent["id"]}) == {"deleted": False}
    assert d.call("session/delete", {"sessionId": "../x"}) == {"deleted": False}


def test_persistence_across_restart(spawn, model):
    d = spawn(model.base_url)
    s = d.call("session/create", {"title": "keep me", "clientSessionId": "c-1"})["session"]
    d.call("session/chat", {"sessionId": s["id"], "parts": [{"type": "text", "text": "hello"}]})
    before = d.call("session/messages", {"sessionId": s["id"]})
    got_before = d.call("session/get", {"sessionId": s["id"]})["session"]
    d.stop()
    d2 = spawn(model.base_url)
    assert d2.call("session/messages", {"sessionId": s["id"]}) == before
    got = d2.call("session/get", {"sessionId": s["id"]})["session"]
    assert got == got_before
    again = d2.call("session/create", {"clientSessionId": "c-1"})
    assert again["created"] is False and again["session"]["id"] == s["id"]


@pytest.mark.unshared
def test_two_daemons_share_one_data_dir(spawn, model):
    a = spawn(model.base_url)
    b = spawn(model.base_url)
    made: list[str] = []
    lock = threading.Lock()

    def create(daemon, n):  # type: ignore[no-untyped-def]
        for i in range(n):
            sid = daemon.call("session/create", {"title": f"x{i}"})["session"]["id"]
            with lock:
                made.append(sid)

    threads = [threading.Thread(target=create, args=(dm, 25)) for dm in (a, b)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for dm in (a, b):
        listed = []
        cursor = None
        while True:
            page = dm.call("session/list", {"limit": 20, **({"cursor": cursor} if cursor else {})})
            listed += [s["id"] for s in page["sessions"]]
            cursor = page.get("nextCursor")
            if not cursor:
                break
        assert sorted(listed) == sorted(made)
    # The same clientSessionId created from both daemons is one session.
    x = a.call("session/create", {"clientSessionId": "shared"})["session"]["id"]
    y = b.call("session/create", {"clientSessionId": "shared"})["session"]["id"]
    assert x == y
    # A run in one daemon makes the session busy (1002) in the other. (The model stalls
    # after two chunks: the run is busy until it is aborted below, however slow the
    # machine; a 2.7 s stream once ended under CI's load before the checks did.)
    model.enqueue({"text": "one two three four five six", "chunkSize": 3, "stallAfterChunks": 2})
    chat = a.request_async(
        "session/chat", {"sessionId": x, "parts": [{"type": "text", "text": "hi"}]}
    )
    a.wait_for(lambda: a.notifications("part/delta"))
    with pytest.raises(RpcError) as err:
        b.call("session/chat", {"sessionId": x, "parts": [{"type": "text", "text": "me too"}]})
    assert err.value.code == 1002
    assert b.call("session/get", {"sessionId": x})["session"]["status"] == "busy"
    # Nothing else that writes the history overlaps it either (a summary written into
    # the middle of the other daemon's answer, found by an outside attacker).
    for method, params in (
        ("session/summarize", {"sessionId": x}),
        (
            "session/chat",
            {"sessionId": x, "parts": [{"type": "text", "text": "x"}], "onBusy": "preempt"},
        ),
        (
            "session/chat",
            {"sessionId": x, "parts": [{"type": "text", "text": "x"}], "onBusy": "queue"},
        ),
        ("session/delete", {"sessionId": x}),
    ):
        with pytest.raises(RpcError) as err:
            b.call(method, params)
        assert err.value.code == 1002, method
    a.call("session/abort", {"sessionId": x})
    a.result(chat)
    messages = b.call("session/messages", {"sessionId": x})["messages"]
    assert not any(m.get("summary") for m in messages), messages


def test_torn_last_log_line_is_skipped(spawn, model, tmp_path):
    d = spawn(model.base_url)
    sid = d.call("session/create", {})["session"]["id"]
    d.call("session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "hello"}]})
    before = d.call("session/messages", {"sessionId": sid})
    d.stop()
    log = tmp_path / "data" / "sessions" / sid / "log.jsonl"
    with open(log, "ab") as f:
        f.write(b'{"k":"part","m":"msg_x","part":{"id":"prt_x","typ')  # a crash mid-write
    d2 = spawn(model.base_url)
    assert d2.call("session/messages", {"sessionId": sid}) == before
    d2.call("session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "again"}]})
    after = d2.call("session/messages", {"sessionId": sid})["messages"]
    assert len(after) == 4
    for line in log.read_bytes().splitlines()[: -0 or None]:
        if line.startswith(b'{"k":"part","m":"msg_x"'):
            continue
        json.loads(line)


@pytest.mark.parametrize("damage", ["delete", "corrupt"])
def test_catalog_is_rebuilt_from_logs(spawn, model, tmp_path, damage):
    d = spawn(model.base_url)
    parent = d.call("session/create", {"title": "parent", "clientSessionId": "c-p"})["session"]
    child = d.call("session/create", {"title": "child", "parentId": parent["id"]})["session"]
    d.call("session/chat", {"sessionId": child["id"], "parts": [{"type": "text", "text": "hi"}]})
    d.call("session/update", {"sessionId": parent["id"], "title": "renamed"})
    listed = d.call("session/list", {})["sessions"]
    d.stop()
    catalog = tmp_path / "data" / "catalog.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        p = catalog.with_name(catalog.name + suffix)
        if p.exists():
            p.unlink()
    if damage == "corrupt":
        catalog.write_bytes(b"this is not a sqlite database" * 100)
    d2 = spawn(model.base_url)
    relisted = d2.call("session/list", {})["sessions"]
    assert [s["id"] for s in relisted] == [s["id"] for s in listed]
    by_id = {s["id"]: s for s in relisted}
    assert by_id[parent["id"]]["title"] == "renamed"
    assert by_id[child["id"]]["parentId"] == parent["id"]
    assert by_id[child["id"]]["usage"] == {s["id"]: s for s in listed}[child["id"]]["usage"]
    again = d2.call("session/create", {"title": "x", "clientSessionId": "c-p"})
    assert again["created"] is False
    # reindex from the command line gives the same catalog.
    import subprocess
    import sys

    from rpc_client import daemon_env

    out = subprocess.run(
        [sys.executable, "-m", "agentd", "reindex"],
        capture_output=True,
        text=True,
        env={**os.environ, **daemon_env(tmp_path)},
        check=True,
    )
    assert "indexed 2 sessions" in out.stdout


def test_access_token_never_on_disk_or_in_logs(spawn, model, tmp_path):
    token = "tok-SECRET-4242-abcdef"
    log_file = tmp_path / "agentd.log"
    d = spawn(model.base_url, args=["-vv", "--log-file", str(log_file)])
    s = d.call("session/create", {"accessToken": token, "userId": "u"})["session"]
    assert token not in json.dumps(s)
    d.call("session/chat", {"sessionId": s["id"], "parts": [{"type": "text", "text": "hi"}]})
    d.stop()
    for root in (tmp_path / "data", tmp_path / "state"):
        for dirpath, _, files in os.walk(root):
            for name in files:
                data = open(os.path.join(dirpath, name), "rb").read()
                assert token.encode() not in data, os.path.join(dirpath, name)
    assert log_file.exists() and token not in log_file.read_text()
    assert token not in "".join(d.stderr_lines)
    assert all(token not in json.dumps(m) for m in d.messages)


def test_run_resolve_and_models_list(spawn, model):
    d = spawn(model.base_url)
    s = d.call("session/create", {"clientSessionId": "c-9"})["session"]
    res = d.call("session/chat", {"sessionId": s["id"], "parts": [{"type": "text", "text": "x"}]})
    expected = {
        "sessionId": s["id"],
        "clientSessionId": "c-9",
        "sessionScopeKey": s["sessionScopeKey"],
    }
    assert d.call("run/resolve", {"runId": res["runId"]}) == expected
    assert d.call("run/resolve", {"runId": "run_unknown"}) is None
    assert d.call("run/resolve", {"runId": "run_01a2000000000000deadbeef"}) is None
    d.stop()
    d2 = spawn(model.base_url)  # second tier: the catalog
    assert d2.call("run/resolve", {"runId": res["runId"]}) == expected
    models = d2.call("models/list", {})["models"]
    assert models == [{"id": "scripted", "provider": "default", "default": True}]


def test_tool_context_get_unknown_is_null(spawn):
    d = spawn()
    assert d.call("toolContext/get", {"sessionScopeKey": "anonymous.default.nothing"}) is None
    assert d.call("toolContext/get", {"sessionScopeKey": "../../etc/passwd"}) is None


def test_catalog_row_counts_match_after_many_creates(spawn, tmp_path):
    d = spawn()
    for i in range(30):
        d.call("session/create", {"title": f"t{i}"})
    d.stop()
    db = sqlite3.connect(tmp_path / "data" / "catalog.sqlite3")
    assert db.execute("select count(*) from sessions").fetchone()[0] == 30


# --- what the session layer says of a session while a run of it goes on ---------------

LIVE_TEXT = " ".join(f"w{i}" for i in range(400))


@pytest.mark.parametrize("after_deltas", [1, 7, 40])
def test_a_running_session_is_read_as_it_stands(spawn, model, after_deltas):  # type: ignore[no-untyped-def]
    """session/messages during a run holds the text streamed so far, exactly: the deltas
    this editor received before the answer, not the text last checkpointed to the log;
    session/get and session/list say the session is busy. (The session layer asked a run
    layer that was never attached, and answered as if nothing ran.)"""
    d = spawn(model.base_url)
    sid = d.call("session/create", {})["session"]["id"]
    model.enqueue({"text": LIVE_TEXT, "chunkSize": 4, "delayMs": 10})
    chat_id = d.request_async(
        "session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "long"}]}
    )
    d.wait_for(lambda: len(d.notifications("part/delta")) >= after_deltas)
    opened = d.request_async("session/messages", {"sessionId": sid})
    d.result(opened)
    with d._cond:
        received = list(d.messages)
    at = next(i for i, m in enumerate(received) if m.get("id") == opened)
    before = "".join(m["params"]["delta"] for m in received[:at] if m.get("method") == "part/delta")
    page = received[at]["result"]["messages"]
    assert page[-1]["role"] == "assistant" and "completed" not in page[-1]["time"]
    assert before and text_of(page[-1]) == before
    assert d.call("session/get", {"sessionId": sid})["session"]["status"] == "busy"
    listed = d.call("session/list", {})["sessions"]
    assert [s["status"] for s in listed if s["id"] == sid] == ["busy"]
    d.call("session/abort", {"sessionId": sid})
    d.result(chat_id)
    assert d.call("session/get", {"sessionId": sid})["session"]["status"] == "idle"


def test_deleting_a_running_session_aborts_its_run(spawn, model):  # type: ignore[no-untyped-def]
    d = spawn(model.base_url)
    sid = d.call("session/create", {})["session"]["id"]
    model.enqueue({"text": LIVE_TEXT, "chunkSize": 4, "delayMs": 10})
    chat_id = d.request_async(
        "session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "long"}]}
    )
    d.wait_for(lambda: d.notifications("part/delta"))
    assert d.call("session/delete", {"sessionId": sid}) == {"deleted": True}
    # The run ended with its session: the model's stream was closed, nothing runs.
    assert model.wait_response_end(0, timeout=10) == "client_closed"
    d.response(chat_id, timeout=10)
    statuses = [n["params"]["status"] for n in d.notifications("session/status")]
    assert statuses[-1] == "idle"
    with pytest.raises(RpcError):
        d.call("session/get", {"sessionId": sid})
