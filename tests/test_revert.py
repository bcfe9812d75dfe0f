"""session/revert and session/unrevert, end to end: the real daemon runs write_file,
edit_file and bash (in its sandbox) for the scripted model, then undoes and redoes what
they did, and the workspace is compared byte for byte (contents, modes, links, empty
directories) with what it was.

Workspaces and "outside" directories live under /var/tmp, as in test_sandbox.py: a
confined command has a private /tmp.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import tool_parts
from rpc_client import Daemon, RpcError, daemon_env

TOOLS = ["write_file", "edit_file", "bash", "read_file"]
CONFIG = "allow_bash = true\nallow_write_tools = true\n"


@pytest.fixture
def area() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="agentd-revert-test-", dir="/var/tmp")).resolve()
    for name in ("ws", "outside", "data", "state"):
        (root / name).mkdir()
    yield root
    shutil.rmtree(root, ignore_errors=True)


class Box:
    """A daemon on `area`, its workspace `area/ws`."""

    def __init__(self, d: Daemon, model: Any, area: Path, workspace: Path) -> None:
        self.d = d
        self.model = model
        self.area = area
        self.ws = workspace

    def session(self, **params: Any) -> str:
        return str(self.d.call("session/create", {"title": "t", **params})["session"]["id"])

    def say(self, sid: str, text: str = "hello") -> dict[str, Any]:
        """A chat whose answer changes nothing; returns its assistant message."""
        self.model.enqueue({"text": "fine"})
        return self.chat(sid, text)

    def chat(self, sid: str, text: str = "go", **extra: Any) -> dict[str, Any]:
        params = {"sessionId": sid, "parts": [{"type": "text", "text": text}], "tools": TOOLS}
        return dict(self.d.call("session/chat", {**params, **extra}, timeout=60)["message"])

    def step(self, sid: str, *calls: dict[str, Any], text: str = "go") -> dict[str, Any]:
        """One run whose first step makes `calls`; every call must succeed."""
        self.model.enqueue({"toolCalls": list(calls)}, {"text": "done"})
        message = self.chat(sid, text)
        states = [p["state"] for p in tool_parts(message)]
        assert [s["status"] for s in states] == ["completed"] * len(calls), states
        return message

    def revert(self, sid: str, message_id: str, **extra: Any) -> dict[str, Any]:
        return dict(
            self.d.call("session/revert", {"sessionId": sid, "messageId": message_id, **extra})
        )

    def unrevert(self, sid: str, **extra: Any) -> dict[str, Any]:
        return dict(self.d.call("session/unrevert", {"sessionId": sid, **extra}))

    def messages(self, sid: str, **extra: Any) -> list[dict[str, Any]]:
        params = {"sessionId": sid, **extra}
        return list(self.d.call("session/messages", params)["messages"])


def bash(command: str) -> dict[str, Any]:
    return {"name": "bash", "arguments": {"command": command}}


def write(path: str, content: str) -> dict[str, Any]:
    return {"name": "write_file", "arguments": {"path": path, "content": content}}


def edit(path: str, old: str, new: str) -> dict[str, Any]:
    return {"name": "edit_file", "arguments": {"path": path, "oldString": old, "newString": new}}


@pytest.fixture
def start(model: Any, area: Path) -> Iterator[Callable[..., Box]]:
    daemons: list[Daemon] = []

    def _start(
        config: str = CONFIG,
        *,
        workspace: Path | None = None,
        umask: int | None = None,
        **env: str,
    ) -> Box:
        config_file = area / "config.toml"
        config_file.write_text(config)
        d = Daemon(
            daemon_env(area, model.base_url, AGENTD_CONFIG=str(config_file), **env),
            preexec_fn=None if umask is None else lambda: os.umask(umask),
        )
        daemons.append(d)
        ws = workspace or area / "ws"
        init = d.initialize(workspaceRoot=str(ws))
        if not init["sandbox"]["available"]:
            pytest.fail(f"no sandbox on this machine: {init['sandbox'].get('reason')}")
        return Box(d, model, area, ws)

    yield _start
    for d in daemons:
        d.stop()


def tree(root: Path, leave_out: tuple[str, ...] = ()) -> dict[str, tuple[Any, ...]]:
    """Everything below `root`, links not followed: kind, mode, bytes or link target;
    empty directories included. Paths under `leave_out` are left out."""
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if any(rel == p or rel.startswith(p + "/") for p in leave_out):
                continue
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                with open(path, "rb") as f:
                    out[rel] = ("file", stat.S_IMODE(st.st_mode), f.read())
    return out


def user_repo(ws: Path) -> None:
    """The user's own git repository in the workspace, with a commit and a dirty file."""
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "u",
        "GIT_AUTHOR_EMAIL": "u@x",
        "GIT_COMMITTER_NAME": "u",
    }
    env["GIT_COMMITTER_EMAIL"] = "u@x"
    subprocess.run(["git", "init", "-q", str(ws)], check=True, env=env)
    subprocess.run(["git", "-C", str(ws), "add", "-A"], check=True, env=env)
    subprocess.run(["git", "-C", str(ws), "commit", "-qm", "user"], check=True, env=env)


