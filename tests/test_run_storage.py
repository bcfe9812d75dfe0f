"""What a run leaves on disk, and what reads it back: streamed text is logged once and
read back whole (same daemon, restart, fork, the settled-message path); the catalog
shows each run's state and totals in every daemon, is written twice per run, and
recovers runs whose daemon was killed at any moment; an older, bigger-paged catalog
keeps working and is rewritten once no other daemon has it open."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

import pytest
from helpers import chat, new_session, text_of
from session_logs import grow_session

USAGE = ("inputTokens", "outputTokens", "reasoningTokens", "cacheReadTokens", "cacheWriteTokens")


def log_path(tmp: Path, sid: str) -> Path:
    return tmp / "data" / "sessions" / sid / "log.jsonl"


def catalog_path(tmp: Path) -> Path:
    return tmp / "data" / "catalog.sqlite3"


def tokens(n: int, tag: str = "") -> list[str]:
    """Tokens each found once in any text: `<tag17>`."""
    return [f"<{tag}{i}>" for i in range(n)]


def summed_usage(d, sid: str) -> dict[str, int]:  # type: ignore[no-untyped-def]
    messages = d.call("session/messages", {"sessionId": sid, "limit": 10_000})["messages"]
    return {k: sum(m.get("usage", {}).get(k, 0) for m in messages) for k in USAGE}


def listed(d, sid: str) -> dict:  # type: ignore[no-untyped-def]
    sessions = d.call("session/list", {"limit": 500})["sessions"]
    return next(s for s in sessions if s["id"] == sid)


# --- the log -------------------------------------------------------------------------


def test_streamed_text_is_logged_once_and_read_back_whole(spawn, model, tmp_path):
    """A reasoning part and two text parts (a tool call between them), each streamed over
    several checkpoints: every token is in the log once, and the message read back (this
    daemon, a new one, a fork) is the response's, `time.end` of every part included."""
    d = spawn(model.base_url)
    sid = new_session(d, title="t")
    (tmp_path / "a.txt").write_text("alpha\n")
    thought, before, after = tokens(150, "r"), tokens(150, "a"), tokens(150, "b")
    model.enqueue(
        {
            "reasoning": " ".join(thought),
            "text": "".join(before),
            "tokens": before,
            "toolCalls": [{"name": "read_file", "arguments": {"path": "a.txt"}}],
            "delayMs": 3,
        },
        {"text": "".join(after), "tokens": after, "delayMs": 3},
    )
    answer = chat(d, sid, "go")["message"]
    texts = [p for p in answer["parts"] if p["type"] in ("text", "reasoning")]
    assert [p["text"] for p in texts] == [" ".join(thought), "".join(before), "".join(after)]
    assert all(p["time"].get("end") for p in texts)
    log = log_path(tmp_path, sid).read_bytes()
    assert log.count(b'"k":"delta"') >= 3  # streamed over checkpoints, not in one piece
    for token in thought + before + after:
        assert log.count(token.encode()) == 1, token

    def last(daemon) -> dict:  # type: ignore[no-untyped-def]
        return daemon.call("session/messages", {"sessionId": sid})["messages"][-1]

    assert last(d) == answer
    d.stop()
    d2 = spawn(model.base_url)
    assert last(d2) == answer
    fork = d2.call("session/fork", {"sessionId": sid})["session"]["id"]
    copied = d2.call("session/messages", {"sessionId": fork})["messages"][-1]
    assert [(p["type"], p.get("text"), p.get("time")) for p in copied["parts"]] == [
        (p["type"], p.get("text"), p.get("time")) for p in answer["parts"]
    ]


def test_a_streamed_answer_read_back_after_it_left_the_recent_window(spawn, model, tmp_path):
    """Messages past the latest 100 are read from the log when asked for (the settled
    path folds their records again): an answer ended by a `fields` record reads whole."""
    d = spawn(model.base_url)
    sid = new_session(d, title="t")
    streamed = tokens(200)
    model.enqueue({"text": "".join(streamed), "tokens": streamed, "delayMs": 3})
    first = chat(d, sid, "go")["message"]
    assert b'"k":"fields"' in log_path(tmp_path, sid).read_bytes()
    d.stop()
    grow_session(tmp_path, sid, 120)
    d2 = spawn(model.base_url)
    page = d2.call("session/messages", {"sessionId": sid, "limit": 10_000})["messages"]
    assert len(page) == 2 * 121
    assert page[1] == first
    assert text_of(page[-1]) == "".join(streamed) and page[-1]["parts"][-2]["time"]["end"]


