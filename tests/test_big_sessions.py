"""Long sessions: older messages are settled (their parts leave memory, their chat form
stays), yet every page of session/messages, the model's history, compaction and a late
change to an old message are exactly what they would be with everything in memory."""

from __future__ import annotations

import json

import psutil
import pytest
from helpers import chat, text_of
from rpc_client import Daemon, daemon_env
from session_logs import grow_session

RECENT = 100  # agentd.storage.log.RECENT_MESSAGES


def start(tmp_path, base_url):  # type: ignore[no-untyped-def]
    d = Daemon(daemon_env(tmp_path, base_url))
    d.initialize(workspaceRoot=str(tmp_path))
    return d


def all_messages(d, sid, page):  # type: ignore[no-untyped-def]
    out, before = [], None
    while True:
        params = {"sessionId": sid, "limit": page, **({"before": before} if before else {})}
        res = d.call("session/messages", params)
        out = res["messages"] + out
        before = res.get("nextBefore")
        if not before:
            return out


def reference_fold(tmp_path, sid) -> list[dict]:
    """The log folded the simplest way, everything in memory: what pages must equal."""
    messages: dict[str, dict] = {}
    for line in (tmp_path / "data" / "sessions" / sid / "log.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["k"] == "message":
            parts = messages.get(rec["message"]["id"], {}).get("parts", {})
            messages[rec["message"]["id"]] = {**rec["message"], "parts": parts}
        elif rec["k"] == "part" and rec["m"] in messages:
            messages[rec["m"]]["parts"][rec["part"]["id"]] = rec["part"]
        elif rec["k"] == "delta" and rec["m"] in messages:
            part = messages[rec["m"]]["parts"][rec["p"]]
            part["text"] = part.get("text", "") + rec["d"]
    return [{**m, "parts": list(m["parts"].values())} for m in messages.values()]


@pytest.fixture
def long_session(tmp_path, model):  # type: ignore[no-untyped-def]
    """A session of 2 + 2 * 199 = 400 messages: a tool call and a text answer per turn."""
    d = start(tmp_path, model.base_url)
    sid = d.call("session/create", {"title": "long"})["session"]["id"]
    (tmp_path / "a.txt").write_text("alpha\n")
    model.enqueue(
        {"toolCalls": [{"name": "read_file", "arguments": {"path": "a.txt"}}]},
        {"text": "read it", "chunkSize": 2},
    )
    chat(d, sid, "read a.txt")
    d.stop()
    grow_session(tmp_path, sid, 199, mark=True)
    return sid


@pytest.mark.parametrize("page", [7, 100, 1000])
def test_every_page_of_a_long_session_is_exact(tmp_path, model, long_session, page):
    d = start(tmp_path, model.base_url)
    try:
        got = all_messages(d, long_session, page)
        assert len(got) == 400
        want = reference_fold(tmp_path, long_session)
        assert got == want
        # Old messages come back whole, tool parts included.
        tool = next(p for p in got[1]["parts"] if p["type"] == "tool")
        assert tool["state"]["status"] == "completed" and "alpha" in tool["state"]["output"]
    finally:
        d.stop()


def test_the_model_gets_the_whole_history_in_order(tmp_path, model, long_session):
    d = start(tmp_path, model.base_url)
    try:
        model.reset()
        model.enqueue({"text": "latest"})
        chat(d, long_session, "and now?")
        sent = model.requests()[0]["body"]["messages"]
        users = [m["content"] for m in sent if m["role"] == "user"]
        assert users[0] == "read a.txt"
        assert users[1:-1] == [f"read a.txt #{n}" for n in range(199)]
        assert users[-1] == "and now?"
        # Each turn: the tool call, its result, the text answer.
        assert len([m for m in sent if m["role"] == "tool"]) == 200
        assert sent[-2]["content"] == "read it #198"
    finally:
        d.stop()


def test_a_late_record_for_an_old_message_is_seen(tmp_path, model, long_session):
    """A record for a settled message (another daemon closing an old run, a repair):
    the message is read again from the log, in the pages and in the model's history."""
    d = start(tmp_path, model.base_url)
    try:
        old = all_messages(d, long_session, 500)[3]
        assert old["role"] == "assistant"
        text_part = next(p for p in old["parts"] if p["type"] == "text")
        log = tmp_path / "data" / "sessions" / long_session / "log.jsonl"
        with log.open("a") as f:
            f.write(
                json.dumps({"k": "part", "m": old["id"], "part": {**text_part, "text": "EDITED"}})
                + "\n"
            )
        again = all_messages(d, long_session, 500)[3]
        assert text_of(again) == "EDITED"
        model.reset()
        model.enqueue({"text": "ok"})
        chat(d, long_session, "next")
        sent = model.requests()[0]["body"]["messages"]
        assert any(m["role"] == "assistant" and m.get("content") == "EDITED" for m in sent)
    finally:
        d.stop()


def test_compaction_summarises_settled_messages(tmp_path, model, long_session):
    d = start(tmp_path, model.base_url)
    try:
        model.reset()
        model.enqueue({"text": "the summary"})
        res = d.call("session/summarize", {"sessionId": long_session})
        assert text_of(res["message"]) == "the summary"
        sent = model.requests()[0]["body"]["messages"]
        users = [m["content"] for m in sent if m["role"] == "user"]
        assert users[0] == "read a.txt" and "read a.txt #190" in users
        # After it, the model sees the summary and the tail, not the settled history.
        model.enqueue({"text": "after"})
        chat(d, long_session, "go on")
        after = model.requests()[1]["body"]["messages"]
        assert len(after) < 20
        assert any("the summary" in (m.get("content") or "") for m in after)
    finally:
        d.stop()


@pytest.mark.reliability
def test_a_20000_message_session_stays_small(tmp_path, model):
    d = start(tmp_path, model.base_url)
    sid = d.call("session/create", {"title": "big"})["session"]["id"]
    chat(d, sid, "hi")
    d.stop()
    grow_session(tmp_path, sid, 9_999)
    d = start(tmp_path, model.base_url)
    try:
        for i in range(3):
            model.enqueue({"text": f"answer {i}"})
            assert text_of(chat(d, sid, f"q {i}")["message"]) == f"answer {i}"
        assert len(model.requests()[-1]["body"]["messages"]) > 20_000
        rss = psutil.Process(d.proc.pid).memory_info().rss / 2**20
        assert rss < 150, f"{rss:.0f} MiB"
        assert len(all_messages(d, sid, 500)) == 20_006
    finally:
        d.stop()