def error_of(call: Callable[[], Any]) -> RpcError:
    with pytest.raises(RpcError) as info:
        call()
    return info.value


# --- the guarantee, end to end ---------------------------------------------------------------


def populate(ws: Path) -> None:
    (ws / "src").mkdir()
    (ws / "src" / "main.py").write_text("print('hello')\nprint('world')\n")
    (ws / "src" / "run.sh").write_text("#!/bin/sh\necho run\n")
    (ws / "notes with spaces.txt").write_text("keep me\n")
    (ws / "ünïcödé 日本.md").write_text("# títle\n")
    (ws / "crlf.txt").write_bytes(b"one\r\ntwo\nthree\r\n")
    (ws / "doomed").mkdir()
    (ws / "doomed" / "a.txt").write_text("a\n")
    (ws / "doomed" / "deep").mkdir()
    (ws / "doomed" / "deep" / "b.txt").write_text("b\n")
    (ws / "empty-dir").mkdir()
    (ws / "link-inside").symlink_to("src/main.py")
    # Attributes that would rewrite bytes if agentd's store honoured them.
    (ws / ".gitattributes").write_text("* text eol=crlf\n*.txt filter=lfs diff=lfs\n")
    (ws / ".gitignore").write_text("build/\n*.log\n")
    (ws / "build").mkdir()
    (ws / "build" / "out.o").write_bytes(b"\x7fELF...")
    (ws / "app.log").write_text("line 1\n")


def test_revert_undoes_write_edit_and_bash_and_unrevert_redoes_them(start, area):
    box = start()
    ws = box.ws
    populate(ws)
    user_repo(ws)
    (ws / "src" / "main.py").write_text("print('hello')\nprint('dirty, uncommitted')\n")
    outside_before = tree(area / "outside")
    sid = box.session()
    kept = box.say(sid, "first")
    before = tree(ws)
    user_git = tree(ws / ".git")
    odd = "new\nline \\ name*?.txt"
    box.step(
        sid,
        write("made/ñew dir/fïle with spaces.txt", "created by write_file\n"),
        edit("src/main.py", "dirty, uncommitted", "edited by edit_file"),
        bash(
            "set -e\n"
            "printf 'odd\\n' > $'new\\nline \\\\ name*?.txt'\n"
            "printf 'bytes' > $'\\xff\\xfe-not-utf8.bin'\n"
            "echo appended >> 'notes with spaces.txt'\n"
            "chmod +x src/run.sh\n"
            "rm -r doomed\n"
            "printf 'lf only\\n' > crlf.txt\n"
            "ln -sfn notes\\ with\\ spaces.txt link-inside\n"
            "mkdir -p fresh/nested && echo x > fresh/nested/x\n"
            "echo changed >> app.log && rm build/out.o && echo new > build/new.o\n"
            "rm .gitattributes\n"
        ),
        text="change things",
    )
    after = tree(ws)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert {"made", "doomed/a.txt", "src/run.sh", odd, "crlf.txt", "link-inside"} <= changed
    ignored = ("build", "app.log")
    later = [m["id"] for m in box.messages(sid)][2:]

    result = box.revert(sid, kept["id"])
    assert result["messages"] == later and result["conflicts"] == []
    paths = {f["path"]: f["action"] for f in result["files"]}
    assert paths["doomed/deep/b.txt"] == "restore" and paths[odd] == "delete"
    assert paths["made/ñew dir/fïle with spaces.txt"] == "delete"
    assert "\ufffd\ufffd-not-utf8.bin" in paths  # shown as text, restored as bytes
    assert not any(p.startswith(ignored) for p in paths)
    # Byte for byte as before the step, ignored files aside: those are left as the
    # model left them (never snapshotted, never touched by a revert).
    assert tree(ws, leave_out=ignored) == tree_without(before, ignored)
    assert (ws / "app.log").read_text() == "line 1\nchanged\n"
    assert not (ws / "build" / "out.o").exists() and (ws / "build" / "new.o").exists()
    assert tree(ws / ".git") == user_git
    assert tree(area / "outside") == outside_before
    # The later messages stay on disk, out of session/messages unless asked for.
    assert [m["id"] for m in box.messages(sid)] == [m["id"] for m in box.messages(sid)][:2]
    assert len(box.messages(sid)) == 2
    shown = box.messages(sid, includeReverted=True)
    assert [m.get("reverted") for m in shown] == [None, None, True, True]
    log = (area / "data" / "sessions" / sid / "log.jsonl").read_text()
    assert all(f'"id":"{i}"' in log for i in later)

    again = box.unrevert(sid)
    assert again["messages"] == later and again["conflicts"] == []
    assert tree(ws) == after
    assert [m["id"] for m in box.messages(sid)][2:] == later
    assert all("reverted" not in m for m in box.messages(sid, includeReverted=True))
    assert tree(ws / ".git") == user_git
    assert tree(area / "outside") == outside_before


