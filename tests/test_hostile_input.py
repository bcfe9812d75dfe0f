"""Hostile input to the workspace tools and to attached files, end to end: the real daemon,
real pipes, the scripted model asking for the tool calls, real files, FIFOs, symlinks and a
second process racing the tools.

Three classes: patterns that make a backtracking regex engine run for ever (grep, glob,
include), paths swapped for symlinks while a tool runs, and attached `file` parts that
name what must not be read (FIFOs, huge files, NUL bytes, paths out of the workspace).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path
from typing import Any

import psutil
import pytest
from rpc_client import RpcError

SECRET = "OUTSIDE-SECRET"


def new_session(d: Any, **params: Any) -> str:
    return d.call("session/create", {"title": "t", **params})["session"]["id"]


def chat(d: Any, sid: str, *parts: dict[str, Any], timeout: float = 60, **extra: Any) -> Any:
    return d.call("session/chat", {"sessionId": sid, "parts": list(parts), **extra}, timeout)


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def tool_parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in message["parts"] if p["type"] == "tool"]


def tool_text(part: dict[str, Any]) -> str:
    state = part["state"]
    return state.get("output") if state["status"] == "completed" else state.get("error", "")


def write_config(tmp_path: Path, body: str) -> str:
    path = tmp_path / "agentd.toml"
    path.write_text(textwrap.dedent(body))
    return str(path)


def grep_children(d: Any) -> list[psutil.Process]:
    """The daemon's child processes running grep with Python's re."""
    try:
        children = psutil.Process(d.proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        try:
            if "agentd.tools.grep_child" in " ".join(child.cmdline()):
                found.append(child)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            pass
    return found


def gone(processes: list[psutil.Process]) -> bool:
    for proc in processes:
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            pass
    return True


def running_tool(d: Any, name: str) -> Any:
    return d.wait_for(
        lambda: [
            n
            for n in d.notifications("part/updated")
            if n["params"]["part"].get("tool") == name
            and n["params"]["part"]["state"]["status"] == "running"
        ]
    )


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    d = tmp_path / "outside"
    d.mkdir()
    (d / "s.txt").write_text(f"harmless {SECRET}\n")
    (d / "edit.txt").write_text(f"line {SECRET}\n")
    (d / "linked.txt").write_text(f"harmless {SECRET}\n")
    (d / f"{SECRET}-NAME.txt").write_text("x\n")
    return d


def snapshot(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): p.read_text() if p.is_file() else "<dir>"
        for p in sorted(directory.rglob("*"))
    }


# --- 1. patterns that make a backtracking engine run for ever ---------------------------

# Each of these takes Python's re hours on the lines below; all are answered at once.
EXPONENTIAL_GLOB = "{*,*}" * 25 + "x"


def test_catastrophic_patterns_are_answered_at_once(spawn, model, ws: Path) -> None:
    (ws / "evil.txt").write_text("a" * 40 + "!\n" + "aaaa\n" + "x" * 40 + "\n" + "a" * 30 + "b\n")
    (ws / ("a" * 60 + ".txt")).write_text("b\n")
    d = spawn(model.base_url, workspace=ws)
    sid = new_session(d)
    words = "evil.txt:2:aaaa\nevil.txt:3:" + "x" * 40 + "\nevil.txt:4:" + "a" * 30 + "b"
    calls = [
        ("grep", {"pattern": "^(a+)+$"}, "evil.txt:2:aaaa"),
        ("grep", {"pattern": "^(a|a)+$"}, "evil.txt:2:aaaa"),
        ("grep", {"pattern": "^(a|aa)+$", "path": "evil.txt"}, "evil.txt:2:aaaa"),
        ("grep", {"pattern": "(x+x+)+y"}, "No matches found."),
        ("grep", {"pattern": "^(.*a){25}$"}, "No matches found."),
        ("grep", {"pattern": r"^(\w+\s?)+$", "path": "evil.txt"}, words),
        ("glob", {"pattern": EXPONENTIAL_GLOB}, f"No files found matching {EXPONENTIAL_GLOB}"),
        (
            "glob",
            {"pattern": "**/" + EXPONENTIAL_GLOB},
            f"No files found matching **/{EXPONENTIAL_GLOB}.",
        ),
        ("grep", {"pattern": "a", "include": EXPONENTIAL_GLOB}, "No matches found."),
    ]
    model.enqueue(
        {"toolCalls": [{"name": name, "arguments": args} for name, args, _ in calls]},
        {"text": "done"},
    )
    msg = chat(d, sid, text("search"))["message"]
    parts = tool_parts(msg)
    assert len(parts) == len(calls)
    for part, (name, args, expected) in zip(parts, calls, strict=True):
        assert part["state"]["status"] == "completed", (name, args, part["state"])
        assert part["state"]["output"].startswith(expected), (name, args, part["state"])
    assert msg["finishReason"] == "stop"


@pytest.mark.unshared
def test_a_backtracking_fallback_pattern_leaves_the_daemon_free_and_aborts_at_once(
    spawn, model, ws: Path, tmp_path: Path
) -> None:
    """Lookaround and backreferences are matched with Python's re, in a child process:
    the daemon answers meanwhile, abort kills it, and so does closing stdin."""
    (ws / "evil.txt").write_text("a" * 40 + "!\n")
    config = write_config(tmp_path, "search_timeout = 600\n")
    d = spawn(model.base_url, workspace=ws, AGENTD_CONFIG=config)
    sid = new_session(d)
    other = new_session(d)
    model.enqueue({"toolCalls": [{"name": "grep", "arguments": {"pattern": r"^(?=a)(a+)+$"}}]})
    chat_id = d.request_async(
        "session/chat", {"sessionId": sid, "parts": [text("search")], "maxSteps": 1}
    )
    running_tool(d, "grep")
    children = d.wait_for(lambda: grep_children(d))
    # The daemon answers other requests and runs other sessions while the match runs.
    assert d.call("session/list", {})["sessions"]
    model.enqueue({"text": "the other session is served"})
    assert "served" in json.dumps(chat(d, other, text("hi"))["message"])
    assert not gone(children), "the search was meant to be still running"
    # Abort ends the run at once and kills the search.
    assert d.call("session/abort", {"sessionId": sid})["aborted"] is True
    msg = d.result(chat_id)["message"]
    assert msg["finishReason"] == "aborted"
    assert tool_parts(msg)[0]["state"]["error"] == "aborted"
    d.wait_for(lambda: gone(children))
    # Closing stdin during such a search ends the daemon and the search with it.
    model.enqueue({"toolCalls": [{"name": "grep", "arguments": {"pattern": r"^(a+)+\1$"}}]})
    d.request_async("session/chat", {"sessionId": sid, "parts": [text("again")]})
    children = d.wait_for(lambda: grep_children(d))
    d.close_stdin()
    assert d.wait_exit(30) == 0
    d.wait_for(lambda: gone(children))


def test_the_search_time_budget_ends_as_a_tool_result_with_what_was_found(
    spawn, model, ws: Path, tmp_path: Path
) -> None:
    (ws / "a_first.txt").write_text("aaaa\nbbb\naa\n")
    (ws / "z_evil.txt").write_text("a" * 40 + "!\n")
    config = write_config(tmp_path, "search_timeout = 1\n")
    d = spawn(model.base_url, workspace=ws, AGENTD_CONFIG=config)
    sid = new_session(d)
    model.enqueue(
        {"toolCalls": [{"name": "grep", "arguments": {"pattern": r"^(?=a)(a+)+$"}}]},
        {"text": "done"},
    )
    msg = chat(d, sid, text("search"))["message"]
    state = tool_parts(msg)[0]["state"]
    assert state["status"] == "completed"
    # The matches streamed before the budget ran out are kept, and the note says why the
    # results end there and what to do.
    assert state["output"].startswith("a_first.txt:1:aaaa\na_first.txt:3:aa\n\n")
    assert "time budget of 1 s ran out" in state["output"]
    assert "linear" in state["output"]
    assert state["metadata"]["timedOut"] is True and state["metadata"]["matches"] == 2
    d.wait_for(lambda: not grep_children(d))
    # The model reads the note as the tool's result.
    sent = model.requests()[-1]["body"]["messages"]
    assert "time budget" in sent[-1]["content"]


def test_names_and_arguments_that_are_not_unicode_never_fail_the_run(
    spawn, model, ws: Path
) -> None:
    """A workspace file name that is not UTF-8, and tool arguments with a lone surrogate
    or a huge integer: each was a -32603 that failed the whole run (the tool part could
    not be stored). Now a name shows U+FFFD and bad arguments are a tool error."""
    raw = os.fsencode(ws)
    os.mkdir(os.path.join(raw, b"dir\xff"))
    with open(os.path.join(raw, b"dir\xff", b"n\xe9e.txt"), "w") as f:
        f.write("hello there\n")
    d = spawn(model.base_url, workspace=ws)
    sid = new_session(d)
    model.enqueue(
        {
            "toolCalls": [
                {"name": "grep", "arguments": {"pattern": "hello"}},
                {"name": "glob", "arguments": {"pattern": "**/*.txt"}},
                {"name": "list_dir", "arguments": {}},
                {"name": "read_file", "arguments": '{"path": "x\\ud800"}'},
                {"name": "grep", "arguments": '{"pattern": "\\udcff"}'},
                {
                    "name": "read_file",
                    "arguments": '{"path": "a", "offset": 123456789012345678901234}',
                },
            ]
        },
        {"text": "done"},
    )
    msg = chat(d, sid, text("look"))["message"]
    assert msg["finishReason"] == "stop"
    outputs = [tool_text(p) for p in tool_parts(msg)]
    assert outputs[0] == "dir\ufffd/n\ufffde.txt:1:hello there"
    assert outputs[1] == "dir\ufffd/n\ufffde.txt"
    assert outputs[2] == "dir\ufffd/"
    for bad in outputs[3:]:
        assert "the arguments cannot be used" in bad, bad
    model.enqueue({"text": "next"})
    assert chat(d, sid, text("again"))["message"]["finishReason"] == "stop"


# --- 2. paths swapped for symlinks while the tools run ---------------------------------

SWAPPER = r"""
import ctypes, os, sys, time
ws, out, stop = sys.argv[1:4]
deadline = time.monotonic() + 120
secret = os.path.join(out, "s.txt")
# Each name gets a bad twin next to it, and the two are exchanged over and over, so the
# name is a symlink (or a hard link) to something outside half of the time.
twins = [
    ("f.txt", lambda p: os.symlink(secret, p)),  # a file <-> a symlink to an outside file
    # A file <-> a hard link to an outside file (another one: s.txt keeps one link).
    ("h.txt", lambda p: os.link(os.path.join(out, "linked.txt"), p)),
    ("d/s.txt", lambda p: os.symlink(secret, p)),  # the same, in a directory swapped too
    ("d", lambda p: os.symlink(out, p)),  # a directory <-> a symlink to an outside dir
    ("g/h", lambda p: os.symlink(out, p)),  # the same, one level down
    ("e", lambda p: os.symlink(secret, p)),  # a directory <-> a symlink to an outside file
]
for name, make in twins:
    make(os.path.join(ws, name + ".bad"))
renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
AT_FDCWD, RENAME_EXCHANGE = -100, 2


def exchange(a, b):
    global renameat2
    if renameat2 is not None:
        # One atomic renameat2(RENAME_EXCHANGE): the name is never missing, only swapped.
        if renameat2(AT_FDCWD, a.encode(), AT_FDCWD, b.encode(), RENAME_EXCHANGE) == 0:
            return
        err = ctypes.get_errno()
        if err == 2:  # ENOENT: d/s.txt while d is the symlink
            return
        if err not in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: three renames below
            raise OSError(err, os.strerror(err), a)
        renameat2 = None
    try:
        os.rename(a, a + ".x")
    except FileNotFoundError:
        return
    os.rename(b, a)
    os.rename(a + ".x", b)


pairs = [(os.path.join(ws, n), os.path.join(ws, n + ".bad")) for n, _ in twins]
rounds = 0
print("ready", flush=True)
while not os.path.exists(stop) and time.monotonic() < deadline:
    for a, b in pairs:
        exchange(a, b)
    for a, b in reversed(pairs):
        exchange(a, b)
    rounds += 1
print(rounds)
"""


def start_swapper(ws: Path, outside: Path, tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    for name in ("d", "e", "g/h"):
        (ws / name).mkdir(parents=True)
        (ws / name / "s.txt").write_text("harmless inside\n")
    (ws / "d" / "edit.txt").write_text("line\n")
    (ws / "calm.txt").write_text("calm\n")
    for name in ("f.txt", "h.txt"):
        (ws / name).write_text("harmless inside\n")
    stop = tmp_path / "stop-swapping"
    proc = subprocess.Popen(
        [sys.executable, "-c", SWAPPER, str(ws), str(outside), str(stop)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"  # racing from the first tool call on
    return proc, stop


def stop_swapper(proc: subprocess.Popen, stop: Path) -> int:
    stop.touch()
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    return int(out)


RACED_CALLS: list[tuple[str, dict[str, Any]]] = [
    ("grep", {"pattern": "harmless"}),
    ("grep", {"pattern": "harmless", "path": "d"}),
    ("grep", {"pattern": "harmless", "path": "d/s.txt"}),
    ("grep", {"pattern": "harmless", "path": "g"}),
    ("grep", {"pattern": "harmless", "path": "f.txt"}),
    ("grep", {"pattern": "harmless", "path": "e"}),
    ("glob", {"pattern": "**/*"}),
    ("glob", {"pattern": "d/*"}),
    ("glob", {"pattern": "*", "path": "g/h"}),
    ("list_dir", {"path": "d"}),
    ("list_dir", {"path": "g/h"}),
    ("list_dir", {"path": "e"}),
    ("read_file", {"path": "d/s.txt"}),
    ("read_file", {"path": "g/h/s.txt"}),
    ("read_file", {"path": "f.txt"}),
    ("read_file", {"path": "h.txt"}),
    ("read_file", {"path": "e/s.txt"}),
    ("edit_file", {"path": "d/edit.txt", "oldString": "line", "newString": "line!"}),
    # The swapper exchanges names so fast that a raced edit (its checks, its read, its
    # write) is nearly always refused somewhere: all twelve tries often are. An edit of a
    # file the swapper never touches, in the same workspace meanwhile, shows edit_file at
    # work (and a raced edit that got through would have changed the outside).
    ("edit_file", {"path": "f.txt", "oldString": "inside", "newString": "inside!"}),
    ("edit_file", {"path": "calm.txt", "oldString": "calm", "newString": "calm!"}),
    ("write_file", {"path": "d/s.txt", "content": "harmless inside\n"}),
    ("write_file", {"path": "g/h/new/deep.txt", "content": "new\n"}),
]


def test_symlink_swaps_during_the_tools_never_reach_outside(
    spawn, model, ws: Path, outside: Path, tmp_path: Path
) -> None:
    """A second process swaps directories and files for symlinks (to an outside directory
    and to an outside file) and files for hard links, in a tight loop, while the model
    calls every reading and writing tool over and over: no output ever holds what is
    outside, and nothing outside changes."""
    config = write_config(tmp_path, "allow_write_tools = true\n")
    before = snapshot(outside)
    d = spawn(model.base_url, workspace=ws, AGENTD_CONFIG=config)
    sid = new_session(d)
    steps = 12
    model.enqueue(
        {
            "toolCalls": [{"name": name, "arguments": args} for name, args in RACED_CALLS],
            "repeat": steps,
        },
        {"text": "done"},
    )
    swapper, stop = start_swapper(ws, outside, tmp_path)
    try:
        msg = chat(d, sid, text("look around"), tools=["*"], maxSteps=steps + 1, timeout=240)[
            "message"
        ]
    finally:
        rounds = stop_swapper(swapper, stop)
    parts = tool_parts(msg)
    assert len(parts) == steps * len(RACED_CALLS)
    for part in parts:
        assert SECRET not in json.dumps(part), part
    assert snapshot(outside) == before
    # The tools did their work whenever the paths were real: this is not a pass by refusal.
    ok = [p for p in parts if p["state"]["status"] == "completed"]
    assert any(p["tool"] == "read_file" and "harmless inside" in tool_text(p) for p in ok)
    assert any(p["tool"] == "grep" and "harmless inside" in tool_text(p) for p in ok)
    assert any(p["tool"] == "list_dir" and "s.txt" in tool_text(p) for p in ok)
    assert any(p["tool"] == "edit_file" for p in ok)
    assert rounds > steps
    # Nothing of the outside reached the session's files either, nor the snapshots the
    # steps took (git objects, compressed: read as git would).
    objects = 0
    for path in (tmp_path / "data").rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            if path.parent.parent.name == "objects":
                content = zlib.decompress(content)
                objects += 1
            assert SECRET.encode() not in content, path
    assert objects > 0  # the snapshots were taken, with the race on


def test_symlink_swaps_during_many_direct_tool_calls(
    ws: Path, outside: Path, tmp_path: Path
) -> None:
    """The same race without a model round trip between the calls: every tool, for a few
    seconds (about 5,000 calls; on the code before the fix, 165 of 5,240 grep, glob and
    list_dir results held outside content and write_file made a directory outside)."""
    import asyncio
    import time

    from agentd.tools import ToolEnv, run_builtin_tool

    env = ToolEnv(workspace_root=ws, spill_dir=tmp_path / "spill")
    before = snapshot(outside)
    swapper, stop = start_swapper(ws, outside, tmp_path)

    async def race() -> list[tuple[str, dict[str, Any], Any]]:
        outputs = []
        end = time.monotonic() + 4
        while time.monotonic() < end:
            for name, args in RACED_CALLS:
                out = await run_builtin_tool(name, args, env, call_id="c")
                outputs.append((name, args, out))
        return outputs

    try:
        outputs = asyncio.run(race())
    finally:
        stop_swapper(swapper, stop)
    for name, args, out in outputs:
        assert SECRET not in out.output and SECRET not in json.dumps(out.metadata), (name, args)
    assert snapshot(outside) == before
    assert any("harmless inside" in out.output for name, _, out in outputs if name == "grep")
    assert any(name == "write_file" and not out.is_error for name, _, out in outputs)


# --- 3. attached file parts ------------------------------------------------------------


def peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


INVALID_PARTS: list[tuple[dict[str, Any], str]] = [
    ({"type": "file", "path": "a\x00b"}, "params.parts[1].path: contains a NUL byte"),
    ({"type": "file", "path": "\x00"}, "NUL byte"),
    ({"type": "file", "path": ""}, "params.parts[1].path: must not be empty"),
    ({"type": "file", "path": "ok\udcff.txt"}, "params.parts[1].path: contains a lone surrogate"),
    ({"type": "file", "path": 42}, "params.parts[1].path: expected string"),
    ({"type": "file", "path": None}, "params.parts[1].path"),
    ({"type": "file", "path": ["ok.txt"]}, "params.parts[1].path: expected string"),
    ({"type": "file", "path": {"p": "ok.txt"}}, "params.parts[1].path: expected string"),
    ({"type": "file"}, "params.parts[1].path"),
    ({"type": "file", "path": "ok.txt", "mime": 5}, "params.parts[1].mime: expected string"),
    ({"type": "file", "path": "../outside/s.txt"}, "outside the workspace"),
    ({"type": "file", "path": "/etc/passwd"}, "outside the workspace"),
    ({"type": "file", "path": "d/../../x"}, "outside the workspace"),
    ({"type": "file", "path": "a" * 5000}, "5000 bytes long; paths are at most 4096"),
    ({"type": "text", "text": "x\ud800y"}, "params.parts[1].text: contains a lone surrogate"),
]


def test_invalid_file_parts_are_refused_before_anything_is_stored(
    spawn, model, ws: Path, outside: Path
) -> None:
    """What can be known from the request alone is -32602, and nothing is stored: the
    session works on (before, a NUL byte was -32603 and failed every later chat)."""
    (ws / "ok.txt").write_text("fine\n")
    d = spawn(model.base_url, workspace=ws)
    sid = new_session(d)
    for part, message in INVALID_PARTS:
        with pytest.raises(RpcError) as err:
            chat(d, sid, text("look"), part)
        assert err.value.code == -32602, part
        assert message in err.value.message, (part, err.value.message)
        assert d.call("session/messages", {"sessionId": sid})["messages"] == [], part
    model.enqueue({"text": "still fine"})
    msg = chat(d, sid, text("again"), {"type": "file", "path": "ok.txt"})["message"]
    assert msg["finishReason"] == "stop"
    assert model.requests()[-1]["body"]["messages"][-1]["content"] == (
        "again\n\n[file ok.txt]\nfine\n"
    )
    assert len(d.call("session/messages", {"sessionId": sid})["messages"]) == 2


def test_attachments_are_bounded_per_message_and_per_request(spawn, model, ws: Path) -> None:
    """One message attaching a file 1,000 times made a 202 MB request and 908 MiB of
    memory (an outside attacker): a message attaches at most 32 distinct files, and
    what a session's attachments add to one request is bounded, newest first."""
    for i in range(40):
        (ws / f"f{i}.txt").write_text(f"{i:02d}" * 50_000)  # 100 KB each
    d = spawn(model.base_url, workspace=ws)
    sid = new_session(d)
    files = [{"type": "file", "path": f"f{i}.txt"} for i in range(40)]
    for parts, message in [
        (files[:33], "at most 32 files"),
        ([files[0], files[0]], "params.parts[2].path: is attached already, as parts[1]"),
        ([files[0], {"type": "file", "path": "./f0.txt"}], "is attached already"),
        ([files[3], {"type": "file", "path": "d/../f3.txt"}], "is attached already"),
        ([files[0]] * 1000, "at most 32 files"),
    ]:
        with pytest.raises(RpcError) as err:
            chat(d, sid, text("look"), *parts)
        assert err.value.code == -32602 and message in err.value.message, err.value.message
    assert d.call("session/messages", {"sessionId": sid})["messages"] == []
    # Three messages of 20 distinct 100 KB files each: 6 MB if every run sent them all.
    for start in (0, 20, 0):
        model.enqueue({"text": "ok"})
        chat(d, sid, text("look"), *files[start : start + 20])
    sent = model.requests()[-1]["body"]["messages"]
    size = sum(len(m.get("content") or "") for m in sent)
    assert 2_000_000 <= size < 2_300_000, size
    last = sent[-1]["content"]
    assert all(f"[file f{i}.txt]" in last for i in range(20)), "the newest are sent whole"
    assert "not attached again" in sent[1]["content"]


