"""One daemon per user: `agentd` as a forwarder to the shared daemon (agentd.forwarder,
agentd.daemon, agentd.editors). Every agentd here is a real `python -m agentd` whose
stdin and stdout are handed to a real daemon process over a real Unix socket."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import chat, daemon_pids, new_session, pid_alive, text_of, wait_until
from rpc_client import Daemon, RpcError, daemon_env, runtime_dir


class Shared:
    """Editors (forwarders) of one test, all with the same settings unless told."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.run_dir = runtime_dir(tmp_path)
        self.editors: list[Daemon] = []
        self.base_url: str | None = None

    def env(self, **extra: str) -> dict[str, str]:
        return daemon_env(self.tmp, self.base_url, AGENTD_SHARED="1", **extra)

    def editor(self, *, initialize: bool = True, **extra: str) -> Daemon:
        d = Daemon(self.env(**extra), spawn="exec")
        self.editors.append(d)
        if initialize:
            d.initialize(workspaceRoot=str(self.tmp), capabilities={"permissionRequests": True})
        return d

    def daemons(self) -> list[int]:
        return daemon_pids(self.run_dir)

    def close(self) -> None:
        for d in self.editors:
            if d.proc.poll() is None:
                d.proc.kill()
                d.proc.wait(5)
            d.stop()
        for pid in self.daemons():
            os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not self.daemons())


@pytest.fixture
def shared(tmp_path: Path, model) -> Iterator[Shared]:  # type: ignore[no-untyped-def]
    s = Shared(tmp_path)
    s.base_url = model.base_url
    yield s
    s.close()