def tree_without(snapshot: dict[str, tuple[Any, ...]], leave_out: tuple[str, ...]) -> dict:
    return {
        k: v
        for k, v in snapshot.items()
        if not any(k == p or k.startswith(p + "/") for p in leave_out)
    }


def test_reverted_messages_are_not_sent_to_the_model_and_a_new_message_ends_unrevert(start, model):
    box = start()
    sid = box.session()
    kept = box.say(sid, "remember apples")
    box.step(sid, write("fruit.txt", "pears\n"), text="remember pears")
    box.revert(sid, kept["id"])
    assert not (box.ws / "fruit.txt").exists()
    model.reset()
    box.say(sid, "what do you remember?")
    sent = json.dumps(model.requests()[0]["body"]["messages"])
    assert "remember apples" in sent and "what do you remember?" in sent
    assert "pears" not in sent
    # Nor are they summarized (two more exchanges: the last four messages are kept
    # verbatim, the rest summarized).
    box.say(sid, "more")
    box.say(sid, "and more")
    model.enqueue({"text": "a summary"})
    box.d.call("session/summarize", {"sessionId": sid})
    summarized = json.dumps(model.requests()[-1]["body"]["messages"])
    assert "remember apples" in summarized and "pears" not in summarized
    # A message came after the revert: it is for good.
    err = error_of(lambda: box.unrevert(sid))
    assert err.code == -32602 and err.data["reason"] == "nothing-to-unrevert"
    assert "a message came after the last revert" in err.message
    assert not (box.ws / "fruit.txt").exists()
    assert len(box.messages(sid)) == 9  # the summary too
    # Nothing was ever reverted in a fresh session: said differently.
    err = error_of(lambda: box.unrevert(box.session()))
    assert err.code == -32602 and "no revert to undo" in err.message


def test_a_reverted_summary_no_longer_stands_for_the_history(start, model):
    box = start()
    sid = box.session()
    for word in ("alpha", "bravo", "charlie"):
        box.say(sid, f"word {word}")
    kept = box.messages(sid)[-1]
    model.enqueue({"text": "SUMMARY-TEXT"})
    box.d.call("session/summarize", {"sessionId": sid})
    box.say(sid, "after the summary")
    box.revert(sid, kept["id"])
    model.reset()
    box.say(sid, "what now?")
    sent = json.dumps(model.requests()[0]["body"]["messages"])
    assert "SUMMARY-TEXT" not in sent and "after the summary" not in sent
    assert all(f"word {w}" in sent for w in ("alpha", "bravo", "charlie"))


def test_reverts_stack_and_unrevert_undoes_the_latest(start):
    box = start()
    ws = box.ws
    (ws / "f.txt").write_text("0\n")
    sid = box.session()
    m0 = box.say(sid)
    states = [tree(ws)]
    marks = [m0]
    for i in range(1, 4):
        marks.append(box.step(sid, write("f.txt", f"{i}\n"), write(f"only{i}.txt", "x")))
        states.append(tree(ws))
    box.revert(sid, marks[2]["id"])
    assert tree(ws) == states[2]
    box.revert(sid, marks[0]["id"])
    assert tree(ws) == states[0]
    assert len(box.messages(sid)) == 2
    err = error_of(lambda: box.revert(sid, marks[2]["id"]))
    assert err.code == -32602 and "is reverted" in err.message
    box.unrevert(sid)
    assert tree(ws) == states[2] and len(box.messages(sid)) == 6
    box.unrevert(sid)
    assert tree(ws) == states[3] and len(box.messages(sid)) == 8


