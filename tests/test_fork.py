"""session/fork: a new session holding a copy of the history up to a message, new ids
throughout, `forkedFrom` on it; the original untouched; histories independent after;
a busy session forks what is persisted; bad message ids refused, nothing created."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import chat, new_session, text_of
from rpc_client import Daemon, RpcError, daemon_env

ID = re.compile(r"\b(ses|msg|prt|run)_[0-9a-f]{12}[0-9a-z]{12}\b")


def without_ids(value):  # type: ignore[no-untyped-def]
    """`value` with each agentd id replaced by its kind and order of first appearance:
    two histories equal apart from ids compare equal (and references between messages
    must point the same way)."""
    names: dict[str, str] = {}

    def name(match: re.Match[str]) -> str:
        return names.setdefault(match.group(0), f"{match.group(1)}#{len(names)}")

    return json.loads(ID.sub(name, json.dumps(value)))


def ids_in(value) -> set[str]:  # type: ignore[no-untyped-def]
    return set(m.group(0) for m in ID.finditer(json.dumps(value)))


def messages(d, sid):  # type: ignore[no-untyped-def]
    return d.call("session/messages", {"sessionId": sid, "limit": 1000})["messages"]


def log_path(tmp_path: Path, sid: str) -> Path:
    return tmp_path / "data" / "sessions" / sid / "log.jsonl"


def session_dirs(tmp_path: Path) -> set[str]:
    return {p.name for p in (tmp_path / "data" / "sessions").iterdir()}


def history_of(request) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return [
        (m["role"], m.get("content") or "")
        for m in request["body"]["messages"]
        if m["role"] in ("user", "assistant")
    ]


def two_turns(d, model, tmp_path):  # type: ignore[no-untyped-def]
    """A session with a tool call and a text answer: four messages."""
    sid = new_session(d, title="original")
    (tmp_path / "a.txt").write_text("alpha\n")
    model.enqueue(
        {"toolCalls": [{"name": "read_file", "arguments": {"path": "a.txt"}}]},
        {"text": "it says alpha"},
    )
    chat(d, sid, "read a.txt")
    model.enqueue({"reasoning": "hmm", "text": "second answer"})
    chat(d, sid, "and then?")
    return sid


def test_fork_then_chat_in_both_histories_independent(spawn, model, tmp_path):
    d = spawn(model.base_url)
    sid = two_turns(d, model, tmp_path)
    original = messages(d, sid)
    log_before = log_path(tmp_path, sid).read_bytes()
    fork = d.call("session/fork", {"sessionId": sid})["session"]
    assert (
        fork["id"] != sid
        and fork["clientSessionId"]
        != d.call("session/get", {"sessionId": sid})["session"]["clientSessionId"]
    )
    assert fork["forkedFrom"] == {"sessionId": sid, "messageId": original[-1]["id"]}
    assert fork["title"] == "original (fork)" and fork["status"] == "idle"
    assert fork["usage"] == d.call("session/get", {"sessionId": sid})["session"]["usage"]
    copied = messages(d, fork["id"])
    # The same history apart from ids; every message, part and run id is new; tool call
    # ids stay (they pair a call with its result).
    assert without_ids(copied) == without_ids(original)
    assert not ids_in(copied) & ids_in(original)
    assert all(m["sessionId"] == fork["id"] for m in copied)
    assert copied[1]["parentId"] == copied[0]["id"]
    calls = [p["callId"] for m in copied for p in m["parts"] if p["type"] == "tool"]
    assert calls == [p["callId"] for m in original for p in m["parts"] if p["type"] == "tool"]
    # The original is untouched, byte for byte.
    assert log_path(tmp_path, sid).read_bytes() == log_before
    # Both go on, each with its own history.
    model.reset()
    model.enqueue({"text": "in the fork"}, {"text": "in the original"})
    chat(d, fork["id"], "FORK question")
    chat(d, sid, "ORIGINAL question")
    to_fork, to_original = model.requests()
    shared = history_of(to_fork)[:-1]
    assert shared == history_of(to_original)[:-1]
    assert ("user", "read a.txt") in shared and ("assistant", "second answer") in shared
    assert history_of(to_fork)[-1] == ("user", "FORK question")
    assert history_of(to_original)[-1] == ("user", "ORIGINAL question")
    assert [text_of(m) for m in messages(d, fork["id"])][-2:] == ["FORK question", "in the fork"]
    assert [text_of(m) for m in messages(d, sid)][-2:] == ["ORIGINAL question", "in the original"]
    assert len(messages(d, sid)) == len(messages(d, fork["id"])) == 6
    # The fork is listed, can be forked and deleted without touching the original.
    listed = {s["id"]: s for s in d.call("session/list", {})["sessions"]}
    assert listed[fork["id"]]["forkedFrom"]["sessionId"] == sid
    again = d.call("session/fork", {"sessionId": fork["id"]})["session"]
    assert again["forkedFrom"]["sessionId"] == fork["id"]
    assert d.call("session/delete", {"sessionId": fork["id"]}) == {"deleted": True}
    assert len(messages(d, sid)) == 6 and len(messages(d, again["id"])) == 6


@pytest.mark.parametrize("at", [0, 1, 3])
def test_fork_at_a_message_copies_up_to_and_including_it(spawn, model, tmp_path, at):
    d = spawn(model.base_url)
    sid = two_turns(d, model, tmp_path)
    original = messages(d, sid)
    fork = d.call("session/fork", {"sessionId": sid, "messageId": original[at]["id"]})["session"]
    assert fork["forkedFrom"] == {"sessionId": sid, "messageId": original[at]["id"]}
    copied = messages(d, fork["id"])
    assert without_ids(copied) == without_ids(original[: at + 1])
    model.reset()
    model.enqueue({"text": "ok"})
    chat(d, fork["id"], "next")
    sent = history_of(model.requests()[0])
    assert sent[-1] == ("user", "next")
    assert ("user", "and then?") in sent if at == 3 else ("user", "and then?") not in sent


def test_bad_fork_requests_create_nothing(spawn, model, tmp_path):
    d = spawn(model.base_url)
    sid = two_turns(d, model, tmp_path)
    other = new_session(d)
    model.enqueue({"text": "other"})
    other_msg = chat(d, other, "other")["message"]["id"]
    before = (session_dirs(tmp_path), len(d.call("session/list", {})["sessions"]))
    real = messages(d, sid)[0]["id"]
    cases = [
        ({"sessionId": sid, "messageId": "msg_000000000000000000000000"}, -32602),
        ({"sessionId": sid, "messageId": other_msg}, -32602),  # another session's
        ({"sessionId": sid, "messageId": "../../etc/passwd"}, -32602),
        ({"sessionId": sid, "messageId": ""}, -32602),
        ({"sessionId": sid, "messageId": 7}, -32602),
        ({"sessionId": sid, "messageId": [real]}, -32602),
        ({"sessionId": "ses_000000000000000000000000"}, 1001),
        ({"sessionId": "ses_000000000000000000000000", "messageId": real}, 1001),
        ({"sessionId": "../" + sid}, 1001),
        ({"messageId": real}, -32602),
        ({"sessionId": None}, -32602),
    ]
    for params, code in cases:
        with pytest.raises(RpcError) as err:
            d.call("session/fork", params)
        assert err.value.code == code, (params, err.value.message)
        if code == -32602 and "sessionId" in params and isinstance(params["sessionId"], str):
            assert "messageId" in err.value.message
    assert (session_dirs(tmp_path), len(d.call("session/list", {})["sessions"])) == before


def _wait_persisted_delta(d, tmp_path: Path, sid: str) -> None:  # type: ignore[no-untyped-def]
    """Until the running run has text checkpointed in the log (a partial message on
    disk)."""

    def persisted() -> bool:
        lines = log_path(tmp_path, sid).read_text().splitlines()
        return any(json.loads(line)["k"] == "delta" for line in lines if line.strip())

    d.wait_for(lambda: d.notifications("part/delta") and persisted(), timeout=30)


@pytest.mark.parametrize("where", ["same daemon", "other daemon"])
def test_fork_of_a_busy_session_forks_what_is_persisted(spawn, model, tmp_path, where):
    """A run streams (its user message and part of its answer are in the log): the fork
    holds the turns before it, never the run's half answer, in this daemon or another
    sharing the data dir; forking at the running run's message is refused. Once the run
    ended (here aborted), a fork holds it whole."""
    d = spawn(model.base_url)
    sid = new_session(d, title="busy")
    model.enqueue({"text": "first answer"})
    chat(d, sid, "first")
    model.enqueue({"text": " ".join(f"w{i}" for i in range(2000)), "delayMs": 10})
    chat_id = d.request_async(
        "session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "long one"}]}
    )
    _wait_persisted_delta(d, tmp_path, sid)
    forker = d if where == "same daemon" else spawn(model.base_url)
    running = forker.call("session/get", {"sessionId": sid})["session"]
    assert running["status"] == "busy"
    fork = forker.call("session/fork", {"sessionId": sid})["session"]
    copied = messages(forker, fork["id"])
    assert [text_of(m) for m in copied] == ["first", "first answer"]
    assert all(m["time"].get("completed") for m in copied)
    # The running run's own messages (its user message, its half answer) are listed
    # but cannot be forked at yet.
    listed = messages(forker, sid)
    assert [m["role"] for m in listed] == ["user", "assistant", "user", "assistant"]
    assert "completed" not in listed[3]["time"]
    for running_message in listed[2:]:
        with pytest.raises(RpcError) as err:
            forker.call("session/fork", {"sessionId": sid, "messageId": running_message["id"]})
        assert err.value.code == -32602 and "still going" in err.value.message
    d.call("session/abort", {"sessionId": sid})
    aborted = d.result(chat_id)["message"]
    assert aborted["finishReason"] == "aborted"
    after = forker.call("session/fork", {"sessionId": sid})["session"]
    whole = messages(forker, after["id"])
    assert [text_of(m) for m in whole][:3] == ["first", "first answer", "long one"]
    assert text_of(whole[-1]) == text_of(aborted) and whole[-1]["finishReason"] == "aborted"
    # The first fork did not change when the original went on.
    assert [text_of(m) for m in messages(forker, fork["id"])] == ["first", "first answer"]


def test_a_fork_keeps_the_compaction_in_effect_where_it_forks(spawn, model):
    d = spawn(model.base_url)
    sid = new_session(d, title="t")
    for i in range(6):
        model.enqueue({"text": f"answer {i}"})
        chat(d, sid, f"question {i}")
    model.enqueue({"text": "SUMMARY: six questions."})
    d.call("session/summarize", {"sessionId": sid})
    model.enqueue({"text": "answer 6"})
    chat(d, sid, "question 6")
    original = messages(d, sid)
    after = d.call("session/fork", {"sessionId": sid})["session"]["id"]
    before = d.call("session/fork", {"sessionId": sid, "messageId": original[5]["id"]})["session"][
        "id"
    ]
    model.reset()
    model.enqueue({"text": "a"}, {"text": "b"}, {"text": "c"})
    chat(d, sid, "next")
    chat(d, after, "next")
    chat(d, before, "next")
    to_original, to_after, to_before = (json.dumps(r["body"]["messages"]) for r in model.requests())
    # After the summary: the model gets the summary and the kept tail, as the original's.
    assert to_after == to_original
    assert "SUMMARY: six questions." in to_after and "question 0" not in to_after
    # Before it: the whole history up to the fork, no summary.
    assert "SUMMARY" not in to_before and "question 0" in to_before
    assert "question 3" not in to_before


def test_forked_from_survives_a_restart_and_a_catalog_rebuild(tmp_path, model):
    env = daemon_env(tmp_path, model.base_url)
    d = Daemon(env)
    d.initialize(workspaceRoot=str(tmp_path))
    sid = new_session(d, title="t")
    model.enqueue({"text": "one"})
    chat(d, sid, "one")
    fork = d.call("session/fork", {"sessionId": sid})["session"]
    d.stop()
    for catalog in (tmp_path / "data").glob("catalog.sqlite3*"):
        catalog.unlink()
    d = Daemon(env)
    d.initialize(workspaceRoot=str(tmp_path))
    try:
        again = d.call("session/get", {"sessionId": fork["id"]})["session"]
        assert again["forkedFrom"] == fork["forkedFrom"]
        assert again["usage"] == fork["usage"] and again["title"] == fork["title"]
        assert "forkedFrom" not in d.call("session/get", {"sessionId": sid})["session"]
        assert without_ids(messages(d, fork["id"])) == without_ids(messages(d, sid))
    finally:
        d.stop()


def test_fork_and_export_leave_out_what_a_revert_hid(spawn, model):
    """The history as session/messages shows it: messages a revert hid are not copied,
    and cannot be forked at; the fork's model sees what the original's sees."""
    d = spawn(model.base_url)
    sid = new_session(d, title="reverted")
    for word in ("apples", "pears", "plums"):
        model.enqueue({"text": f"noted {word}"})
        chat(d, sid, f"remember {word}")
    shown = messages(d, sid)
    d.call("session/revert", {"sessionId": sid, "messageId": shown[1]["id"]})
    fork = d.call("session/fork", {"sessionId": sid})["session"]
    assert fork["forkedFrom"]["messageId"] == shown[1]["id"]
    assert [text_of(m) for m in messages(d, fork["id"])] == ["remember apples", "noted apples"]
    for hidden in shown[2:]:
        with pytest.raises(RpcError) as err:
            d.call("session/fork", {"sessionId": sid, "messageId": hidden["id"]})
        assert err.value.code == -32602 and "reverted" in err.value.message
    document = json.loads(d.call("session/export", {"sessionId": sid})["content"])
    assert [text_of(m) for m in document["messages"]] == ["remember apples", "noted apples"]
    assert all("reverted" not in m for m in document["messages"])
    # A message marked reverted in a document is imported as shown: hiding is the
    # log's revert records' to say, not a field.
    document["messages"][1]["reverted"] = True
    imported = d.call("session/import", {"content": json.dumps(document)})["session"]["id"]
    assert [m.get("reverted") for m in messages(d, imported)] == [None, None]
    model.reset()
    model.enqueue({"text": "x"}, {"text": "x"}, {"text": "x"})
    for target in (sid, fork["id"], imported):
        chat(d, target, "what do you remember?")
    sent = [r["body"]["messages"][1:] for r in model.requests()]
    assert sent[0] == sent[1] == sent[2]
    assert "pears" not in json.dumps(sent[0])