def write_config(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return {"AGENTD_CONFIG": str(path)}


def followed_text(d: Daemon, answer_id: Any, message_id: str, *, first: bool = True) -> str:
    """The text an editor shows after opening a session with session/messages (answer
    `answer_id`) and applying the notifications that came after the answer. `first`:
    the editor did not follow the session before (it heard nothing of it)."""
    with d._cond:
        messages = list(d.messages)
    at = next(i for i, m in enumerate(messages) if m.get("id") == answer_id)
    page = messages[at]["result"]["messages"]
    before = [
        m
        for m in messages[:at]
        if m.get("method", "").startswith("part/") and m["params"]["messageId"] == message_id
    ]
    assert not (first and before), "part notifications reached an editor not following"
    found = [m for m in page if m["id"] == message_id]
    parts: dict[str, dict] = {p["id"]: dict(p) for p in (found[0]["parts"] if found else [])}
    order = list(parts)
    for m in messages[at + 1 :]:
        params = m.get("params") or {}
        if params.get("messageId") != message_id:
            continue
        if m.get("method") == "part/updated":
            part = params["part"]
            if part["id"] not in parts:
                order.append(part["id"])
            elif part["type"] in ("text", "reasoning"):
                # The part's text as the snapshot and the deltas since made it: a part's
                # last update would otherwise hide a delta lost or sent twice.
                assert part.get("text", "") == parts[part["id"]].get("text", ""), part["id"]
            parts[part["id"]] = dict(part)
        elif m.get("method") == "part/delta":
            part = parts[params["partId"]]
            part["text"] = part.get("text", "") + params["delta"]
    return "".join(parts[i].get("text", "") for i in order if parts[i]["type"] == "text")


def deltas(d: Daemon, sid: str) -> int:
    return len([n for n in d.notifications("part/delta") if n["params"]["sessionId"] == sid])


SLOW_TEXT = " ".join(f"w{i}" for i in range(300))


def slow(model, **extra: Any) -> None:  # type: ignore[no-untyped-def]
    model.enqueue({"text": SLOW_TEXT, "chunkSize": 4, "delayMs": 10, **extra})


# --- one daemon, many editors -------------------------------------------------------


def test_editors_with_the_same_settings_share_one_daemon(shared: Shared) -> None:
    a = shared.editor()
    b = shared.editor()
    assert len(shared.daemons()) == 1
    sid = new_session(a, title="from a")
    listed = [s["id"] for s in b.call("session/list", {})["sessions"]]
    assert sid in listed
    # Which sessions exist is everyone's news.
    b.wait_for(lambda: any(n["params"]["session"]["id"] == sid for n in b.notifications()))
    # The daemon serves each connection's own lifecycle: a's shutdown and exit end a
    # (exit code 0), not b, nor the daemon.
    a.end()
    assert a.wait_exit() == 0
    assert b.call("session/get", {"sessionId": sid})["session"]["title"] == "from a"
    assert len(shared.daemons()) == 1


def test_initialize_says_which_daemon_serves_the_editor(shared: Shared, spawn) -> None:  # type: ignore[no-untyped-def]
    a = shared.editor()
    b = shared.editor(initialize=False)
    info = b.initialize(workspaceRoot=str(shared.tmp))["daemon"]
    assert info == {
        "shared": True,
        "pid": shared.daemons()[0],
        "onDisconnect": "continue",
        "connections": 2,
    }
    assert a.proc.pid != info["pid"]
    own = spawn(initialize=False, AGENTD_SHARED="0")
    alone = own.initialize()["daemon"]
    assert alone == {
        "shared": False,
        "pid": own.proc.pid,
        "onDisconnect": "abort",
        "connections": 1,
    }


def test_exit_without_shutdown_exits_1_through_the_forwarder(shared: Shared) -> None:
    a = shared.editor()
    a.notify("exit")
    assert a.wait_exit() == 1
    b = shared.editor()
    b.close_stdin()  # end of input: the connection ends, code 0
    assert b.wait_exit() == 0
    assert len(shared.daemons()) == 1


@pytest.mark.parametrize(
    "differs",
    [
        {"AGENTD_DATA_DIR": "other-data"},
        {"AGENTD_MODEL": "another-model"},
        {"OPENAI_API_KEY": "sk-another-key"},
        {"PATH": "/usr/bin:/bin"},
        {"MY_TOKEN": "named by the configuration file"},
        {"SSLKEYLOGFILE": "/tmp/keys"},
        {"PYTHONPATH": "/tmp/elsewhere"},
        {"HTTPS_PROXY": "http://127.0.0.1:9"},
    ],
    ids=lambda d: next(iter(d)),
)
def test_editors_with_other_settings_never_share(shared: Shared, differs: dict[str, str]) -> None:
    config = write_config(
        shared.tmp, '[mcp_servers.x]\ncommand = "x"\nenv = { T = "${MY_TOKEN}" }\nenabled = false\n'
    )
    shared.editor(**config)
    value = differs.copy()
    if "AGENTD_DATA_DIR" in value:
        value["AGENTD_DATA_DIR"] = str(shared.tmp / value["AGENTD_DATA_DIR"])
    shared.editor(**config, **value)
    assert len(shared.daemons()) == 2


def test_an_edited_configuration_file_gets_a_new_daemon(shared: Shared) -> None:
    config = write_config(shared.tmp, "[daemon]\nidle_exit_s = 300\n")
    shared.editor(**config)
    write_config(shared.tmp, "[daemon]\nidle_exit_s = 301\n")
    shared.editor(**config)
    assert len(shared.daemons()) == 2


def test_fifty_editors_attaching_at_once_start_one_daemon(shared: Shared) -> None:
    editors = [shared.editor(initialize=False) for _ in range(50)]
    ids = [d.request_async("initialize", {"processId": os.getpid()}) for d in editors]
    for d, msg_id in zip(editors, ids, strict=True):
        assert d.result(msg_id, timeout=60)["serverInfo"]["name"] == "agentd"
    assert len(shared.daemons()) == 1
    for d in editors:
        d.notify("initialized", {})
    sid = new_session(editors[0])
    for d in editors[1:]:
        assert d.call("session/get", {"sessionId": sid})["session"]["id"] == sid


# --- what reaches which editor ------------------------------------------------------


def test_a_run_streams_to_the_editors_following_its_session_only(shared: Shared, model) -> None:  # type: ignore[no-untyped-def]
    a, b = shared.editor(), shared.editor()
    sid = new_session(a)
    model.enqueue({"text": "only for a", "chunkSize": 2})
    chat(a, sid, "hi")
    assert deltas(a, sid) > 0
    assert not [n for n in b.notifications() if n["params"].get("sessionId") == sid]


@pytest.mark.parametrize("after_deltas", [1, 5, 20, 60])
def test_opening_a_streaming_session_shows_everything_once(
    shared: Shared,
    model,
    after_deltas: int,  # type: ignore[no-untyped-def]
) -> None:
    """b opens a's session at several points of the stream: what session/messages
    answers plus what streams after it is the whole answer, nothing twice."""
    a, b = shared.editor(), shared.editor()
    sid = new_session(a, title="t")
    slow(model)
    chat_id = a.request_async(
        "session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "go"}]}
    )
    a.wait_for(lambda: deltas(a, sid) >= after_deltas)
    opened = b.request_async("session/messages", {"sessionId": sid})
    answer = a.result(chat_id, timeout=60)
    message_id = answer["message"]["id"]
    b.wait_for(
        lambda: any(
            n["params"].get("status") == "idle" and n["params"]["sessionId"] == sid
            for n in b.notifications("session/status")
        )
    )
    assert followed_text(b, opened, message_id) == SLOW_TEXT
    assert text_of(answer["message"]) == SLOW_TEXT


def test_permission_requests_go_to_the_editor_whose_run_asks(shared: Shared, model) -> None:  # type: ignore[no-untyped-def]
    a, b = shared.editor(), shared.editor()
    (shared.tmp / "f.txt").write_text("old\n")
    sid = new_session(a, title="t", workspaceRoot=str(shared.tmp))
    b.call("session/messages", {"sessionId": sid})  # b follows it too
    asked: list[str] = []
    a.handlers["permission/request"] = lambda p: asked.append("a") or {"outcome": "allow_once"}
    b.handlers["permission/request"] = lambda p: asked.append("b") or {"outcome": "allow_once"}
    model.enqueue(
        {"toolCalls": [{"name": "write_file", "arguments": {"path": "f.txt", "content": "new\n"}}]},
        {"text": "done"},
    )
    chat(a, sid, "write it", tools=["write_file"])
    assert asked == ["a"]
    assert (shared.tmp / "f.txt").read_text() == "new\n"


# --- answers survive the editor ------------------------------------------------------


@pytest.mark.parametrize("how", ["kill -9", "end of input", "shutdown and exit"])
def test_a_run_goes_on_when_its_editor_leaves_and_a_new_one_follows_it(
    shared: Shared,
    model,
    how: str,  # type: ignore[no-untyped-def]
) -> None:
    a = shared.editor()
    sid = new_session(a, title="t")
    slow(model)
    a.request_async("session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "go"}]})
    a.wait_for(lambda: deltas(a, sid) >= 10)
    if how == "kill -9":
        a.proc.kill()
    elif how == "end of input":
        a.close_stdin()
    else:  # what an LSP client does on a window reload: the run still goes on
        a.call("shutdown", None)
        a.notify("exit")
    a.wait_exit()
    b = shared.editor()
    opened = b.request_async("session/messages", {"sessionId": sid})
    page = b.result(opened)["messages"]
    message_id = page[-1]["id"]
    b.wait_for(
        lambda: (
            any(
                n["params"]["sessionId"] == sid and n["params"]["status"] == "idle"
                for n in b.notifications("session/status")
            )
            or b.call("session/get", {"sessionId": sid})["session"]["status"] == "idle"
        ),
        timeout=60,
    )
    final = b.call("session/messages", {"sessionId": sid})["messages"][-1]
    assert text_of(final) == SLOW_TEXT
    assert final["finishReason"] == "stop"
    if page[-1].get("time", {}).get("completed") is None:
        # It was still streaming when b opened it: b saw the rest live.
        assert followed_text(b, opened, message_id) == SLOW_TEXT


def test_on_disconnect_abort_aborts_the_run_of_an_editor_that_leaves(shared: Shared, model) -> None:  # type: ignore[no-untyped-def]
    config = write_config(shared.tmp, '[daemon]\non_disconnect = "abort"\n')
    a = shared.editor(**config)
    sid = new_session(a, title="t")
    slow(model)
    a.request_async("session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "go"}]})
    a.wait_for(lambda: deltas(a, sid) >= 10)
    a.proc.kill()
    b = shared.editor(**config)
    b.wait_for(
        lambda: b.call("session/get", {"sessionId": sid})["session"]["status"] == "idle",
        timeout=30,
    )
    last = b.call("session/messages", {"sessionId": sid})["messages"][-1]
    assert last["finishReason"] == "aborted"
    assert 0 < len(text_of(last)) < len(SLOW_TEXT)


# --- faults --------------------------------------------------------------------------


def test_a_daemon_killed_while_three_editors_stream(shared: Shared, model) -> None:  # type: ignore[no-untyped-def]
    editors = [shared.editor() for _ in range(3)]
    sids = [new_session(d, title=f"s{i}") for i, d in enumerate(editors)]
    for d, sid in zip(editors, sids, strict=True):
        slow(model)
        d.request_async(
            "session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "go"}]}
        )
    for d, sid in zip(editors, sids, strict=True):
        d.wait_for(lambda d=d, sid=sid: deltas(d, sid) >= 5)
    (pid,) = shared.daemons()
    os.kill(pid, signal.SIGKILL)
    for d in editors:
        assert d.wait_exit() == 1
        d.stop()
        assert "the shared daemon ended unexpectedly" in "".join(d.stderr_lines)
    # The next editor starts a fresh daemon, which closes the runs the dead one left.
    fresh = shared.editor()
    assert shared.daemons() and pid not in shared.daemons()
    for sid in sids:
        last = fresh.call("session/messages", {"sessionId": sid})["messages"][-1]
        assert last["finishReason"] == "interrupted"
        assert SLOW_TEXT.startswith(text_of(last))  # what was checkpointed is kept
        assert fresh.call("session/get", {"sessionId": sid})["session"]["status"] == "idle"


def test_sigterm_ends_the_daemon_after_persisting(shared: Shared, model) -> None:  # type: ignore[no-untyped-def]
    a = shared.editor()
    sid = new_session(a, title="t")
    slow(model)
    chat_id = a.request_async(
        "session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "go"}]}
    )
    a.wait_for(lambda: deltas(a, sid) >= 5)
    (pid,) = shared.daemons()
    os.kill(pid, signal.SIGTERM)
    answer = a.response(chat_id)
    assert answer["result"]["message"]["finishReason"] == "aborted"
    assert a.wait_exit() == 0
    wait_until(lambda: not pid_alive(pid))
    fresh = shared.editor()
    last = fresh.call("session/messages", {"sessionId": sid})["messages"][-1]
    assert last["finishReason"] == "aborted"


def test_a_stale_socket_from_a_dead_daemon_is_replaced(shared: Shared) -> None:
    a = shared.editor()
    (pid,) = shared.daemons()
    a.stop()
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid))
    (sock_file,) = [p for p in os.listdir(shared.run_dir) if p.endswith(".sock")]
    b = shared.editor()  # connecting to the dead socket is refused: a new daemon starts
    assert b.call("session/list", {})["sessions"] == []
    assert len(shared.daemons()) == 1
    assert os.path.exists(os.path.join(shared.run_dir, sock_file))


def socket_path_of_an_ended_daemon(shared: Shared) -> str:
    """Where the daemon listened, once an editor started it and it ended (SIGTERM)."""
    a = shared.editor()
    (pid,) = shared.daemons()
    (name,) = [p for p in os.listdir(shared.run_dir) if p.endswith(".sock")]
    a.stop()
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not pid_alive(pid))
    return os.path.join(shared.run_dir, name)