def test_what_a_revert_recreates_gets_the_users_modes(start):
    box = start(umask=0o027)
    ws = box.ws
    (ws / "d").mkdir(mode=0o750)
    (ws / "d" / "f.txt").write_text("f\n")
    (ws / "d" / "f.txt").chmod(0o640)
    (ws / "tool.sh").write_text("#!/bin/sh\n")
    (ws / "tool.sh").chmod(0o750)
    (ws / "own-mode.txt").write_text("mine\n")
    (ws / "own-mode.txt").chmod(0o600)
    sid = box.session()
    kept = box.say(sid)
    before = tree(ws)
    box.step(sid, bash("rm -r d tool.sh && echo changed > own-mode.txt"))
    box.revert(sid, kept["id"])
    # Recreated: 0666 / 0777 (executables) minus the user's umask; rewritten: its own.
    assert tree(ws) == before


# --- conflicts: someone else's change is never silently lost -------------------------------------


USER_CHANGES: dict[str, Callable[[Path], None]] = {
    "edited": lambda p: p.write_text("the user's words\n"),
    "deleted": lambda p: p.unlink(),
    "replaced by a directory": lambda p: (p.unlink(), p.mkdir(), (p / "inner").write_text("u")),
    "replaced by a link": lambda p: (p.unlink(), p.symlink_to("elsewhere")),
    "mode changed": lambda p: p.chmod(0o755),
}


@pytest.mark.parametrize("force", [False, True], ids=["no-force", "force"])
@pytest.mark.parametrize("change", list(USER_CHANGES))
def test_a_file_the_user_changed_after_the_step_is_a_conflict(start, change, force):
    box = start()
    ws = box.ws
    (ws / "shared.txt").write_text("original\n")
    (ws / "other.txt").write_text("other\n")
    sid = box.session()
    kept = box.say(sid)
    before = tree(ws)
    box.step(sid, write("shared.txt", "model\n"), write("other.txt", "model\n"))
    USER_CHANGES[change](ws / "shared.txt")
    users = tree(ws)
    dry = box.revert(sid, kept["id"], force=force, dryRun=True)
    assert tree(ws) == users and len(box.messages(sid)) == 4  # a dry run changes nothing
    result = box.revert(sid, kept["id"], force=force)
    assert {k: v for k, v in dry.items() if k != "dryRun"} == result and dry["dryRun"] is True
    assert (ws / "other.txt").read_text() == "other\n"
    if force and change == "replaced by a directory":
        # Forced, still not at the cost of the user's files in that directory.
        assert result["conflicts"] == [
            {"path": "shared.txt", "reason": "a directory is in its place"}
        ]
        assert tree(ws) == {**tree_without(users, ("other.txt",)), "other.txt": before["other.txt"]}
    elif force:
        assert result["conflicts"] == []
        assert tree(ws) == before
    else:
        assert [c["path"] for c in result["conflicts"]] == ["shared.txt"]
        assert "someone else" in result["conflicts"][0]["reason"]
        assert tree(ws, leave_out=("shared.txt",)) == tree_without(before, ("shared.txt",))
        assert tree(ws) == {**tree_without(users, ("other.txt",)), "other.txt": before["other.txt"]}
    # The unrevert puts back what the revert changed, and only that.
    box.unrevert(sid)
    assert (ws / "other.txt").read_text() == "model\n"
    if not force or change == "replaced by a directory":
        assert tree(ws) == users


def test_a_user_edit_between_two_runs_is_a_conflict_for_a_revert_across_both(start):
    box = start()
    ws = box.ws
    (ws / "a.txt").write_text("v0\n")
    sid = box.session()
    kept = box.say(sid)
    box.step(sid, write("a.txt", "model 1\n"), write("b.txt", "model 1\n"))
    (ws / "a.txt").write_text("user between runs\n")
    box.step(sid, edit("a.txt", "user between runs", "model 2 on the user's text"))
    result = box.revert(sid, kept["id"])
    assert [c["path"] for c in result["conflicts"]] == ["a.txt"]
    assert (ws / "a.txt").read_text() == "model 2 on the user's text\n"
    assert not (ws / "b.txt").exists()


