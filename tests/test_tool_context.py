"""The tool-context store against a hostile directory, stale files and two daemons that
share one state dir: the real daemon over real pipes, the scripted model on loopback, and
`agentd tool-context KEY` as a real process."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from rpc_client import Daemon, daemon_env

from agentd import toolctx

HOLD = [
    {
        "name": "hold",
        "description": "waits until the test lets it go",
        "parameters": {"type": "object", "properties": {}},
    }
]
RUN_ID = "run_0190000000000000aaaaaaaa"  # shaped like agentd's ids


def start(spawn, model, **env: str) -> Daemon:  # type: ignore[no-untyped-def]
    d = spawn(model.base_url, initialize=False, **env)
    d.init = d.initialize(capabilities={"clientTools": True})
    return d


class HeldRun:
    """A run kept active: its client tool call waits for `end()`."""

    def __init__(self, d: Daemon, model, session_id: str) -> None:  # type: ignore[no-untyped-def]
        self.d = d
        self.gate = threading.Event()
        d.handlers["tool/execute"] = lambda _params: self.gate.wait(60) and {"output": "ok"}
        before = len(self._calls())
        model.enqueue({"toolCalls": [{"name": "hold", "arguments": {}}]})
        self.chat_id = d.request_async(
            "session/chat",
            {
                "sessionId": session_id,
                "parts": [{"type": "text", "text": "hold on"}],
                "clientTools": HOLD,
            },
        )
        self.run_id = d.wait_for(lambda: len(self._calls()) > before and self._calls()[-1])[
            "params"
        ]["runId"]

    def _calls(self) -> list[dict]:
        return [m for m in list(self.d.messages) if m.get("method") == "tool/execute"]

    def end(self) -> None:
        self.gate.set()
        assert self.d.result(self.chat_id, timeout=30)["runId"] == self.run_id


def cli(tmp_path: Path, key: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentd", "tool-context", key],
        capture_output=True,
        text=True,
        env={**os.environ, **daemon_env(tmp_path)},
        timeout=60,
    )


def ctx_dir(tmp_path: Path) -> Path:
    return tmp_path / "state" / "tool-context"


def answers(
    tmp_path: Path, key: str, daemons: list[Daemon], *, with_cli: bool = True
) -> set[str | None]:
    """The run every reader names for `key`: read(), toolContext/get of each daemon and
    (a process start, so not everywhere) the CLI."""
    seen: set[str | None] = set()
    found = toolctx.read(key, ctx_dir(tmp_path))
    seen.add(found and found["runId"])
    if with_cli:
        out = cli(tmp_path, key)
        seen.add(json.loads(out.stdout)["runId"] if out.returncode == 0 else None)
    for d in daemons:
        got = d.call("toolContext/get", {"sessionScopeKey": key})
        seen.add(got and got["runId"])
    return seen


def linked_run(tmp_path: Path, key: str) -> str | None:
    """The run `<key>.json` names, read as a tool with no agentd code would."""
    path = ctx_dir(tmp_path) / f"{key}.json"
    return json.loads(path.read_text())["runId"] if path.exists() else None


def link_is_live(tmp_path: Path, key: str) -> bool:
    """What the README tells raw readers: the run is gone when a shared flock succeeds."""
    with open(ctx_dir(tmp_path) / f"{key}.json") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False


def context(key: str, pid: int, run_id: str = RUN_ID) -> dict:
    actor, project, thread = key.split(".")
    return {
        "sessionScopeKey": key,
        "sessionId": "ses_0190000000000000aaaaaaaa",
        "clientSessionId": thread,
        "runId": run_id,
        "actorKey": actor,
        "projectKey": project,
        "traceId": "trace-000000000000",
        "learningMode": "interactive",
        "allowLearningWrite": True,
        "pid": pid,
        "updatedAt": 1,
    }


# --- two daemons, one key ---------------------------------------------------------------


@pytest.mark.parametrize(
    "ending", ["newer_ends_first", "older_ends_first", "kill_newer", "kill_older"]
)
@pytest.mark.unshared
def test_two_daemons_running_one_key_keep_each_others_context(spawn, model, tmp_path, ending):
    a = start(spawn, model, AGENTD_DATA_DIR=str(tmp_path / "data-a"))
    b = start(spawn, model, AGENTD_DATA_DIR=str(tmp_path / "data-b"))
    who = {"userId": "bob", "projectId": "p1", "clientSessionId": "thr-1", "title": "t"}
    sa = a.call("session/create", who)["session"]
    sb = b.call("session/create", who)["session"]
    key = sa["sessionScopeKey"]
    assert sb["sessionScopeKey"] == key and sa["id"] != sb["id"]

    older = HeldRun(a, model, sa["id"])
    assert answers(tmp_path, key, [a, b], with_cli=False) == {older.run_id}
    newer = HeldRun(b, model, sb["id"])
    # Both active: every reader, in both daemons, names the newest run.
    assert answers(tmp_path, key, [a, b]) == {newer.run_id}
    assert linked_run(tmp_path, key) == newer.run_id and link_is_live(tmp_path, key)

    if ending == "newer_ends_first":
        newer.end()
        assert answers(tmp_path, key, [a, b]) == {older.run_id}
        assert linked_run(tmp_path, key) == older.run_id and link_is_live(tmp_path, key)
        last = older
    elif ending == "older_ends_first":
        older.end()
        assert answers(tmp_path, key, [a, b]) == {newer.run_id}
        assert linked_run(tmp_path, key) == newer.run_id and link_is_live(tmp_path, key)
        last = newer
    elif ending == "kill_newer":
        b.proc.send_signal(signal.SIGKILL)
        b.proc.wait()
        # The killed run's link is left behind, and says so to a raw reader (its lock
        # is free); every agentd reader names the run still active.
        assert answers(tmp_path, key, [a]) == {older.run_id}
        assert linked_run(tmp_path, key) == newer.run_id and not link_is_live(tmp_path, key)
        last = older
    else:
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait()
        assert answers(tmp_path, key, [b]) == {newer.run_id}
        assert linked_run(tmp_path, key) == newer.run_id and link_is_live(tmp_path, key)
        last = newer
    last.end()
    alive = [d for d in (a, b) if d.proc.poll() is None]
    assert answers(tmp_path, key, alive, with_cli=False) == {None}
    # The last run to end cleans up after the killed one too.
    assert os.listdir(ctx_dir(tmp_path)) == []


# --- stale files --------------------------------------------------------------------------


@pytest.mark.parametrize("pid", ["pid 1", "a live unrelated pid"])
def test_stale_context_naming_a_live_pid_is_not_active(spawn, model, tmp_path, pid):
    """Files as an agentd that died would leave them (the old single file, and a record
    and its link), naming a pid that is alive but is not that agentd."""
    key = "bob.p1.thr-1"
    other = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        live_pid = 1 if pid == "pid 1" else other.pid
        directory = ctx_dir(tmp_path)
        directory.mkdir(parents=True, mode=0o700)
        data = json.dumps(context(key, live_pid))
        (directory / f"{key}.json").write_text(data)
        old = "alice.p1.thr-2"
        (directory / f"{old}.json").write_text(json.dumps(context(old, live_pid)))
        (directory / f"{key}.{RUN_ID}.run").write_text(data)
        for f in directory.iterdir():
            f.chmod(0o600)
        for k in (key, old):
            assert toolctx.read(k, directory) is None
            out = cli(tmp_path, k)
            assert out.returncode == 1 and "no active run" in out.stderr and out.stdout == ""
        d = start(spawn, model)
        assert d.call("session/list", {})["sessions"] == []
        assert d.call("toolContext/get", {"sessionScopeKey": key}) is None
        # The startup sweep removed them all.
        assert os.listdir(directory) == []
    finally:
        other.kill()
        other.wait()


@pytest.mark.unshared
def test_files_of_a_killed_daemon_whose_pid_was_reused_are_not_active(spawn, model, tmp_path):
    a = start(spawn, model)
    s = a.call("session/create", {"userId": "bob", "projectId": "p1", "title": "t"})["session"]
    key = s["sessionScopeKey"]
    held = HeldRun(a, model, s["id"])
    assert answers(tmp_path, key, [a], with_cli=False) == {held.run_id}
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait()
    # The pid comes back as another process's: rewrite it in place (same inode).
    names = sorted(os.listdir(ctx_dir(tmp_path)))
    assert names == sorted([f"{key}.json", f"{key}.{held.run_id}.run"])
    path = ctx_dir(tmp_path) / f"{key}.json"
    with open(path, "r+") as f:
        data = json.load(f)
        data["pid"] = os.getpid()
        f.seek(0)
        f.truncate()
        json.dump(data, f)
    assert os.stat(path).st_nlink == 2  # the record sees the same bytes
    assert toolctx.read(key, ctx_dir(tmp_path)) is None
    out = cli(tmp_path, key)
    assert out.returncode == 1 and "no active run" in out.stderr
    b = start(spawn, model)
    assert b.call("toolContext/get", {"sessionScopeKey": key}) is None
    assert os.listdir(ctx_dir(tmp_path)) == []
    # The session itself runs again, and publishes afresh.
    again = HeldRun(b, model, s["id"])
    assert answers(tmp_path, key, [b], with_cli=False) == {again.run_id}
    again.end()


# --- hostile entries ----------------------------------------------------------------------


def test_entries_that_are_not_regular_files_are_skipped_reported_and_never_opened(
    spawn, model, tmp_path
):
    directory = ctx_dir(tmp_path)
    directory.mkdir(parents=True, mode=0o700)
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(context("anonymous.default.link", os.getpid())))
    outside.chmod(0o644)
    before = outside.read_bytes()
    (directory / "anonymous.default.dir.json").mkdir()
    (directory / "anonymous.default.dir.json" / "inside").write_text("x")
    os.mkfifo(directory / "anonymous.default.fifo.json")
    os.mkfifo(directory / f"anonymous.default.fifo.{RUN_ID}.run")
    os.mkfifo(directory / ".tmp-1-abcd")
    sock = socket.socket(socket.AF_UNIX)
    short = tempfile.mkdtemp(dir="/tmp")  # AF_UNIX paths are short; a socket can be moved
    sock.bind(f"{short}/s")
    os.rename(f"{short}/s", directory / "anonymous.default.sock.json")
    os.rmdir(short)
    (directory / "anonymous.default.link.json").symlink_to(outside)
    (directory / f"anonymous.default.link.{RUN_ID}.run").symlink_to(outside)
    (directory / "anonymous.default.dangling.json").symlink_to(tmp_path / "nowhere")
    hostile = {
        "anonymous.default.dir.json": "a directory",
        "anonymous.default.fifo.json": "a FIFO",
        f"anonymous.default.fifo.{RUN_ID}.run": "a FIFO",
        ".tmp-1-abcd": "a FIFO",
        "anonymous.default.sock.json": "a socket",
        "anonymous.default.link.json": "a symlink",
        f"anonymous.default.link.{RUN_ID}.run": "a symlink",
        "anonymous.default.dangling.json": "a symlink",
    }
    # Root can make the one thing a user cannot: a file of someone else's, held as a
    # live run would be.
    foreign = None
    if os.geteuid() == 0:
        name = f"anonymous.default.foreign.{RUN_ID}.run"
        path = directory / name
        path.write_text(json.dumps(context("anonymous.default.foreign", os.getpid())))
        os.chown(path, 4242, 4242)
        foreign = open(path)
        fcntl.flock(foreign, fcntl.LOCK_EX)
        hostile[name] = "owned by uid 4242"
    kinds = {name: stat.S_IFMT(os.lstat(directory / name).st_mode) for name in hostile}
    try:
        d = start(spawn, model)
        assert "toolContextError" not in d.init
        # Storage opened (the sweep ran) and answers.
        assert d.call("session/list", {}, timeout=10)["sessions"] == []
        for name in hostile:
            key = name.split(".json")[0] if name.endswith(".json") else name.rsplit(".", 2)[0]
            if name.startswith(".tmp"):
                continue
            assert d.call("toolContext/get", {"sessionScopeKey": key}) is None, name
            assert toolctx.read(key, directory) is None, name
        log = "".join(d.stderr_lines)
        for name, why in hostile.items():
            assert f"{name} ({why})" in log, name
        # Left as they were; nothing followed out of the directory.
        assert {n: stat.S_IFMT(os.lstat(directory / n).st_mode) for n in hostile} == kinds
        assert outside.read_bytes() == before and stat.S_IMODE(outside.stat().st_mode) == 0o644

        # Runs whose keys have such entries still run, and their context is found.
        for thread in ("dir", "fifo", "link", "sock"):
            s = d.call("session/create", {"clientSessionId": thread, "title": "t"})["session"]
            key = s["sessionScopeKey"]
            held = HeldRun(d, model, s["id"])
            with_cli = thread == "dir"
            assert answers(tmp_path, key, [d], with_cli=with_cli) == {held.run_id}, thread
            link = directory / f"{key}.json"
            if thread == "dir":
                assert link.is_dir() and not link.is_symlink()
            else:  # the name is agentd's: its own file replaced the FIFO, socket or symlink
                assert stat.S_ISREG(os.lstat(link).st_mode)
                assert linked_run(tmp_path, key) == held.run_id
            held.end()
            assert answers(tmp_path, key, [d], with_cli=False) == {None}, thread
        assert outside.read_bytes() == before and stat.S_IMODE(outside.stat().st_mode) == 0o644
        assert (directory / "anonymous.default.dir.json" / "inside").read_text() == "x"
        assert stat.S_ISFIFO(os.lstat(directory / f"anonymous.default.fifo.{RUN_ID}.run").st_mode)
    finally:
        sock.close()
        if foreign is not None:
            foreign.close()


def test_a_lock_held_on_the_directory_delays_a_run_but_never_hangs_it(spawn, model, tmp_path):
    d = start(spawn, model)
    s = d.call("session/create", {"title": "t"})["session"]
    fd = os.open(ctx_dir(tmp_path), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        held = HeldRun(d, model, s["id"])
        # No context (it could not be published), but the run goes on.
        assert d.call("toolContext/get", {"sessionScopeKey": s["sessionScopeKey"]}) is None
        held.end()
    finally:
        os.close(fd)
    assert "not written" in "".join(d.stderr_lines)
    held = HeldRun(d, model, s["id"])
    assert answers(tmp_path, s["sessionScopeKey"], [d]) == {held.run_id}
    held.end()


# --- the directory itself -------------------------------------------------------------------


def _make_symlink(tmp_path: Path) -> str:
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o755)
    target.chmod(0o755)
    (target / "theirs").write_text("x")
    ctx_dir(tmp_path).symlink_to(target)
    return "is a symlink"


def _make_dangling(tmp_path: Path) -> str:
    ctx_dir(tmp_path).symlink_to(tmp_path / "nowhere")
    return "is a symlink"


def _make_file(tmp_path: Path) -> str:
    ctx_dir(tmp_path).write_text("x")
    return "is a regular file, not a directory"


def _make_mode(mode: int):  # type: ignore[no-untyped-def]
    def make(tmp_path: Path) -> str:
        ctx_dir(tmp_path).mkdir()
        ctx_dir(tmp_path).chmod(mode)
        return f"is writable by group or others (mode {mode:04o})"

    return make


def _make_foreign(tmp_path: Path) -> str:
    ctx_dir(tmp_path).mkdir(mode=0o700)
    os.chown(ctx_dir(tmp_path), 4242, 4242)
    return f"is owned by uid 4242, not by this user (uid {os.geteuid()})"


REFUSED = {
    "symlink to a directory": _make_symlink,
    "dangling symlink": _make_dangling,
    "regular file": _make_file,
    "group-writable": _make_mode(0o770),
    "world-writable sticky": _make_mode(0o1777),
}
if os.geteuid() == 0:  # only root can give a directory to someone else
    REFUSED["owned by another user"] = _make_foreign


def _modes(tmp_path: Path) -> dict[Path, tuple[int, int]]:
    return {
        p: (stat.S_IMODE(os.lstat(p).st_mode), os.lstat(p).st_uid)
        for p in tmp_path.rglob("*")
        if p.is_relative_to(tmp_path / "state") or p.is_relative_to(tmp_path / "elsewhere")
    }


@pytest.mark.parametrize("variant", list(REFUSED))
def test_a_directory_that_is_not_ours_is_refused_and_runs_go_on(spawn, model, tmp_path, variant):
    (tmp_path / "state").mkdir()
    reason = REFUSED[variant](tmp_path)
    before = _modes(tmp_path)
    d = start(spawn, model)
    s = d.call("session/create", {"title": "t"})["session"]
    held = HeldRun(d, model, s["id"])
    assert d.call("toolContext/get", {"sessionScopeKey": s["sessionScopeKey"]}) is None
    held.end()
    # Nothing written, nothing chmodded, but the state dir itself: it is agentd's and
    # is made private at startup (0700) whatever became of the tool-context directory.
    state = tmp_path / "state"
    assert stat.S_IMODE(os.lstat(state).st_mode) == 0o700
    assert {p: m for p, m in _modes(tmp_path).items() if p != state} == {
        p: m for p, m in before.items() if p != state
    }
    error = d.init.get("toolContextError", "")
    assert error.startswith(f"{ctx_dir(tmp_path)} {reason}")
    assert d.init["toolContextDir"] == str(ctx_dir(tmp_path))
    out = cli(tmp_path, s["sessionScopeKey"])
    assert out.returncode == 1
    assert out.stderr.strip() == f"tool-context directory refused: {error}"
    assert toolctx.read(s["sessionScopeKey"], ctx_dir(tmp_path)) is None


def test_an_existing_private_directory_and_a_symlinked_state_dir_are_accepted(
    spawn, model, tmp_path
):
    real_state = tmp_path / "real-state"
    (real_state / "tool-context").mkdir(parents=True)
    (real_state / "tool-context").chmod(0o755)
    (tmp_path / "state").symlink_to(real_state)
    d = start(spawn, model)
    assert "toolContextError" not in d.init
    assert stat.S_IMODE(os.stat(ctx_dir(tmp_path)).st_mode) == 0o700
    s = d.call("session/create", {"title": "t"})["session"]
    held = HeldRun(d, model, s["id"])
    assert answers(tmp_path, s["sessionScopeKey"], [d]) == {held.run_id}
    held.end()