def _unshared(d: Daemon) -> str:
    """What the forwarder said when it refused to share (it then serves unshared)."""
    d.wait_for(lambda: "running unshared" in "".join(d.stderr_lines))
    return "".join(d.stderr_lines)


@pytest.mark.parametrize(
    "spoil",
    [
        "mode 0755",
        "mode 0750",
        "another user's directory",
        "a link to a private directory",
        "a file",
    ],
)
def test_a_runtime_directory_others_can_reach_is_never_used(shared: Shared, spoil: str) -> None:
    run_dir = shared.run_dir
    os.rmdir(run_dir)
    if spoil == "mode 0755":
        os.mkdir(run_dir, 0o755)
        os.chmod(run_dir, 0o755)
    elif spoil == "mode 0750":
        os.mkdir(run_dir, 0o700)
        os.chmod(run_dir, 0o750)
    elif spoil == "another user's directory":
        os.mkdir(run_dir, 0o700)
        os.chown(run_dir, 4242, 4242)
    elif spoil == "a link to a private directory":
        target = shared.tmp / "private"
        target.mkdir(mode=0o700)
        os.symlink(target, run_dir)
    else:
        Path(run_dir).write_text("")
    d = shared.editor(AGENTD_RUNTIME_DIR=run_dir)  # (as it is, not through the link)
    assert "refused" in _unshared(d)
    # Served all the same, by an agentd of its own.
    assert new_session(d)
    assert not shared.daemons()
    d.stop()
    if os.path.isdir(run_dir) and not os.path.islink(run_dir):
        assert not [p for p in os.listdir(run_dir) if p.endswith(".sock")]