def test_a_user_edit_after_a_revert_is_a_conflict_for_unrevert(start):
    box = start()
    ws = box.ws
    (ws / "a.txt").write_text("v0\n")
    sid = box.session()
    kept = box.say(sid)
    box.step(sid, write("a.txt", "model\n"), write("b.txt", "model\n"))
    box.revert(sid, kept["id"])
    (ws / "a.txt").write_text("user after the revert\n")
    result = box.unrevert(sid)
    assert [c["path"] for c in result["conflicts"]] == ["a.txt"]
    assert (ws / "a.txt").read_text() == "user after the revert\n"
    assert (ws / "b.txt").read_text() == "model\n"


# --- aborted and crashed runs ------------------------------------------------------------------


def wait_running(box: Box, sid: str) -> None:
    def running() -> bool:
        return any(
            n["params"]["part"].get("state", {}).get("status") == "running"
            for n in box.d.notifications("part/updated")
            if n["params"]["sessionId"] == sid and n["params"]["part"]["type"] == "tool"
        )

    box.d.wait_for(running, timeout=30)


STUCK = "echo made > made.txt; echo more >> keep.txt; rm gone.txt; touch started; sleep 60"


def stuck_run(box: Box, sid: str) -> Any:
    box.model.enqueue({"toolCalls": [bash(STUCK)]}, {"text": "never"})
    params = {"sessionId": sid, "parts": [{"type": "text", "text": "go"}], "tools": TOOLS}
    msg_id = box.d.request_async("session/chat", params)
    wait_running(box, sid)
    box.d.wait_for(lambda: (box.ws / "started").exists(), timeout=30)
    return msg_id


def test_revert_of_an_aborted_run(start):
    box = start()
    ws = box.ws
    (ws / "keep.txt").write_text("keep\n")
    (ws / "gone.txt").write_text("gone\n")
    sid = box.session()
    kept = box.say(sid)
    before = tree(ws)
    chat = stuck_run(box, sid)
    assert box.d.call("session/abort", {"sessionId": sid})["aborted"] is True
    assert box.d.result(chat, timeout=30)["message"]["finishReason"] == "aborted"
    result = box.revert(sid, kept["id"])
    assert result["conflicts"] == []
    assert tree(ws) == before


@pytest.mark.unshared
def test_revert_of_a_run_interrupted_by_a_crash(start, area, model):
    box = start()
    ws = box.ws
    (ws / "keep.txt").write_text("keep\n")
    (ws / "gone.txt").write_text("gone\n")
    sid = box.session()
    kept = box.say(sid)
    before = tree(ws)
    stuck_run(box, sid)
    box.d.proc.kill()
    box.d.proc.wait(20)
    after_crash = tree(ws)
    assert after_crash != before
    box2 = start()
    messages = box2.messages(sid)
    assert messages[-1]["finishReason"] == "interrupted"
    result = box2.revert(sid, kept["id"])
    assert result["conflicts"] == []
    assert tree(ws) == before
    box2.unrevert(sid)
    assert tree(ws) == after_crash


# --- bad input, busy sessions ---------------------------------------------------------------------


def test_bad_input_is_refused_and_changes_nothing(start):
    box = start()
    ws = box.ws
    sid = box.session()
    other = box.session()
    kept = box.say(sid)
    foreign = box.say(other)
    box.step(sid, write("a.txt", "a\n"))
    last = box.messages(sid)[-1]["id"]
    state = tree(ws)
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"sessionId": sid, "messageId": "msg_0123456789abcdef01234567"}, -32602, "no message"),
        ({"sessionId": sid, "messageId": foreign["id"]}, -32602, "no message"),
        ({"sessionId": sid, "messageId": "../../etc"}, -32602, "no message"),
        ({"sessionId": sid, "messageId": last}, -32602, "nothing comes after"),
        ({"sessionId": sid, "messageId": 7}, -32602, "messageId"),
        ({"sessionId": sid}, -32602, "messageId"),
        ({"sessionId": "ses_0123456789abcdef01234567", "messageId": kept["id"]}, 1001, ""),
        ({"sessionId": "../x", "messageId": kept["id"]}, 1001, ""),
        ({"sessionId": sid, "messageId": kept["id"], "force": "yes"}, -32602, "force"),
    ]
    for params, code, words in cases:
        err = error_of(lambda params=params: box.d.call("session/revert", params))
        assert err.code == code, (params, err)
        assert words in err.message, (params, err)
    assert error_of(lambda: box.unrevert("ses_0123456789abcdef01234567")).code == 1001
    assert tree(ws) == state and len(box.messages(sid)) == 4


