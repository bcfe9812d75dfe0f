"""session/export and session/import (and `agentd export` / `agentd import`): a JSON
export imports as a new session equal to the original apart from ids, here or on
another data dir; Markdown reads as a transcript; no secret is exported; a damaged
export is refused with -32602 naming what is wrong, and nothing is created."""

from __future__ import annotations

import copy
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import chat, new_session, text_of
from rpc_client import Daemon, RpcError, daemon_env
from test_fork import ids_in, messages, session_dirs, without_ids

ROOT = Path(__file__).resolve().parents[1]


def export(d, sid, fmt="json"):  # type: ignore[no-untyped-def]
    return d.call("session/export", {"sessionId": sid, "format": fmt})["content"]


def rich_session(d, model, tmp_path):  # type: ignore[no-untyped-def]
    """Text, a tool call and its result, an attached file, reasoning, a provider error,
    a summary (compaction) and a turn after it."""
    sid = new_session(d, title="rich")
    (tmp_path / "a.txt").write_text("alpha ``` and ```` fences\n")
    model.enqueue(
        {"toolCalls": [{"name": "read_file", "arguments": {"path": "a.txt"}}]},
        {"text": "it says alpha"},
    )
    chat(d, sid, "read a.txt")
    model.enqueue({"text": "seen the file"})
    d.call(
        "session/chat",
        {
            "sessionId": sid,
            "parts": [{"type": "text", "text": "look"}, {"type": "file", "path": "a.txt"}],
        },
    )
    model.enqueue({"reasoning": "thinking it over", "text": "reasoned answer"})
    chat(d, sid, "think")
    model.enqueue({"error": {"status": 400}})
    failed = chat(d, sid, "fail please")["message"]
    assert failed["finishReason"] == "error"
    model.enqueue({"text": "SUMMARY: we read a file."})
    d.call("session/summarize", {"sessionId": sid})
    model.enqueue({"text": "after the summary"})
    chat(d, sid, "go on")
    return sid


def nothing_created(d, tmp_path: Path, before: tuple) -> None:  # type: ignore[no-untyped-def]
    assert state_of(d, tmp_path) == before
    assert not list((tmp_path / "data" / "sessions").glob("*/*.partial"))


def state_of(d, tmp_path: Path) -> tuple:  # type: ignore[no-untyped-def]
    listed = d.call("session/list", {"limit": 500})["sessions"]
    return session_dirs(tmp_path), sorted(s["id"] for s in listed)


def test_export_import_round_trip_equal_apart_from_ids(spawn, model, tmp_path):
    d = spawn(model.base_url)
    sid = rich_session(d, model, tmp_path)
    content = export(d, sid)
    document = json.loads(content)
    assert document["agentdExport"] == 1 and document["session"]["title"] == "rich"
    assert document["compaction"]["summaryId"] in {m["id"] for m in document["messages"]}
    imported = d.call("session/import", {"content": content})["session"]
    original = d.call("session/get", {"sessionId": sid})["session"]
    assert imported["id"] != sid and imported["clientSessionId"] != original["clientSessionId"]
    for field in ("title", "usage", "cost", "workspaceRoot", "model", "projectKey", "actorKey"):
        assert imported.get(field) == original.get(field), field
    assert imported["time"]["created"] == original["time"]["created"]
    got, want = messages(d, imported["id"]), messages(d, sid)
    assert len(want) == 11
    assert without_ids(got) == without_ids(want)
    assert not ids_in(got) & ids_in(want)
    # Exported again, the copy is the same document apart from ids and times.
    again = json.loads(export(d, imported["id"]))
    for doc in (again, document):
        doc.pop("exportedAt")
        doc["session"].pop("time")
    assert without_ids(again) == without_ids(document)
    # The model is sent the same history from both (the summary in effect included).
    model.reset()
    model.enqueue({"text": "x"}, {"text": "x"})
    chat(d, sid, "next")
    chat(d, imported["id"], "next")
    a, b = (r["body"]["messages"] for r in model.requests())
    assert a == b
    assert "SUMMARY: we read a file." in json.dumps(a) and "read a.txt" not in json.dumps(a)
    # Importing twice makes two sessions.
    second = d.call("session/import", {"content": content})["session"]
    assert second["id"] not in (sid, imported["id"])