def test_file_parts_that_cannot_be_attached_become_notes_without_blocking(
    spawn, model, ws: Path, outside: Path
) -> None:
    """A FIFO (which blocks a plain read), a socket, a directory, a 3 GiB sparse file, a
    binary file, symlinks and a hard link out of the workspace, a missing file: each is a
    short note for the model, the run goes on, and memory stays small."""
    os.mkfifo(ws / "pipe")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(ws / "sock"))
    (ws / "dir").mkdir()
    with open(ws / "huge.txt", "wb") as f:
        f.write(b"start of a huge file\n")
        f.truncate(3 * 1024**3)
    (ws / "big.txt").write_text("y" * 300_000 + "\nTAIL-MARKER\n")
    (ws / "bin.dat").write_bytes(b"\x7fELF\x00\x01" * 10)
    (ws / "to_secret").symlink_to(outside / "s.txt")
    (ws / "to_zero").symlink_to("/dev/zero")
    (ws / "to_outside_dir").symlink_to(outside)
    os.link(outside / "s.txt", ws / "hard.txt")
    (ws / "ok.txt").write_text("fine\n")
    (ws / "to_ok").symlink_to("ok.txt")
    d = spawn(model.base_url, workspace=ws)
    sid = new_session(d)
    names = [
        "pipe",
        "sock",
        "dir",
        "huge.txt",
        "big.txt",
        "bin.dat",
        "to_secret",
        "to_zero",
        "to_outside_dir/s.txt",
        "hard.txt",
        "missing.txt",
        "ok.txt",
        "to_ok",
        str(ws / "ok.txt"),
    ]
    model.enqueue({"text": "read them"})
    try:
        msg = chat(
            d, sid, text("attached:"), *({"type": "file", "path": n} for n in names), timeout=60
        )["message"]
    finally:
        sock.close()
    assert msg["finishReason"] == "stop"
    sent = model.requests()[-1]["body"]["messages"][-1]["content"]

    def note(name: str) -> str:
        start = sent.index(f"[file {name}: ")
        return sent[start : sent.index("]\n", start) + 1] if "]\n" in sent[start:] else sent[start:]

    assert note("pipe") == (
        "[file pipe: not attached: Refusing to attach pipe: it is a FIFO, not a regular file.]"
    )
    assert "it is a socket" in note("sock")
    assert note("dir") == "[file dir: not attached: dir is a directory.]"
    assert note("huge.txt") == f"[file huge.txt: a binary file ({3 * 1024**3} bytes), not attached]"
    assert "[file big.txt]\n" + "y" * 1000 in sent
    assert f"[file big.txt: cut after 200 KB of {300_000 + 13} bytes;" in sent
    assert "TAIL-MARKER" not in sent
    assert note("bin.dat") == "[file bin.dat: a binary file (60 bytes), not attached]"
    for name in ("to_secret", "to_zero", "to_outside_dir/s.txt"):
        assert "outside the workspace" in note(name), note(name)
    assert "it has 2 hard links" in note("hard.txt")
    assert note("missing.txt") == "[file missing.txt: not attached: File not found: missing.txt]"
    # ok.txt three times: by name, through a symlink inside, by its absolute path.
    assert sent.count("[file ok.txt]\nfine\n") == 3
    assert SECRET not in sent
    # The stored parts are the paths as given; the 3 GiB file was never read whole.
    stored = d.call("session/messages", {"sessionId": sid})["messages"][0]["parts"]
    assert [p["path"] for p in stored if p["type"] == "file"] == names
    assert peak_rss_bytes(d.proc.pid) < 512 * 1024**2