def test_a_busy_session_is_1002_here_and_in_another_daemon(start, area):
    box = start()
    ws = box.ws
    (ws / "keep.txt").write_text("keep\n")
    (ws / "gone.txt").write_text("gone\n")
    sid = box.session()
    kept = box.say(sid)
    box.step(sid, write("a.txt", "a\n"))
    box.revert(sid, kept["id"])
    chat = stuck_run(box, sid)
    busy = [
        n["params"]["runId"]
        for n in box.d.notifications("session/status")
        if n["params"]["status"] == "busy" and n["params"]["sessionId"] == sid
    ]
    run_id = busy[-1]
    state = tree(ws)
    other = start()
    for daemon in (box.d, other.d):
        for method, params in (
            ("session/revert", {"sessionId": sid, "messageId": kept["id"]}),
            ("session/unrevert", {"sessionId": sid}),
        ):
            err = error_of(
                lambda daemon=daemon, method=method, params=params: daemon.call(method, params)
            )
            assert err.code == 1002, (method, err)
            assert err.data == {"sessionId": sid, "runId": run_id}
    assert tree(ws) == state
    box.d.call("session/abort", {"sessionId": sid})
    box.d.result(chat, timeout=30)
    # Idle again: the unrevert of the first revert is gone (a message came after it),
    # and a revert of the aborted run works from the other daemon.
    result = other.revert(sid, kept["id"])
    assert "made.txt" in {f["path"] for f in result["files"]}
    assert (ws / "gone.txt").exists() and not (ws / "a.txt").exists()


# --- hostile workspaces -------------------------------------------------------------------


def test_links_the_model_made_out_of_the_workspace_are_never_followed(start, area):
    box = start()
    ws, outside = box.ws, area / "outside"
    (outside / "secret.txt").write_text("outside, keep\n")
    (outside / "dir").mkdir()
    (outside / "dir" / "x.txt").write_text("outside x\n")
    (ws / "sub").mkdir()
    (ws / "sub" / "x.txt").write_text("inside x\n")
    (ws / "plain.txt").write_text("plain\n")
    sid = box.session()
    kept = box.say(sid)
    before = tree(ws)
    outside_before = tree(outside)
    box.step(
        sid,
        bash(
            f"ln -s {outside}/secret.txt evil-file\n"
            f"ln -s {outside}/dir evil-dir\n"
            f"rm -r sub && ln -s {outside}/dir sub\n"
            f"rm plain.txt && ln -s {outside}/secret.txt plain.txt\n"
        ),
    )
    result = box.revert(sid, kept["id"])
    assert result["conflicts"] == []
    assert tree(ws) == before
    assert tree(outside) == outside_before
    # A link the user puts on the path afterwards is not followed either, even forced.
    box.unrevert(sid)
    box.revert(sid, kept["id"])
    box.step(sid, write("made/inner.txt", "model\n"))
    shutil.rmtree(ws / "made")
    (ws / "made").symlink_to(outside / "dir")
    (outside / "dir" / "inner.txt").write_text("outside inner\n")
    outside_before = tree(outside)
    box.revert(sid, box.messages(sid)[-3]["id"], force=True)
    assert tree(outside) == outside_before


def store_objects(area: Path) -> list[bytes]:
    """Every object in agentd's snapshot stores, as git reads it (uncompressed)."""
    return [
        zlib.decompress(path.read_bytes())
        for path in (area / "data" / "snapshots").glob("*/objects/??/*")
    ]