# --- the catalog ----------------------------------------------------------------------


def test_list_shows_each_runs_state_and_totals_in_every_daemon(spawn, model, tmp_path):
    """During a run the session is busy in both daemons' lists; right after it, idle,
    first in the list, its totals those of its messages, `updated` its end."""
    a = spawn(model.base_url)
    b = spawn(model.base_url)
    sid = new_session(a, title="t")
    other = new_session(b, title="other")
    for turn in range(3):
        streamed = tokens(60, f"{turn}.")
        model.enqueue(
            {
                "text": "".join(streamed),
                "tokens": streamed,
                "delayMs": 5,
                "usage": {"prompt_tokens": 100 + turn, "completion_tokens": 7, "cached_tokens": 3},
            }
        )
        request = a.request_async(
            "session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "go"}]}
        )
        a.wait_for(lambda: a.notifications("part/delta"))
        assert listed(b, sid)["status"] == "busy"
        assert listed(a, sid)["status"] == "busy"
        message = a.result(request)["message"]
        with a._cond:
            a.messages.clear()
        for daemon in (a, b):
            session = listed(daemon, sid)
            assert session["status"] == "idle"
            assert session["usage"] == summed_usage(daemon, sid)
            assert session["usage"]["inputTokens"] == sum(100 + t for t in range(turn + 1))
            assert session["time"]["updated"] >= message["time"]["completed"]
            order = [s["id"] for s in daemon.call("session/list", {})["sessions"]]
            assert order.index(sid) < order.index(other)


def _wal_commits(tmp: Path) -> int:
    """Commits in the catalog's WAL: frames whose header gives the database's size."""
    data = Path(f"{catalog_path(tmp)}-wal").read_bytes()
    page_size = int.from_bytes(data[8:12], "big")
    salt = data[16:24]
    commits = 0
    for at in range(32, len(data) - page_size - 24 + 1, page_size + 24):
        if data[at + 8 : at + 16] != salt:
            break
        commits += data[at + 4 : at + 8] != b"\0\0\0\0"
    return commits


def _checkpoint(tmp: Path) -> None:
    db = sqlite3.connect(catalog_path(tmp), timeout=10)
    try:
        assert db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    finally:
        db.close()


@pytest.mark.parametrize("delay_ms", [0, 3])
def test_a_run_writes_the_catalog_twice(spawn, model, tmp_path, delay_ms):
    """Once when it starts (busy) and once when it ends (idle, totals), however long it
    streams: never per checkpoint."""
    d = spawn(model.base_url)
    sid = new_session(d, title="t")
    chat(d, sid, "warm")
    streamed = tokens(300)
    model.enqueue({"text": "".join(streamed), "tokens": streamed, "delayMs": delay_ms})
    _checkpoint(tmp_path)
    chat(d, sid, "go")
    assert _wal_commits(tmp_path) == 2


