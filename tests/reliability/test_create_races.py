"""One clientSessionId (per actor and project) is one session, whichever daemon wins a
create race; the losers answer the winner's session; nothing is left behind; and a
rebuilt catalog never prefers an empty duplicate log over the session that holds the
conversation. Also: a session whose log was deleted by hand leaves the catalog."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from rpc_client import Daemon, RpcError, daemon_env

pytestmark = pytest.mark.reliability

SCALE = float(os.environ.get("AGENTD_RELIABILITY_SCALE", "1"))
IDS = max(10, int(120 * SCALE))


def start(tmp: Path, base_url: str | None = None) -> Daemon:
    d = Daemon(daemon_env(tmp, base_url))
    d.initialize(workspaceRoot=str(tmp))
    return d


def session_dirs(tmp: Path) -> set[str]:
    return {p.name for p in (tmp / "data" / "sessions").iterdir() if p.name.startswith("ses_")}


def create_all(d: Daemon, client_ids: list[str], extra: dict | None = None) -> list[dict]:
    """Pipeline one session/create per id, then collect every answer."""
    pending = [
        d.request_async("session/create", {"clientSessionId": c, "title": c, **(extra or {})})
        for c in client_ids
    ]
    return [d.response(m, timeout=60) for m in pending]


def test_two_daemons_creating_the_same_ids_at_once_agree(tmp_path, model):
    a, b = start(tmp_path, model.base_url), start(tmp_path, model.base_url)
    client_ids = [f"thread-{i}" for i in range(IDS)]
    answers: dict[str, list[dict]] = {}

    def run(name: str, d: Daemon, order: list[str]) -> None:
        answers[name] = create_all(d, order)

    threads = [
        threading.Thread(target=run, args=("a", a, client_ids)),
        threading.Thread(target=run, args=("b", b, client_ids)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    by_a = {r["result"]["session"]["clientSessionId"]: r["result"] for r in answers["a"]}
    by_b = {r["result"]["session"]["clientSessionId"]: r["result"] for r in answers["b"]}
    for c in client_ids:
        assert by_a[c]["session"]["id"] == by_b[c]["session"]["id"], c
        assert [by_a[c]["created"], by_b[c]["created"]].count(True) == 1, c
    # No orphan folder: exactly one per id.
    assert session_dirs(tmp_path) == {by_a[c]["session"]["id"] for c in client_ids}
    # Chat in half of them from one daemon, then rebuild the catalog from the logs.
    chatted = client_ids[::2]
    for c in chatted:
        model.enqueue({"text": f"answer {c}"})
        b.call(
            "session/chat",
            {"sessionId": by_b[c]["session"]["id"], "parts": [{"type": "text", "text": c}]},
        )
    a.stop()
    b.stop()
    (tmp_path / "data" / "catalog.sqlite3").unlink()
    c = start(tmp_path, model.base_url)
    try:
        again = {
            r["result"]["session"]["clientSessionId"]: r["result"]
            for r in create_all(c, client_ids)
        }
        for cid in client_ids:
            assert again[cid]["created"] is False
            assert again[cid]["session"]["id"] == by_a[cid]["session"]["id"]
        for cid in chatted:
            msgs = c.call("session/messages", {"sessionId": again[cid]["session"]["id"]})
            assert [m["role"] for m in msgs["messages"]] == ["user", "assistant"]
    finally:
        c.stop()


def test_creates_racing_deletes_of_the_same_ids_leave_one_session_or_none(tmp_path):
    a, b = start(tmp_path), start(tmp_path)
    client_ids = [f"churn-{i}" for i in range(IDS // 2)]
    errors: list[str] = []

    def creator() -> None:
        for _ in range(3):
            for r in create_all(a, client_ids):
                if "error" in r:
                    errors.append(json.dumps(r["error"]))

    def deleter() -> None:
        for _ in range(3):
            for r in create_all(b, client_ids):
                if "error" in r:
                    errors.append(json.dumps(r["error"]))
                    continue
                sid = r["result"]["session"]["id"]
                b.call("session/delete", {"sessionId": sid})

    threads = [threading.Thread(target=creator), threading.Thread(target=deleter)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:5]
    listed = a.call("session/list", {"limit": 500})["sessions"]
    a.stop()
    b.stop()
    # At most one session per id, and every folder on disk is a listed session.
    assert len({s["clientSessionId"] for s in listed}) == len(listed)
    assert session_dirs(tmp_path) == {s["id"] for s in listed}


def write_log(tmp: Path, session_id: str, client_id: str, created: int, messages: int) -> None:
    folder = tmp / "data" / "sessions" / session_id
    folder.mkdir(parents=True)
    header = {
        "id": session_id,
        "clientSessionId": client_id,
        "title": "t",
        "projectKey": "default",
        "actorKey": "anonymous",
        "sessionScopeKey": f"anonymous.default.{client_id}",
        "created": created,
    }
    lines = [{"k": "session", "session": header, "at": created}]
    for i in range(messages):
        mid = f"msg_{created + i:012x}{'m' * 12}"
        lines.append(
            {
                "k": "message",
                "at": created + i,
                "message": {
                    "id": mid,
                    "sessionId": session_id,
                    "role": "user",
                    "time": {"created": created + i, "completed": created + i},
                },
            }
        )
        lines.append(
            {
                "k": "part",
                "m": mid,
                "part": {
                    "id": f"prt_{created + i:012x}{'p' * 12}",
                    "type": "text",
                    "text": f"m{i}",
                },
            }
        )
    (folder / "log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


@pytest.mark.parametrize(
    "logs, winner",
    [
        # (id suffix, created, messages): the one with messages wins, older or newer.
        ([("a", 100, 0), ("b", 200, 2)], "b"),
        ([("a", 100, 2), ("b", 200, 0)], "a"),
        ([("a", 100, 0), ("b", 200, 0), ("c", 300, 1), ("d", 400, 0)], "c"),
        ([("a", 100, 1), ("b", 50, 1)], "b"),  # same count: the older
    ],
)
def test_a_rebuilt_catalog_keeps_the_duplicate_with_the_conversation(tmp_path, logs, winner):
    base = 0x0190_0000_0000
    for suffix, created, count in logs:
        write_log(
            tmp_path, f"ses_{base + created:012x}{suffix * 12}", "thr-1", base + created, count
        )
    d = start(tmp_path)
    try:
        found = d.call("session/create", {"clientSessionId": "thr-1"})
        assert found["created"] is False
        assert found["session"]["id"].endswith(winner * 12)
        assert len(d.call("session/list", {})["sessions"]) == 1
    finally:
        d.stop()


@pytest.mark.parametrize("damage", ["log-deleted", "folder-deleted", "log-emptied"])
def test_a_session_whose_log_is_gone_leaves_the_catalog(tmp_path, model, damage):
    d = start(tmp_path, model.base_url)
    try:
        gone = d.call("session/create", {"title": "gone"})["session"]["id"]
        kept = d.call("session/create", {"title": "kept"})["session"]["id"]
        folder = tmp_path / "data" / "sessions" / gone
        if damage == "log-deleted":
            (folder / "log.jsonl").unlink()
        elif damage == "folder-deleted":
            shutil.rmtree(folder)
        else:
            (folder / "log.jsonl").write_bytes(b"")
        for method, params in [
            ("session/chat", {"sessionId": gone, "parts": [{"type": "text", "text": "hi"}]}),
            ("session/messages", {"sessionId": gone}),
            ("session/get", {"sessionId": gone}),
        ]:
            with pytest.raises(RpcError) as err:
                d.call(method, params)
            assert err.value.code == 1001, (method, err.value.message)
        listed = [s["id"] for s in d.call("session/list", {})["sessions"]]
        assert listed == [kept]
        model.enqueue({"text": "fine"})
        d.call("session/chat", {"sessionId": kept, "parts": [{"type": "text", "text": "hi"}]})
    finally:
        d.stop()
    # Healed for good: a new daemon does not list it either.
    d2 = start(tmp_path)
    try:
        assert [s["id"] for s in d2.call("session/list", {})["sessions"]] == [kept]
    finally:
        d2.stop()