def test_a_hard_link_to_a_file_outside_is_never_snapshotted_nor_brought_back(start, area):
    """A name in the workspace that is a hard link to a file outside (made by another
    process: the tools refuse such files) is left out of every snapshot: a revert of the
    step that removed it does not bring the outside bytes back as a file of the
    workspace, and the store never holds them. Each way: the link there before the
    first snapshot, made between two runs, and a directory swapped for a link to an
    outside directory."""
    box = start()
    ws, outside = box.ws, area / "outside"
    (outside / "secret.txt").write_text("OUTSIDE-BYTES\n")
    (outside / "dir").mkdir()
    (outside / "dir" / "deep.txt").write_text("OUTSIDE-BYTES deep\n")
    os.link(outside / "secret.txt", ws / "early.txt")
    (ws / "sub").mkdir()
    (ws / "sub" / "x.txt").write_text("inside x\n")
    sid = box.session()
    kept = box.say(sid)
    os.link(outside / "secret.txt", ws / "between.txt")
    shutil.rmtree(ws / "sub")
    (ws / "sub").symlink_to(outside / "dir")
    box.step(sid, bash("rm early.txt between.txt sub && mkdir sub && echo new > sub/x.txt"))
    result = box.revert(sid, kept["id"])
    assert result["conflicts"] == []
    assert not (ws / "early.txt").exists() and not (ws / "between.txt").exists()
    # The step's own change is undone; what it removed comes back as the link it was.
    assert os.readlink(ws / "sub") == str(outside / "dir")
    assert tree(outside)["secret.txt"] == ("file", 0o644, b"OUTSIDE-BYTES\n")
    objects = store_objects(area)
    assert objects and not any(b"OUTSIDE-BYTES" in o for o in objects)


def test_two_sessions_on_one_workspace_revert_only_their_own_changes(start, area):
    # The data and state dirs inside the workspace, as when agentd's are under a
    # project: they are never snapshotted, so a revert never rewinds a session's log.
    box = start(workspace=area)
    ws = area
    (ws / "shared.txt").write_text("v0\n")
    a, b = box.session(), box.session()
    a0, b0 = box.say(a), box.say(b)
    box.step(a, write("from-a.txt", "a\n"), edit("shared.txt", "v0", "a"))
    box.step(b, write("from-b.txt", "b\n"))
    result = box.revert(a, a0["id"])
    assert {f["path"] for f in result["files"]} == {"from-a.txt", "shared.txt"}
    assert (ws / "from-b.txt").read_text() == "b\n" and not (ws / "from-a.txt").exists()
    assert (ws / "shared.txt").read_text() == "v0\n"
    assert len(box.messages(a)) == 2 and len(box.messages(b)) == 4
    # Session b changes what a changed: a's unrevert leaves it alone.
    box.step(b, edit("shared.txt", "v0", "b"))
    result = box.unrevert(a)
    assert [c["path"] for c in result["conflicts"]] == ["shared.txt"]
    assert (ws / "shared.txt").read_text() == "b\n" and (ws / "from-a.txt").exists()
    # b's revert: before b's first step, shared.txt held a's change, and a's revert
    # changed it since: someone else's change, a conflict; forced, it goes back to what
    # it was before b's first step.
    result = box.revert(b, b0["id"])
    assert [c["path"] for c in result["conflicts"]] == ["shared.txt"]
    assert (ws / "shared.txt").read_text() == "b\n" and not (ws / "from-b.txt").exists()
    assert (ws / "from-a.txt").exists()
    box.unrevert(b)
    box.revert(b, b0["id"], force=True)
    assert (ws / "shared.txt").read_text() == "a\n" and not (ws / "from-b.txt").exists()
    # Every log is intact and readable after all that.
    for sid, count in ((a, 4), (b, 2)):
        assert len(box.messages(sid)) == count


def test_nested_repositories_are_left_as_they_are(start):
    box = start()
    ws = box.ws
    (ws / "fresh").mkdir()
    subprocess.run(["git", "init", "-q", str(ws / "fresh")], check=True)
    (ws / "fresh" / "inner.txt").write_text("inner\n")
    (ws / "committed").mkdir()
    (ws / "committed" / "c.txt").write_text("c\n")
    user_repo(ws / "committed")
    sid = box.session()
    kept = box.say(sid)
    before = tree(ws)
    commit = "git -c user.name=m -c user.email=m@x commit -qam model"
    box.step(
        sid,
        write("top.txt", "top\n"),
        bash(f"echo more >> fresh/inner.txt && cd committed && echo m >> c.txt && {commit}"),
        bash(f"git init -q made && cd made && echo x > x && git add x && {commit}"),
    )
    result = box.revert(sid, kept["id"])
    # Not snapshotted (their own git keeps their history): left as the model left them.
    assert result["files"] == [{"path": "top.txt", "action": "delete"}]
    assert result["conflicts"] == []
    assert tree(ws, leave_out=("fresh", "committed", "made")) == tree_without(
        before, ("fresh", "committed")
    )
    assert (ws / "fresh" / "inner.txt").read_text() == "inner\nmore\n"
    assert (ws / "committed" / "c.txt").read_text() == "c\nm\n"
    assert (ws / "made" / "x").read_text() == "x\n"