@pytest.mark.parametrize("moment", ["first token", "streaming", "tool after text"])
def test_kill_9_at_any_moment_of_a_run_is_recovered_by_the_next_daemon(
    spawn, model, tmp_path, moment
):
    ws = tmp_path / "ws"
    ws.mkdir()
    d = spawn(model.base_url, initialize=False)
    d.initialize(workspaceRoot=str(ws), capabilities={"permissionRequests": True})
    sid = new_session(d, title="t")
    model.enqueue({"text": "earlier", "usage": {"prompt_tokens": 11, "completion_tokens": 5}})
    chat(d, sid, "warm")
    streamed = tokens(2000)
    spec: dict = {"text": "".join(streamed), "tokens": streamed, "delayMs": 5}
    if moment == "first token":
        spec["firstDelayMs"] = 30_000
    if moment == "tool after text":
        spec = {
            "text": "".join(streamed[:200]),
            "tokens": streamed[:200],
            "delayMs": 3,
            "toolCalls": [{"name": "write_file", "arguments": {"path": "x.txt", "content": "x"}}],
        }
    model.enqueue(spec)
    d.request_async(
        "session/chat",
        {"sessionId": sid, "parts": [{"type": "text", "text": "go"}], "tools": ["write_file"]},
    )
    log = log_path(tmp_path, sid)
    if moment == "first token":
        d.wait_for(lambda: len(model.requests()) == 2)
    elif moment == "streaming":
        d.wait_for(lambda: b'"k":"delta"' in log.read_bytes().rsplit(b'"state":"start"', 1)[1])
    else:
        d.wait_for(lambda: [m for m in d.messages if m.get("method") == "permission/request"])
    assert listed(d, sid)["status"] == "busy"
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()
    logged = log.read_bytes()

    d2 = spawn(model.base_url)
    session = listed(d2, sid)
    assert session["status"] == "idle"
    assert session["usage"] == summed_usage(d2, sid)
    assert session["usage"]["inputTokens"] == 11
    last = d2.call("session/messages", {"sessionId": sid})["messages"][-1]
    assert last["finishReason"] == "interrupted" and last["time"]["completed"]
    # Exactly the text the log held when the daemon died.
    kept = "".join(t for t in streamed if t.encode() in logged)
    assert text_of(last) == kept
    if moment == "tool after text":
        assert kept == "".join(streamed[:200])
        tool = next(p for p in last["parts"] if p["type"] == "tool")
        assert tool["state"]["status"] == "error"
    model.enqueue({"text": "alive"})
    assert text_of(chat(d2, sid, "again")["message"]) == "alive"
    assert listed(d2, sid)["status"] == "idle"


def test_a_run_whose_catalog_end_or_start_was_never_written(spawn, model, tmp_path):
    """The two moments between the log and the catalog: the log says the run ended but
    the catalog still says busy (killed before the end's commit), and the log says a run
    started but the catalog never heard of it (killed before the start's commit)."""
    d = spawn(model.base_url)
    sid = new_session(d, title="t")
    model.enqueue({"text": "whole answer", "usage": {"prompt_tokens": 21, "completion_tokens": 4}})
    answer = chat(d, sid, "go")["message"]
    d.stop()
    db = sqlite3.connect(catalog_path(tmp_path))
    with db:
        db.execute(
            "UPDATE sessions SET status = 'busy', run_id = ?, owner_pid = 1,"
            " input_tokens = 0, output_tokens = 0 WHERE id = ?",
            (answer["runId"], sid),
        )
    db.close()
    d2 = spawn(model.base_url)
    session = listed(d2, sid)
    assert session["status"] == "idle"
    assert session["usage"]["inputTokens"] == 21 and session["usage"]["outputTokens"] == 4
    assert d2.call("session/messages", {"sessionId": sid})["messages"][-1] == answer
    d2.stop()
    with log_path(tmp_path, sid).open("ab") as f:
        f.write(
            b'{"k":"run","run":"run_01a200000000aaaaaaaaaaaa","state":"start","pid":1,"at":1}\n'
        )
    d3 = spawn(model.base_url)
    assert listed(d3, sid)["status"] == "idle"
    model.enqueue({"text": "next"})
    assert text_of(chat(d3, sid, "again")["message"]) == "next"
    messages = d3.call("session/messages", {"sessionId": sid})["messages"]
    assert [m["finishReason"] for m in messages if m["role"] == "assistant"] == ["stop", "stop"]