@pytest.mark.parametrize("spoil", ["another user's socket", "a regular file", "a directory"])
def test_a_socket_path_that_is_not_ours_is_never_used(shared: Shared, spoil: str) -> None:
    path = socket_path_of_an_ended_daemon(shared)
    if spoil == "another user's socket":
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listener.bind(path)
        listener.listen(1)
        os.chown(path, 4242, 4242)
    elif spoil == "a regular file":
        Path(path).write_text("")
    else:
        os.mkdir(path)
    d = shared.editor()
    assert "refused" in _unshared(d)
    assert new_session(d)
    assert not shared.daemons()


@pytest.mark.parametrize(
    "spoil",
    [
        "a FIFO at the log",
        "a directory at the log",
        "a link at the log",
        "a FIFO at the lock",
        "a directory at the lock",
        "a link at the lock",
    ],
)
def test_a_lock_or_log_that_is_not_a_private_file_is_never_used(
    shared: Shared, tmp_path: Path, spoil: str
) -> None:
    """What the forwarder opens in the runtime dir besides the socket: never waited on (a
    FIFO), never followed (a link), never crashed on (a directory)."""
    sock_path = socket_path_of_an_ended_daemon(shared)
    path = sock_path[: -len(".sock")] + (".log" if spoil.endswith("log") else ".lock")
    os.unlink(path)
    target = tmp_path / "elsewhere"
    target.write_text("")
    if spoil.startswith("a FIFO"):
        os.mkfifo(path, 0o600)
    elif spoil.startswith("a directory"):
        os.mkdir(path, 0o700)
    else:
        os.symlink(target, path)
    d = shared.editor()
    assert "cannot use the" in _unshared(d) and path in _unshared(d)
    assert new_session(d)
    assert not shared.daemons()
    assert target.read_text() == ""


def test_a_listener_run_by_another_user_is_refused(shared: Shared, tmp_path: Path) -> None:
    """A socket file of ours, but the process behind it runs as another user."""
    path = socket_path_of_an_ended_daemon(shared)
    ready = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child)
        try:
            # The file is ours; the process listening (its credentials are taken at
            # listen()) is another user's.
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            listener.bind(path)
            os.setresgid(4242, 4242, 4242)
            os.setresuid(4242, 4242, 4242)
            listener.listen(8)
            os.write(ready[1], b"x")
            while True:
                conn, _ = listener.accept()
                conn.close()
        finally:
            os._exit(0)
    try:
        os.read(ready[0], 1)
        d = shared.editor()
        assert "refused" in _unshared(d)
        assert new_session(d)
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)


@pytest.mark.parametrize("answer", ["refuses", "ends before answering", "never answers"])
def test_an_editor_the_daemon_does_not_take_is_still_served(shared: Shared, answer: str) -> None:
    """The forwarder keeps the editor's pipes until the daemon says it is ready for them. A
    daemon that refuses them: the editor is served unshared, told why. One that ends
    first (it was exiting, idle, as the editor came): the forwarder connects again, and a
    new daemon serves the editor. One that never answers (stopped, hung): after 20 s the
    editor is served unshared, told why."""
    path = socket_path_of_an_ended_daemon(shared)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(8)
    hellos: list[dict] = []

    def daemon_that_does_not_take() -> None:
        conn, _ = listener.accept()
        data, fds, _, _ = socket.recv_fds(conn, 65536, 3)
        hellos.append(json.loads(data))
        for fd in fds:  # (the editor's pipes, as a dying daemon's end would close them)
            os.close(fd)
        if answer == "refuses":
            conn.send(json.dumps({"refused": "a test says no\x1b[31m\nred"}).encode())
        elif answer == "never answers":
            conn.settimeout(60)
            with contextlib.suppress(OSError):
                assert conn.recv(64) == b""  # (the forwarder gave up: no word of going on)
        else:
            os.unlink(path)  # an exiting daemon's socket goes with it
            listener.close()
        conn.close()

    fake = threading.Thread(target=daemon_that_does_not_take)
    fake.start()
    d = shared.editor(initialize=False)
    # (Answered after the 20 s a forwarder waits for a daemon that does not answer.)
    info = d.call("initialize", {"workspaceRoot": str(shared.tmp)}, timeout=60)["daemon"]
    fake.join()
    assert len(hellos) == 1 and hellos[0]["pid"] == d.proc.pid
    if answer == "refuses":
        # (Written to the editor's stderr without its control characters.)
        why = _unshared(d)
        assert "refused this editor: a test says no\\x1b[31m\\nred\n" in why, why
        assert "\x1b" not in why
        assert info["shared"] is False and not shared.daemons()
    elif answer == "never answers":
        assert "the daemon did not answer within 20 s" in _unshared(d)
        assert info["shared"] is False and not shared.daemons()
    else:
        assert info["shared"] is True and len(shared.daemons()) == 1
    assert new_session(d)
    listener.close()