def test_a_stored_file_part_never_poisons_later_runs_even_after_a_restart(
    spawn, model, ws: Path, outside: Path, tmp_path: Path
) -> None:
    """Files attached earlier are read again on every run: replaced by a FIFO, a symlink
    out of the workspace or a directory, deleted, or stored unchecked by an older agentd
    (a NUL byte, a path outside), they become notes and later chats work, also in a new
    daemon."""
    from agentd import ids

    for name in ("a.txt", "b.txt", "c.txt", "e.txt"):
        (ws / name).write_text(f"content of {name}\n")
    d = spawn(model.base_url, workspace=ws)
    sid = new_session(d)
    model.enqueue({"text": "seen"})
    chat(
        d,
        sid,
        text("files"),
        *({"type": "file", "path": n} for n in ("a.txt", "b.txt", "c.txt", "e.txt")),
    )
    d.stop()
    (ws / "a.txt").unlink()
    os.mkfifo(ws / "a.txt")
    (ws / "b.txt").unlink()
    (ws / "b.txt").symlink_to(outside / "s.txt")
    (ws / "c.txt").unlink()
    (ws / "e.txt").unlink()
    (ws / "e.txt").mkdir()
    # What an older agentd stored without checking: it made every later chat fail.
    log = tmp_path / "data" / "sessions" / sid / "log.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    user = next(r for r in records if r["k"] == "message" and r["message"]["role"] == "user")
    legacy_id = ids.new_id("msg")
    with open(log, "a") as f:
        f.write(json.dumps({**user, "message": {**user["message"], "id": legacy_id}}) + "\n")
        for path in ("x\x00y", "../outside/s.txt", "/etc/passwd"):
            part = {"id": ids.new_id("prt"), "type": "file", "path": path, "mime": "text/plain"}
            f.write(json.dumps({"k": "part", "m": legacy_id, "part": part}) + "\n")
    d2 = spawn(model.base_url, workspace=ws)
    model.enqueue({"text": "still works"})
    msg = chat(d2, sid, text("next"))["message"]
    assert msg["finishReason"] == "stop"
    history = json.dumps(model.requests()[-1]["body"]["messages"])
    assert SECRET not in history and "root:" not in history
    sent = model.requests()[-1]["body"]["messages"]
    first = sent[1]["content"]
    assert "[file a.txt: not attached:" in first and "FIFO" in first
    assert "[file b.txt: not attached:" in first and "outside the workspace" in first
    assert "[file c.txt: not attached: File not found" in first
    assert "[file e.txt: not attached:" in first and "is a directory" in first
    legacy = next(m["content"] for m in sent if m["role"] == "user" and "x\x00y" in m["content"])
    assert "NUL byte" in legacy and legacy.count("not attached") == 3
    assert len(d2.call("session/messages", {"sessionId": sid})["messages"]) == 5