def test_import_on_another_data_dir(tmp_path, model):
    """The other machine: its own data dir, a workspace where the exported one does not
    exist (the importing editor's is used), no such model configured (the default is)."""
    here = Daemon(daemon_env(tmp_path / "here", model.base_url))
    work = tmp_path / "here-work"
    work.mkdir()
    here.initialize(workspaceRoot=str(work))
    there = Daemon(daemon_env(tmp_path / "there", model.base_url, AGENTD_MODEL="other"))
    there_work = tmp_path / "there-work"
    there_work.mkdir()
    there.initialize(workspaceRoot=str(there_work))
    try:
        sid = here.call("session/create", {"projectId": "acme", "userId": "alice"})["session"]
        model.enqueue({"text": "hello back"})
        chat(here, sid["id"], "hello")
        content = export(here, sid["id"])
        work.rename(tmp_path / "gone")
        imported = there.call("session/import", {"content": content})["session"]
        assert imported["workspaceRoot"] == str(there_work)
        assert "model" not in imported
        assert (imported["projectId"], imported["projectKey"], imported["actorKey"]) == (
            "acme",
            "acme",
            "alice",
        )
        assert imported["sessionScopeKey"] == f"alice.acme.{imported['clientSessionId']}"
        assert without_ids(messages(there, imported["id"])) == without_ids(
            messages(here, sid["id"])
        )
        model.enqueue({"text": "continued"})
        assert text_of(chat(there, imported["id"], "more")["message"]) == "continued"
        given = there.call("session/import", {"content": content, "workspaceRoot": str(tmp_path)})[
            "session"
        ]
        assert given["workspaceRoot"] == str(tmp_path)
    finally:
        here.stop()
        there.stop()


def test_markdown_export_reads_as_a_transcript(spawn, model, tmp_path):
    d = spawn(model.base_url)
    sid = rich_session(d, model, tmp_path)
    md = export(d, sid, "markdown")
    assert md.startswith("# rich\n")
    assert md.count("## User") == 5 and md.count("## Summary") == 1
    for text in ("read a.txt", "it says alpha", "reasoned answer", "after the summary"):
        assert text in md
    assert "> **Reasoning**" in md and "> thinking it over" in md
    assert "Attached file `a.txt`" in md
    assert "**Error** ProviderBadRequest" in md
    # The tool's output holds ``` and ````: its fence is longer than both.
    tool = next(p for m in messages(d, sid) for p in m["parts"] if p["type"] == "tool")
    output = tool["state"]["output"]
    assert "`````\n" + output + "\n`````" in md
    assert "**Tool** `read_file` · completed" in md and '"path": "a.txt"' in md


def test_no_secret_is_exported(spawn, model):
    secrets = ["tok-SECRET-access-123456", "hdr-SECRET-7890abc", "env-SECRET-4567def"]
    d = spawn(model.base_url)
    sid = d.call(
        "session/create",
        {
            "title": "secrets",
            "accessToken": secrets[0],
            "mcpServers": [
                {
                    "name": "web",
                    "url": "http://127.0.0.1:9/mcp",
                    "headers": {"Authorization": f"Bearer {secrets[1]}"},
                    "enabled": False,
                },
                {"name": "std", "command": "true", "env": {"TOKEN": secrets[2]}, "enabled": False},
            ],
        },
    )["session"]["id"]
    model.enqueue({"text": "fine"})
    chat(d, sid, "hello")
    d.call(
        "session/update",
        {
            "sessionId": sid,
            "mcpServers": [
                {"name": "std", "command": "true", "env": {"TOKEN": secrets[2]}, "enabled": False}
            ],
        },
    )
    fork = d.call("session/fork", {"sessionId": sid})["session"]["id"]
    for target in (sid, fork):
        for fmt in ("json", "markdown"):
            content = export(d, target, fmt)
            assert "fine" in content
            for secret in secrets:
                assert secret not in content and secret[4:16] not in content