def test_a_daemon_near_its_open_file_limit_refuses_editors_and_serves_those_it_has(
    shared: Shared,
    model,  # type: ignore[no-untyped-def]
) -> None:
    """Editors attach until the daemon would keep fewer than 32 descriptors free: the next
    is told why and served unshared, while those attached chat on (their runs open session
    logs, locks, the model's connection, a command's pipes); once two leave, an editor
    attaches again. Connections that say nothing, holding descriptors until their hello
    times out, take the rest: the daemon, at its limit, accepts with a descriptor it keeps
    in reserve and refuses, never spinning on its listener nor flooding its log."""
    limit = 96

    def low_limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    # The daemon inherits the limit from the forwarder that starts it.
    first = Daemon(shared.env(), spawn="exec", preexec_fn=low_limit)
    shared.editors.append(first)
    first.initialize(workspaceRoot=str(shared.tmp), capabilities={"permissionRequests": True})
    first.handlers["permission/request"] = lambda p: {"outcome": "allow_once"}
    attached = [first]
    refused: list[Daemon] = []
    while not refused:
        assert len(attached) < limit, "the daemon never refused an editor"
        d = shared.editor(initialize=False)
        if d.initialize(workspaceRoot=str(shared.tmp))["daemon"]["shared"]:
            attached.append(d)
        else:
            refused.append(d)
    assert len(attached) > 5
    why = _unshared(refused[0])
    assert f"refused this editor: it is near its limit of {limit} open files" in why, why
    assert new_session(refused[0])  # served by an agentd of its own
    model.enqueue(
        {"toolCalls": [{"name": "bash", "arguments": {"command": "echo served"}}]},
        {"text": "done"},
    )
    sid = new_session(first, title="at the limit")
    answer = chat(first, sid, "go", tools=["bash"])["message"]
    tool = next(p for p in answer["parts"] if p["type"] == "tool")
    assert tool["state"]["output"].strip() == "served" and text_of(answer) == "done"
    # Silent connections take what is left.
    (pid,) = shared.daemons()
    (name,) = [p for p in os.listdir(shared.run_dir) if p.endswith(".sock")]
    silent: list[socket.socket] = []
    for _ in range(limit):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.connect(os.path.join(shared.run_dir, name))
        silent.append(s)

    def told_at_limit() -> bool:
        ready, _, _ = select.select(silent, [], [], 0)
        return any(
            f"it is at its limit of {limit} open files" in s.recv(16384).decode() for s in ready
        )

    wait_until(told_at_limit)
    for s in silent:
        s.close()
    # Once two editors leave, an editor attaches again.
    held = len(os.listdir(f"/proc/{pid}/fd"))
    for d in attached[-2:]:
        d.stop()
    # (Each connection holds three: its socket, the editor's stdin and stdout.)
    wait_until(lambda: len(os.listdir(f"/proc/{pid}/fd")) <= held - 6)
    again = shared.editor(initialize=False)
    assert again.initialize(workspaceRoot=str(shared.tmp))["daemon"]["shared"] is True
    (log,) = Path(shared.run_dir).glob("*.log")
    lines = log.read_text().splitlines()
    assert sum("refused an editor" in line for line in lines) <= len(refused) + limit
    # (A thread may take the reserve descriptor as it is freed: accepting then waits a
    # second, said once, instead of spinning.)
    assert len([line for line in lines if "accept failed" in line]) <= 1