def test_a_damaged_or_locked_index_is_recovered_and_a_deleted_store_is_named(start, area):
    box = start()
    ws = box.ws
    (ws / "a.txt").write_text("a\n")
    sid = box.session()
    kept = box.say(sid)
    before = tree(ws)
    box.step(sid, write("a.txt", "model 1\n"))
    [store] = (area / "data" / "snapshots").iterdir()
    (store / "index").write_bytes(b"DIRC" + os.urandom(300))  # a torn write
    (store / "index.lock").write_bytes(b"")  # left by a git killed with agentd
    box.step(sid, write("b.txt", "model 2\n"))
    assert box.revert(sid, kept["id"])["conflicts"] == []
    assert tree(ws) == before
    box.unrevert(sid)
    shutil.rmtree(store)
    state = tree(ws)
    err = error_of(lambda: box.revert(sid, kept["id"]))
    assert err.code == -32603 and err.data["reason"] == "missing"
    assert "is gone from" in err.message
    assert tree(ws) == state and len(box.messages(sid)) == 6


# --- workspaces that cannot be snapshotted -----------------------------------------------------


def test_a_workspace_too_large_to_snapshot_fails_the_revert_saying_why(start):
    box = start(CONFIG + "[snapshots]\nmax_files = 5\n")
    ws = box.ws
    for i in range(8):
        (ws / f"f{i}.txt").write_text(f"{i}\n")
    sid = box.session()
    kept = box.say(sid)
    box.step(sid, write("new.txt", "new\n"))
    state = tree(ws)
    err = error_of(lambda: box.revert(sid, kept["id"]))
    assert err.code == -32603 and err.data["reason"] == "too-large"
    assert "more than 5 files" in err.message and "max_files" in err.message
    assert tree(ws) == state and len(box.messages(sid)) == 4


def test_snapshots_turned_off_fail_the_revert_saying_why(start):
    box = start(CONFIG + "[snapshots]\nenabled = false\n")
    sid = box.session()
    kept = box.say(sid)
    box.step(sid, write("new.txt", "new\n"))
    err = error_of(lambda: box.revert(sid, kept["id"]))
    assert err.code == -32603 and err.data["reason"] == "snapshots-off"
    assert (box.ws / "new.txt").exists() and len(box.messages(sid)) == 4
    # A revert over messages that changed no file needs no snapshot.
    box.say(sid, "and then")
    assert box.revert(sid, box.messages(sid)[3]["id"])["files"] == []


def test_without_git_the_revert_fails_saying_why(start, area):
    box = start(PATH="/nonexistent")
    sid = box.session()
    kept = box.say(sid)
    box.step(sid, write("new.txt", "new\n"))
    err = error_of(lambda: box.revert(sid, kept["id"]))
    assert err.code == -32603 and err.data["reason"] == "no-git"
    assert "git is not installed" in err.message
    assert (box.ws / "new.txt").exists() and len(box.messages(sid)) == 4


def test_a_workspace_that_is_no_longer_a_directory_fails_the_revert(start, area):
    box = start()
    sid = box.session()
    kept = box.say(sid)
    box.step(sid, write("new.txt", "new\n"))
    moved = area / "moved"
    box.ws.rename(moved)
    box.ws.write_text("a file now\n")
    err = error_of(lambda: box.revert(sid, kept["id"]))
    assert err.code == -32603 and err.data["reason"] == "not-a-directory"
    assert box.ws.read_text() == "a file now\n" and (moved / "new.txt").exists()
    assert len(box.messages(sid)) == 4


def test_changes_made_before_agentd_kept_snapshots_are_named(start, area):
    box = start()
    sid = box.session()
    kept = box.say(sid)
    box.step(sid, write("new.txt", "new\n"))
    box.d.stop()
    log = area / "data" / "sessions" / sid / "log.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(line for line in lines if '"k":"snapshot"' not in line))
    box = start()
    err = error_of(lambda: box.revert(sid, kept["id"]))
    assert err.code == -32603 and "before agentd kept snapshots" in err.message
    assert (box.ws / "new.txt").exists() and len(box.messages(sid)) == 4