def good_document(d, model) -> dict:  # type: ignore[no-untyped-def]
    sid = new_session(d, title="good")
    model.enqueue(
        {"toolCalls": [{"name": "list_dir", "arguments": {}}]},
        {"text": "listed"},
    )
    chat(d, sid, "list")
    model.enqueue({"text": "second"})
    chat(d, sid, "again")
    model.enqueue({"text": "SUMMARY"})
    d.call("session/summarize", {"sessionId": sid})
    return json.loads(export(d, sid))


def _set(doc: dict, path: str, value) -> dict:  # type: ignore[no-untyped-def]
    doc = copy.deepcopy(doc)
    *head, last = path.split(".")
    node = doc
    for key in head:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if isinstance(node, list):
        node[int(last)] = value
    elif value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return doc


_DELETE = object()


def _deep(levels: int):  # type: ignore[no-untyped-def]
    value: object = "bottom"
    for _ in range(levels):
        value = {"x": value}
    return value


def damaged(doc: dict) -> list[tuple[str, str, str]]:
    """(label, content, what the message must name)."""
    text = json.dumps(doc)
    msgs = doc["messages"]
    summary = next(m["id"] for m in msgs if m.get("summary"))
    tool = next(i for i, p in enumerate(msgs[1]["parts"]) if p["type"] == "tool")
    variants: list[tuple[str, object, str]] = [
        ("empty", "", "not valid JSON"),
        ("one char", text[:1], "not valid JSON"),
        ("half", text[: len(text) // 2], "not valid JSON"),
        ("all but the last", text[:-1], "not valid JSON"),
        ("not json", "agentd export\n", "not valid JSON"),
        ("lone surrogate", text.replace('"good"', '"\\ud800"', 1), "not valid JSON"),
        ("a list", "[]", "not an agentd session export"),
        ("a number", "42", "not an agentd session export"),
        ("null", "null", "not an agentd session export"),
        ("no version", _set(doc, "agentdExport", _DELETE), "not an agentd session export"),
        ("version 2", _set(doc, "agentdExport", 2), "version 2 is newer"),
        ("version 0", _set(doc, "agentdExport", 0), "agentdExport: version 0"),
        ("version '1'", _set(doc, "agentdExport", "1"), "agentdExport"),
        ("version true", _set(doc, "agentdExport", True), "agentdExport"),
        ("version 1.0", _set(doc, "agentdExport", 1.0), "agentdExport"),
        ("messages a table", _set(doc, "messages", {}), "params.content.messages"),
        ("a robot", _set(doc, "messages.0.role", "robot"), "params.content.messages[0].role"),
        (
            "text a number",
            _set(doc, "messages.0.parts.0.text", 5),
            "params.content.messages[0].parts[0].text",
        ),
        ("title null", _set(doc, "session.title", None), "params.content.session.title"),
        (
            "created a word",
            _set(doc, "messages.0.time.created", "yesterday"),
            "params.content.messages[0].time.created",
        ),
        ("usage a word", _set(doc, "messages.1.usage.inputTokens", "many"), "inputTokens"),
        (
            "unknown tool state",
            _set(doc, f"messages.1.parts.{tool}.state.status", "exploded"),
            f"params.content.messages[1].parts[{tool}].state",
        ),
        ("unknown part", _set(doc, "messages.0.parts.0.type", "video"), "parts[0]"),
        ("no exportedAt", _set(doc, "exportedAt", _DELETE), "exportedAt"),
        ("tokens past 64 bits", _set(doc, "messages.1.usage.inputTokens", 2**70), "inputTokens"),
        ("tokens past 10^12", _set(doc, "messages.1.usage.inputTokens", 10**13), "inputTokens"),
        ("negative tokens", _set(doc, "messages.1.usage.outputTokens", -5), "outputTokens"),
        ("a huge time", _set(doc, "messages.0.time.created", 2**60), "messages[0].time"),
        ("a huge cost", _set(doc, "messages.1.cost", 1e300), "messages[1].cost"),
        (
            "nested 200 deep",
            _set(doc, f"messages.1.parts.{tool}.state.input", _deep(200)),
            "nested deeper than 128",
        ),
        (
            "parent missing",
            _set(doc, "messages.1.parentId", "msg_000000000000000000000000"),
            "messages[1].parentId",
        ),
        ("parent later", _set(doc, "messages.1.parentId", msgs[2]["id"]), "messages[1].parentId"),
        (
            "summary missing",
            _set(doc, "compaction.summaryId", "msg_000000000000000000000000"),
            "compaction.summaryId",
        ),
        ("summary not one", _set(doc, "compaction.summaryId", msgs[1]["id"]), "summaryId"),
        (
            "kept message missing",
            _set(doc, "compaction.keep", ["msg_000000000000000000000000"]),
            "compaction.keep[0]",
        ),
        ("kept after summary", _set(doc, "compaction.keep", [summary]), "compaction.keep[0]"),
        ("duplicate message", _set(doc, "messages.2.id", msgs[0]["id"]), "messages[2].id"),
        (
            "duplicate part",
            _set(doc, "messages.2.parts.0.id", msgs[0]["parts"][0]["id"]),
            "messages[2].parts[0].id",
        ),
        (
            "unfinished message",
            _set(doc, "messages.1.time.completed", _DELETE),
            "messages[1].time.completed",
        ),
        ("actor key a path", _set(doc, "session.actorKey", "../../etc"), "session.actorKey"),
        ("project key empty", _set(doc, "session.projectKey", ""), "session.projectKey"),
    ]
    return [
        (label, value if isinstance(value, str) else json.dumps(value), where)
        for label, value, where in variants
    ]


def test_damaged_imports_are_refused_and_create_nothing(spawn, model, tmp_path):
    d = spawn(model.base_url)
    doc = good_document(d, model)
    before = state_of(d, tmp_path)
    failures = []
    for label, content, where in damaged(doc):
        try:
            d.call("session/import", {"content": content})
            failures.append(f"{label}: imported")
            break
        except RpcError as err:
            if err.code != -32602 or where not in err.message:
                failures.append(f"{label}: {err.code} {err.message}")
            elif "Traceback" in err.message or not err.data.get("errors"):
                failures.append(f"{label}: {err.data}")
        nothing_created(d, tmp_path, before)
    assert not failures, "\n".join(failures)
    # The undamaged document imports (the variants were refused for what they broke).
    d.call("session/import", {"content": json.dumps(doc)})
    assert len(state_of(d, tmp_path)[1]) == len(before[1]) + 1


def test_import_params_of_the_wrong_type(spawn, model, tmp_path):
    d = spawn(model.base_url)
    before = state_of(d, tmp_path)
    for params in ({}, {"content": 5}, {"content": None}, {"content": {"agentdExport": 1}}):
        with pytest.raises(RpcError) as err:
            d.call("session/import", params)
        assert err.value.code == -32602
    for params in ({"sessionId": "ses_000000000000000000000000"}, {"sessionId": "x/../y"}):
        with pytest.raises(RpcError) as err:
            d.call("session/export", params)
        assert err.value.code == 1001
    sid = new_session(d)
    with pytest.raises(RpcError) as err:
        d.call("session/export", {"sessionId": sid, "format": "pdf"})
    assert err.value.code == -32602 and "format" in err.value.message
    assert state_of(d, tmp_path)[1] == sorted([*before[1], sid])


@pytest.mark.unshared
def test_an_import_the_disk_cannot_take_leaves_nothing(tmp_path, model):
    """The new session's log cannot be written whole (a file-size limit standing in for
    a full disk): -32603 naming the file, no folder, no row; once space returns the same
    import works. (A fork's log is never larger than the original's, which was written.)"""
    limit = 1024 * 1024

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    d = Daemon(daemon_env(tmp_path, model.base_url), preexec_fn=small_files)
    d.initialize(workspaceRoot=str(tmp_path))
    try:
        sid = new_session(d, title="big")
        model.enqueue({"text": "y" * (limit // 3), "chunkSize": 65536})
        chat(d, sid, "first")
        doc = json.loads(export(d, sid))
        for n in range(3):  # the same turn four times: more than the limit
            for message in copy.deepcopy(doc["messages"][:2]):
                message["id"] += f"-{n}"
                message.pop("parentId", None)
                for part in message["parts"]:
                    part["id"] += f"-{n}"
                doc["messages"].append(message)
        content = json.dumps(doc)
        assert len(content) > limit
        before = state_of(d, tmp_path)
        for _ in range(2):
            with pytest.raises(RpcError) as err:
                d.call("session/import", {"content": content})
            assert err.value.code == -32603 and "cannot write the session log" in err.value.message
            nothing_created(d, tmp_path, before)
        resource.prlimit(
            d.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
        )
        imported = d.call("session/import", {"content": content})["session"]
        assert len(messages(d, imported["id"])) == 8
    finally:
        d.stop()


def test_export_of_a_busy_session_holds_what_is_persisted(spawn, model, tmp_path):
    d = spawn(model.base_url)
    sid = new_session(d, title="busy")
    model.enqueue({"text": "done before"})
    chat(d, sid, "before")
    model.enqueue({"text": " ".join(f"w{i}" for i in range(2000)), "delayMs": 10})
    chat_id = d.request_async(
        "session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "running"}]}
    )
    d.wait_for(lambda: len(d.notifications("part/delta")) > 5)
    doc = json.loads(export(d, sid))
    assert [text_of(m) for m in doc["messages"]] == ["before", "done before"]
    assert "running" not in export(d, sid, "markdown")
    imported = d.call("session/import", {"content": json.dumps(doc)})["session"]
    assert len(messages(d, imported["id"])) == 2
    d.call("session/abort", {"sessionId": sid})
    d.result(chat_id)


# --- the command line ------------------------------------------------------------------


def cli(tmp_path: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        **daemon_env(tmp_path),
        # The daemon the command starts is this checkout's, whatever the working directory.
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.run(
        [sys.executable, "-m", "agentd", *args],
        input=stdin,
        capture_output=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )


def test_the_command_line_exports_and_imports(tmp_path, model):
    d = Daemon(daemon_env(tmp_path, model.base_url))
    d.initialize(workspaceRoot=str(tmp_path))
    sid = new_session(d, title="cli")
    model.enqueue({"text": "an answer"})
    chat(d, sid, "a question")
    over_the_wire = json.loads(export(d, sid))
    markdown = export(d, sid, "markdown")
    d.stop()
    out = cli(tmp_path, "export", sid)
    assert out.returncode == 0, out.stderr
    printed = json.loads(out.stdout)
    printed.pop("exportedAt"), over_the_wire.pop("exportedAt")
    assert printed == over_the_wire
    md = cli(tmp_path, "export", sid, "--format", "markdown")
    assert md.returncode == 0 and md.stdout.decode() == markdown
    path = tmp_path / "export.json"
    path.write_bytes(out.stdout)
    imported = cli(tmp_path, "import", str(path))
    assert imported.returncode == 0, imported.stderr
    new_id, title = imported.stdout.decode().split(maxsplit=1)
    assert title.strip() == "cli" and new_id.startswith("ses_") and new_id != sid
    piped = cli(tmp_path, "import", "-", stdin=out.stdout)
    assert piped.returncode == 0, piped.stderr
    d = Daemon(daemon_env(tmp_path, model.base_url))
    d.initialize(workspaceRoot=str(tmp_path))
    try:
        assert without_ids(messages(d, new_id)) == without_ids(messages(d, sid))
        before = state_of(d, tmp_path)
    finally:
        d.stop()
    path.write_bytes(out.stdout[: len(out.stdout) // 2])
    for args in (["import", str(path)], ["import", str(tmp_path / "missing.json")]):
        bad = cli(tmp_path, *args)
        assert bad.returncode == 1 and bad.stdout == b""
        assert b"agentd import:" in bad.stderr and b"Traceback" not in bad.stderr
    unknown = cli(tmp_path, "export", "ses_000000000000000000000000")
    assert unknown.returncode == 1 and b"session not found" in unknown.stderr
    d = Daemon(daemon_env(tmp_path, model.base_url))
    d.initialize(workspaceRoot=str(tmp_path))
    try:
        assert state_of(d, tmp_path) == before
    finally:
        d.stop()


def test_an_import_over_the_size_limit_is_refused(tmp_path):
    """Over 64 MiB of characters: refused before it is parsed, by a daemon whose frame
    limit `agentd import` raised to fit the file."""
    path = tmp_path / "big.json"
    path.write_bytes(b"x" * (64 * 1024 * 1024 + 1))
    out = cli(tmp_path, "import", str(path))
    assert out.returncode == 1
    assert b"an import is at most 67108864 characters" in out.stderr