def test_each_editors_commands_and_files_take_its_own_environment_and_umask(
    shared: Shared,
    model,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    """Variables outside the identity (a project's, the locale) and the umask may differ
    between editors sharing a daemon, whose own are the first editor's: each editor's bash
    commands get its environment (credentials withheld, as ever) and umask, and the files
    its tools make its umask, as an agentd of its own would."""

    def editor(umask: int, name: str, **env: str) -> Daemon:
        ws = tmp_path / name
        ws.mkdir()
        d = Daemon(shared.env(**env), spawn="exec", preexec_fn=lambda: os.umask(umask))
        shared.editors.append(d)
        d.initialize(workspaceRoot=str(ws), capabilities={"permissionRequests": True})
        d.handlers["permission/request"] = lambda p: {"outcome": "allow_once"}
        return d

    a = editor(0o000, "a", MYPROJ="alpha", LC_ALL="C", GITHUB_TOKEN="ghp_" + "a" * 36)
    b = editor(0o077, "b", MYPROJ="beta", LC_ALL="POSIX", GITHUB_TOKEN="ghp_" + "b" * 36)
    assert len(shared.daemons()) == 1
    command = "umask; echo $MYPROJ $LC_ALL ${GITHUB_TOKEN:-withheld}; touch made/b.txt"
    for d, name, umask, project, locale in (
        (b, "b", 0o077, "beta", "POSIX"),
        (a, "a", 0o000, "alpha", "C"),
    ):
        model.enqueue(
            {
                "toolCalls": [
                    {"name": "write_file", "arguments": {"path": "made/w.txt", "content": "w"}},
                    {"name": "bash", "arguments": {"command": command}},
                ]
            },
            {"text": "done"},
        )
        message = chat(d, new_session(d, title=name), "go", tools=["write_file", "bash"])
        outputs = [p["state"] for p in message["message"]["parts"] if p["type"] == "tool"]
        assert [o["status"] for o in outputs] == ["completed", "completed"], outputs
        assert outputs[1]["output"].split() == [f"{umask:04o}", project, locale, "withheld"]
        made = tmp_path / name / "made"
        assert mode(made) == 0o777 & ~umask
        assert mode(made / "w.txt") == mode(made / "b.txt") == 0o666 & ~umask


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_the_daemon_exits_when_idle(shared: Shared) -> None:
    config = write_config(shared.tmp, "[daemon]\nidle_exit_s = 0.5\n")
    a = shared.editor(**config)
    (pid,) = shared.daemons()
    new_session(a)
    assert pid_alive(pid)  # an editor is attached: never idle
    a.stop()
    wait_until(lambda: not pid_alive(pid))
    assert not [p for p in os.listdir(shared.run_dir) if p.endswith(".sock")]


def test_a_run_keeps_an_idle_daemon_alive(shared: Shared, model) -> None:  # type: ignore[no-untyped-def]
    config = write_config(shared.tmp, "[daemon]\nidle_exit_s = 0.2\n")
    a = shared.editor(**config)
    (pid,) = shared.daemons()
    sid = new_session(a, title="t")
    slow(model)
    a.request_async("session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "go"}]})
    a.wait_for(lambda: deltas(a, sid) >= 3)
    a.proc.kill()
    a.wait_exit()
    b = shared.editor(**config)
    assert shared.daemons() == [pid]
    b.wait_for(
        lambda: b.call("session/get", {"sessionId": sid})["session"]["status"] == "idle",
        timeout=60,
    )
    assert text_of(b.call("session/messages", {"sessionId": sid})["messages"][-1]) == SLOW_TEXT


def test_mcp_servers_start_once_per_daemon(shared: Shared, tmp_path: Path) -> None:
    from helpers import ctx_server, toml_value

    starts = tmp_path / "starts.log"
    server = ctx_server(env={"STARTS_FILE": str(starts)})
    lines = ["[mcp_servers.ctx]"] + [f"{k} = {toml_value(v)}" for k, v in server.items()]
    config = write_config(tmp_path, "\n".join(lines) + "\n")
    a = shared.editor(**config)
    listed = a.call("mcp/list", {"connect": True}, timeout=30)["servers"]
    assert [s["state"] for s in listed] == ["ready"]
    b = shared.editor(**config)
    # b finds it ready: nothing started again.
    listed = b.call("mcp/list", {"connect": True}, timeout=30)["servers"]
    assert [s["state"] for s in listed] == ["ready"]
    assert len(shared.daemons()) == 1
    assert len(starts.read_text().split()) == 1


def test_a_client_tool_request_fails_clearly_when_no_editor_can_answer(
    shared: Shared, model
) -> None:  # type: ignore[no-untyped-def]
    a = shared.editor()
    sid = new_session(a, title="t")
    model.enqueue(
        {"toolCalls": [{"name": "write_file", "arguments": {"path": "g.txt", "content": "x"}}]},
        {"text": "after the refusal"},
    )
    gate = threading.Event()
    a.handlers["permission/request"] = lambda p: gate.wait(30) and {"outcome": "allow_once"}
    a.request_async(
        "session/chat",
        {"sessionId": sid, "parts": [{"type": "text", "text": "go"}], "tools": ["write_file"]},
    )
    a.wait_for(lambda: any(m.get("method") == "permission/request" for m in a.messages))
    a.proc.kill()
    a.wait_exit()
    b = shared.editor()
    b.wait_for(
        lambda: b.call("session/get", {"sessionId": sid})["session"]["status"] == "idle",
        timeout=30,
    )
    last = b.call("session/messages", {"sessionId": sid})["messages"][-1]
    (tool,) = [p for p in last["parts"] if p["type"] == "tool"]
    assert tool["state"]["status"] == "error"
    assert "disconnected" in json.dumps(tool["state"])
    assert not (shared.tmp / "g.txt").exists()
    gate.set()


def test_requests_and_ids_belong_to_their_connection(shared: Shared, model) -> None:  # type: ignore[no-untyped-def]
    """Two editors use the same request ids; a's $/cancelRequest cancels a's request."""
    a, b = shared.editor(), shared.editor()
    sa, sb = new_session(a, title="a"), new_session(b, title="b")
    slow(model)
    slow(model)
    a.request_async(
        "session/chat", {"sessionId": sa, "parts": [{"type": "text", "text": "x"}]}, msg_id=77
    )
    b.request_async(
        "session/chat", {"sessionId": sb, "parts": [{"type": "text", "text": "x"}]}, msg_id=77
    )
    a.wait_for(lambda: deltas(a, sa) >= 2)
    b.wait_for(lambda: deltas(b, sb) >= 2)
    a.notify("$/cancelRequest", {"id": 77})
    with pytest.raises(RpcError) as err:
        a.result(77)
    assert err.value.code == -32800
    assert text_of(b.result(77, timeout=60)["message"]) == SLOW_TEXT


def test_hostile_hellos_never_stop_the_daemon_serving_others(shared: Shared) -> None:
    """Connections to the socket that are not forwarders: silent, junk, the wrong number
    of descriptors, a hello over the limit, descriptors that are not pipes."""
    a = shared.editor()
    (name,) = [p for p in os.listdir(shared.run_dir) if p.endswith(".sock")]
    path = os.path.join(shared.run_dir, name)

    def connect() -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.connect(path)
        return s

    silent = connect()  # says nothing at all
    junk = connect()
    junk.sendall(b"\x00\xff not json at all")
    none = connect()
    socket.send_fds(none, [b"{}"], [])
    one = connect()
    socket.send_fds(one, [b"{}"], [0])
    three = connect()
    socket.send_fds(three, [b"{}"], [0, 1, 2])
    huge = connect()
    huge.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
    huge.send(b"{" + b" " * (1100 * 1024) + b"}")  # over the 1 MiB a hello may have
    not_an_object = connect()
    socket.send_fds(not_an_object, [b"[1, 2]"], [0, 1])
    # What the daemon's commands for this editor would inherit, of the wrong types.
    bad_env = connect()
    socket.send_fds(bad_env, [b'{"env": {"A": 1}, "umask": 18}'], [0, 1])
    bad_umask = connect()
    socket.send_fds(bad_umask, [b'{"env": {}, "umask": 4096}'], [0, 1])
    devnull = os.open(os.devnull, os.O_RDWR)
    null_pipes = connect()
    socket.send_fds(null_pipes, [b'{"pid": 1}'], [devnull, devnull])
    os.close(devnull)
    for s in (junk, none, one, three, huge, not_an_object, bad_env, bad_umask):
        s.settimeout(20)
        # Refused, with the reason (a forwarder would serve its editor itself), and
        # closed without an exit code.
        assert "refused" in json.loads(s.recv(16384))
        with contextlib.suppress(ConnectionResetError):
            assert s.recv(64) == b""
    # /dev/null as an editor: served, input ended, exit code 0.
    assert json.loads(null_pipes.recv(16384)) == {"ready": True}
    null_pipes.send(b'{"go": true}')
    assert json.loads(null_pipes.recv(16384)) == {"exit": 0}
    stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with pytest.raises(OSError):  # not the daemon's kind of socket: never connected
        stream.connect(path)
    stream.close()
    # Meanwhile and after, editors are served as ever.
    b = shared.editor()
    sid = new_session(a)
    assert b.call("session/get", {"sessionId": sid})["session"]["id"] == sid
    assert len(shared.daemons()) == 1
    for s in (silent, junk, none, one, three, huge, not_an_object, bad_env, bad_umask):
        s.close()
    null_pipes.close()


def test_the_forwarder_imports_only_the_standard_library(shared: Shared) -> None:
    a = shared.editor()  # the daemon runs
    d = Daemon({**shared.env(), "PYTHONPROFILEIMPORTTIME": "1"}, spawn="exec")
    shared.editors.append(d)
    d.initialize()
    d.end()
    assert d.wait_exit() == 0
    d.stop()
    imported = {
        line.split("|")[-1].strip()
        for line in d.stderr_lines
        if line.startswith("import time:") and "|" in line
    }
    ours = {m for m in imported if m.startswith("agentd")}
    assert ours == {"agentd", "agentd.cli", "agentd.forwarder", "agentd.shared_socket"}
    # (Nor argparse: `agentd` with no arguments, what editors spawn, needs no parsing.)
    for heavy in ("pygls", "lsprotocol", "attrs", "attr", "cattrs", "openai", "orjson", "argparse"):
        assert heavy not in imported
    assert a.call("session/list", {})["sessions"] == []


def test_each_editor_keeps_its_own_workspace_root(shared: Shared, tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    a = shared.editor(initialize=False)
    a.initialize(workspaceRoot=str(one))
    b = shared.editor(initialize=False)
    b.initialize(workspaceRoot=str(two))
    in_a, in_b = new_session(a), new_session(b)
    get = a.call("session/get", {"sessionId": in_a})["session"]
    assert get["workspaceRoot"] == str(one)
    assert b.call("session/get", {"sessionId": in_b})["session"]["workspaceRoot"] == str(two)
    # An editor that names no root gets the directory it was started in.
    c = Daemon(shared.env(), spawn="exec", cwd=str(two))
    shared.editors.append(c)
    c.initialize()
    in_c = new_session(c)
    assert c.call("session/get", {"sessionId": in_c})["session"]["workspaceRoot"] == str(two)
    assert len(shared.daemons()) == 1


def test_what_the_daemon_logs_reaches_each_editors_stderr_redacted(shared: Shared, model) -> None:  # type: ignore[no-untyped-def]
    """As unshared: configuration problems (logged before the editor came) and, at -vv,
    what the daemon logs; a secret never."""
    config = write_config(shared.tmp, '[daemon]\nidle_exit_s = "soon"\n')
    secret = "sk-shared-secret-98765"
    editors = []
    for _ in range(2):
        d = Daemon(shared.env(OPENAI_API_KEY=secret, **config), args=["-vv"], spawn="exec")
        shared.editors.append(d)
        d.initialize(workspaceRoot=str(shared.tmp))
        editors.append(d)
    a = editors[0]
    sid = new_session(a, title="t")
    model.enqueue({"text": "logged"})
    chat(a, sid, "hi")
    for d in editors:
        d.wait_for(lambda d=d: "configuration: daemon.idle_exit_s" in "".join(d.stderr_lines))
    a.wait_for(lambda: "DEBUG" in "".join(a.stderr_lines))
    assert len(shared.daemons()) == 1
    for d in editors:
        d.end()
        d.wait_exit()
        d.stop()
        assert secret not in "".join(d.stderr_lines)


@pytest.mark.parametrize("how", ["AGENTD_DATA_DIR", "--data-dir"])
def test_a_relative_data_dir_is_the_editors_own(shared: Shared, tmp_path: Path, how: str) -> None:
    """Relative to each editor's working directory, as unshared: two editors in two
    directories never share a store (nor a daemon), and nothing lands elsewhere."""
    stores = []
    for name in ("one", "two"):
        here = tmp_path / name
        here.mkdir()
        env, args = (
            ({"AGENTD_DATA_DIR": "data"}, [])
            if how != "--data-dir"
            else ({}, ["--data-dir", "data"])
        )
        d = Daemon(shared.env(**env), args=args, spawn="exec", cwd=str(here))
        shared.editors.append(d)
        d.initialize()
        stores.append((d, new_session(d, title=name), here / "data"))
    assert len(shared.daemons()) == 2
    for d, sid, store in stores:
        assert (store / "sessions" / sid).is_dir()
        assert [s["id"] for s in d.call("session/list", {})["sessions"]] == [sid]


def test_quick_exits_end_with_code_0(tmp_path: Path, model) -> None:  # type: ignore[no-untyped-def]
    """agentd ending while its model client still loads in the background: a preload
    thread frozen inside an extension module at exit made glibc abort the process
    (exit -6, 3 times in 25 for an outside attacker)."""
    codes = []
    for _ in range(12):
        d = Daemon(daemon_env(tmp_path, model.base_url, AGENTD_SHARED="0"), spawn="exec")
        d.initialize(workspaceRoot=str(tmp_path))
        new_session(d, title="t")
        d.stop()
        codes.append(d.proc.returncode)
        assert not any("FATAL" in line for line in d.stderr_lines)
    assert codes == [0] * 12


def test_nothing_reaches_an_editor_before_its_initialize_is_answered(shared: Shared) -> None:
    """b is attached (its forwarder handed its pipes over) but has not initialized while
    a creates sessions (everyone's news): b's first message is its initialize answer,
    and it hears of what comes after."""
    a = shared.editor()
    b = shared.editor(initialize=False)
    made = [new_session(a, title=f"s{i}") for i in range(40)]
    init = b.request_async("initialize", {"processId": os.getpid()})
    b.result(init)
    with b._cond:
        first = b.messages[0]
    assert first.get("id") == init, first
    b.notify("initialized", {})
    later = new_session(a, title="after")
    b.wait_for(
        lambda: any(
            n["params"]["session"]["id"] == later for n in b.notifications("session/updated")
        )
    )
    assert not {n["params"]["session"]["id"] for n in b.notifications()} & set(made)


def test_an_answer_never_overtakes_the_deltas_a_slow_editor_has_not_taken(
    shared: Shared,
    model,  # type: ignore[no-untyped-def]
) -> None:
    """b follows a's stream but stops reading: its deltas are merged while its pipe is
    full. Its session/messages answer, written meanwhile, holds the text so far: the
    merged deltas go out before it, never after (they would be shown twice)."""
    a, b = shared.editor(), shared.editor()
    sid = new_session(a, title="t")
    text = " ".join(f"word{i}" for i in range(4000))
    model.enqueue({"text": text, "chunkSize": 4, "delayMs": 1})
    chat_id = a.request_async(
        "session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "go"}]}
    )
    b.call("session/messages", {"sessionId": sid})  # b follows
    b.stop_reading()
    a.wait_for(lambda: deltas(a, sid) >= 1500, timeout=60)  # b's pipe is full by now
    again = b.request_async("session/messages", {"sessionId": sid})
    a.wait_for(lambda: deltas(a, sid) >= 2500, timeout=60)
    b.resume_reading()
    message_id = a.result(chat_id, timeout=60)["message"]["id"]
    b.wait_for(
        lambda: any(
            n["params"]["sessionId"] == sid and n["params"]["status"] == "idle"
            for n in b.notifications("session/status")
        ),
        timeout=60,
    )
    assert followed_text(b, again, message_id, first=False) == text
    # And b was merged, not fed token by token: fewer deltas than a got.
    assert deltas(b, sid) < deltas(a, sid)