def test_two_daemons_a_live_run_is_never_recovered_a_dead_one_is(spawn, model, tmp_path):
    a = spawn(model.base_url)
    sid = new_session(a, title="t")
    streamed = tokens(300)
    model.enqueue({"text": "".join(streamed), "tokens": streamed, "delayMs": 5})
    request = a.request_async(
        "session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "go"}]}
    )
    a.wait_for(lambda: a.notifications("part/delta"))
    b = spawn(model.base_url)  # starts (and recovers) during a's run
    assert listed(b, sid)["status"] == "busy"
    message = a.result(request, timeout=30)["message"]
    assert message["finishReason"] == "stop" and text_of(message) == "".join(streamed)
    assert listed(b, sid)["status"] == "idle"

    model.enqueue({"text": "".join(streamed), "tokens": streamed, "delayMs": 5})
    log = log_path(tmp_path, sid)
    ended = len(log.read_bytes())
    a.request_async("session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "2"}]})
    a.wait_for(lambda: b'"k":"delta"' in log.read_bytes()[ended:])
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait()
    # b started before a died: it recovers nothing by itself, and the run's lock is free.
    assert listed(b, sid)["status"] == "busy"
    c = spawn(model.base_url)
    for daemon in (c, b):  # c's first answer waits for its recovery
        session = listed(daemon, sid)
        assert session["status"] == "idle"
        assert session["usage"] == summed_usage(daemon, sid)
    last = b.call("session/messages", {"sessionId": sid})["messages"][-1]
    assert last["finishReason"] == "interrupted"
    model.enqueue({"text": "from b"})
    assert text_of(chat(b, sid, "3")["message"]) == "from b"


# --- a catalog an older agentd made ---------------------------------------------------


def _page_size(tmp: Path) -> int:
    db = sqlite3.connect(catalog_path(tmp))
    try:
        return db.execute("PRAGMA page_size").fetchone()[0]
    finally:
        db.close()


def _as_an_older_agentd_made_it(tmp: Path) -> None:
    """4 KiB pages, `runs` with rowids, the two indexes it had."""
    db = sqlite3.connect(catalog_path(tmp), isolation_level=None)
    db.execute("PRAGMA journal_mode=DELETE")
    db.execute("PRAGMA page_size=4096")
    db.execute("VACUUM")
    db.execute("ALTER TABLE runs RENAME TO runs_new")
    db.execute(
        "CREATE TABLE runs (run_id TEXT PRIMARY KEY, session_id TEXT NOT NULL,"
        " started INTEGER NOT NULL, ended INTEGER)"
    )
    db.execute("INSERT INTO runs SELECT * FROM runs_new")
    db.execute("DROP TABLE runs_new")
    db.execute("CREATE INDEX runs_session ON runs (session_id)")
    db.execute(
        "CREATE INDEX sessions_roots ON sessions (updated DESC, id DESC) WHERE parent_id IS NULL"
    )
    db.execute("CREATE INDEX sessions_project ON sessions (project_id, updated DESC, id DESC)")
    db.execute("DROP INDEX sessions_in_project")
    db.execute("PRAGMA journal_mode=WAL")
    db.close()
    assert _page_size(tmp) == 4096


def test_an_older_catalog_works_and_is_rewritten_once_no_daemon_has_it_open(spawn, model, tmp_path):
    d = spawn(model.base_url)
    sids = [
        new_session(d, title=f"s{i}", **({"projectId": "p"} if i % 2 else {})) for i in range(5)
    ]
    runs = {sid: chat(d, sid, f"hi {sid}")["runId"] for sid in sids}
    before = d.call("session/list", {})["sessions"]
    d.stop()
    _as_an_older_agentd_made_it(tmp_path)

    # Another process has it open (an older daemon would): it stays as it is, and works.
    other = sqlite3.connect(catalog_path(tmp_path))
    other.execute("SELECT count(*) FROM sessions").fetchone()
    d2 = spawn(model.base_url)
    assert d2.call("session/list", {})["sessions"] == before
    assert _page_size(tmp_path) == 4096
    model.enqueue({"text": "on the old catalog"})
    assert text_of(chat(d2, sids[0], "again")["message"]) == "on the old catalog"
    after_chat = d2.call("session/list", {})["sessions"]
    d2.stop()
    other.close()

    d3 = spawn(model.base_url)
    # Its first answer after `initialize` waits for storage to open.
    assert d3.call("session/list", {})["sessions"] == after_chat
    assert _page_size(tmp_path) == 1024
    assert [s["id"] for s in d3.call("session/list", {"projectId": "p"})["sessions"]] == [
        s["id"] for s in after_chat if s.get("projectId") == "p"
    ]
    for sid, run_id in runs.items():
        assert d3.call("run/resolve", {"runId": run_id})["sessionId"] == sid
    db = sqlite3.connect(catalog_path(tmp_path))
    indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    db.close()
    assert not indexes & {"sessions_roots", "sessions_project"}
    model.enqueue({"text": "on the new one"})
    assert text_of(chat(d3, sids[1], "again")["message"]) == "on the new one"
    assert listed(d3, sids[1])["status"] == "idle"
