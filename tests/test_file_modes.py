"""File modes: everything agentd keeps for itself is 0700 / 0600 whatever the umask it
is started with, and what the model's tools make in the workspace follows that umask.

The first test runs a daemon under several umasks through a session that touches
every kind of file agentd makes (session log, lock, catalog with its -wal and -shm,
tool-context file, spilled tool output, log file) and every way a tool makes files
for the user (write_file with new directories, bash, an MCP server), and walks every
path under the data and state dirs, while the daemon runs and after it stopped. The
second starts a daemon on directories and files an older agentd left too open, with
the hostile variants: symbolic links, files of another user, a shared directory."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import chat, ctx_server, new_session, write_config
from rpc_client import Daemon, daemon_env

UMASKS = [0o022, 0o000, 0o027, 0o077]


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def private_modes(*roots: Path) -> dict[str, str]:
    """Every path under `roots` that is not 0700 (directories) or 0600 (files); the
    objects of a workspace's snapshot store, which git makes read-only, may be 0400."""
    wrong = {}
    for root in roots:
        for path in [root, *root.rglob("*")]:
            st = os.lstat(path)
            want = {0o700} if stat.S_ISDIR(st.st_mode) else {0o600}
            if "snapshots" in path.parts and "objects" in path.parts:
                want.add(0o400)
            if stat.S_ISLNK(st.st_mode) or stat.S_IMODE(st.st_mode) not in want:
                wrong[str(path)] = stat.filemode(st.st_mode)
    return wrong


def spawn_with_umask(umask: int, env: dict[str, str], args: list[str]) -> Daemon:
    return Daemon(env, args=args, preexec_fn=lambda: os.umask(umask))


@pytest.mark.parametrize("umask", UMASKS, ids=[f"umask-{u:03o}" for u in UMASKS])
def test_agentd_files_are_private_and_workspace_files_follow_the_umask(tmp_path, model, umask):
    ws = tmp_path / "ws"
    ws.mkdir()
    os.chmod(ws, 0o755)
    log_file = tmp_path / "logs" / "agentd.log"
    log_file.parent.mkdir()
    config = write_config(tmp_path, {"ctx": ctx_server()})
    env = daemon_env(tmp_path, model.base_url, **config)
    d = spawn_with_umask(umask, env, ["-v", "--log-file", str(log_file)])
    seen: dict[str, dict[str, str]] = {}

    def probe(params):  # type: ignore[no-untyped-def]
        # During the run: the tool-context file exists.
        seen["during"] = private_modes(tmp_path / "data", tmp_path / "state")
        ctx = tmp_path / "state" / "tool-context" / f"{params['sessionScopeKey']}.json"
        seen["ctx"] = {"exists": str(ctx.exists())}
        return {"output": "ok"}

    try:
        d.initialize(
            workspaceRoot=str(ws),
            capabilities={"permissionRequests": True, "clientTools": True},
        )
        d.handlers["tool/execute"] = probe
        d.handlers["permission/request"] = lambda p: {"outcome": "allow_once"}
        sid = new_session(d)  # untitled: a title request runs too
        model.enqueue(
            {
                "toolCalls": [
                    {
                        "name": "write_file",
                        "arguments": {"path": "new/deeper/w.txt", "content": "w"},
                    },
                    {
                        "name": "bash",
                        "arguments": {"command": "touch b.txt && mkdir bdir && umask"},
                    },
                    # Over the output limits: the full output is spilled to a file.
                    {"name": "bash", "arguments": {"command": "seq 1 40000"}},
                    {"name": "ctx_umask", "arguments": {}},
                    {"name": "probe", "arguments": {}},
                ]
            },
            {"text": "done"},
        )
        message = chat(
            d,
            sid,
            "make files",
            tools=["write_file", "bash", "ctx_umask"],
            clientTools=[{"name": "probe", "description": "d", "parameters": {}}],
        )["message"]
        tools = {p["callId"]: p for p in message["parts"] if p["type"] == "tool"}
        outputs = [p["state"].get("output", p["state"].get("error")) for p in tools.values()]
        assert all(p["state"]["status"] == "completed" for p in tools.values()), outputs
        _, bash_umask, spilled, server_umask, _ = outputs
        assert bash_umask.strip() == f"{umask:04o}"
        assert int(server_umask, 8) == umask
        assert "full output saved to" in spilled
        catalog = tmp_path / "data" / "catalog.sqlite3"
        assert Path(f"{catalog}-wal").exists() and Path(f"{catalog}-shm").exists()
        running = private_modes(tmp_path / "data", tmp_path / "state")
        assert list((tmp_path / "data" / "sessions" / sid / "tool-output").iterdir())
    finally:
        d.stop()
    assert seen["ctx"] == {"exists": "True"}
    assert seen["during"] == {} and running == {}
    assert private_modes(tmp_path / "data", tmp_path / "state") == {}
    assert mode(log_file) == 0o600 and log_file.stat().st_size > 0
    # The user's files, made with the user's umask.
    for directory in (ws / "new", ws / "new" / "deeper", ws / "bdir"):
        assert mode(directory) == 0o777 & ~umask, directory
    for file in (ws / "new" / "deeper" / "w.txt", ws / "b.txt"):
        assert mode(file) == 0o666 & ~umask, file
    # No temporary file left beside what write_file wrote.
    assert sorted(p.name for p in (ws / "new" / "deeper").iterdir()) == ["w.txt"]


def test_edit_and_rewrite_keep_a_files_own_mode(spawn, model, tmp_path):
    """A file the tools replace keeps its mode, whatever agentd's umask."""
    ws = tmp_path / "ws"
    ws.mkdir()
    for name, file_mode in (("a.txt", 0o644), ("b.sh", 0o755), ("c.txt", 0o640)):
        (ws / name).write_text("old\n")
        os.chmod(ws / name, file_mode)
    d = spawn(model.base_url, initialize=False)
    d.initialize(workspaceRoot=str(ws), capabilities={"permissionRequests": True})
    d.handlers["permission/request"] = lambda p: {"outcome": "allow_once"}
    sid = new_session(d, title="t")
    model.enqueue(
        {
            "toolCalls": [
                {"name": "write_file", "arguments": {"path": "a.txt", "content": "new\n"}},
                {
                    "name": "edit_file",
                    "arguments": {"path": "b.sh", "oldString": "old", "newString": "new"},
                },
                {
                    "name": "edit_file",
                    "arguments": {"path": "c.txt", "oldString": "old", "newString": "new"},
                },
            ]
        },
        {"text": "done"},
    )
    chat(d, sid, "edit", tools=["write_file", "edit_file"])
    assert [(ws / n).read_text() for n in ("a.txt", "b.sh", "c.txt")] == ["new\n"] * 3
    assert [mode(ws / n) for n in ("a.txt", "b.sh", "c.txt")] == [0o644, 0o755, 0o640]


def make_loose_tree(tmp_path: Path) -> dict[str, Path]:
    """What an older agentd under umask 022 (or 000) left: everything readable."""
    data, state = tmp_path / "data", tmp_path / "state"
    paths = {
        "data": data,
        "sessions": data / "sessions",
        "catalog": data / "catalog.sqlite3",
        "wal": data / "catalog.sqlite3-wal",
        "corrupt": data / "catalog.sqlite3.corrupt-20240101000000",
        "state": state,
        "toolctx": state / "tool-context",
        "log": tmp_path / "agentd.log",
    }
    for key in ("data", "sessions", "state", "toolctx"):
        paths[key].mkdir(parents=True, exist_ok=True)
        os.chmod(paths[key], 0o777 if key == "sessions" else 0o755)
    for key in ("catalog", "wal", "corrupt", "log"):
        paths[key].write_bytes(b"")
        os.chmod(paths[key], 0o644)
    return paths


def start(tmp_path: Path, **env: str) -> Daemon:
    d = Daemon({**daemon_env(tmp_path), **env}, args=["--log-file", str(tmp_path / "agentd.log")])
    d.initialize(workspaceRoot=str(tmp_path))
    d.call("session/list", {})  # waits for storage to open (and permissions fixed)
    return d


def test_too_open_files_of_an_older_agentd_are_made_private_at_startup(tmp_path):
    paths = make_loose_tree(tmp_path)
    d = start(tmp_path)
    modes = {k: oct(mode(p)) for k, p in paths.items()}  # (SQLite removes -wal at exit)
    d.stop()
    assert modes == {
        "data": oct(0o700),
        "sessions": oct(0o700),
        "catalog": oct(0o600),
        "wal": oct(0o600),
        "corrupt": oct(0o600),
        "state": oct(0o700),
        "toolctx": oct(0o700),
        "log": oct(0o600),
    }
    assert "file permissions" not in (tmp_path / "agentd.log").read_text()


def _elsewhere(tmp_path: Path, name: str, *, directory: bool = False) -> Path:
    target = tmp_path / "elsewhere" / name
    target.parent.mkdir(exist_ok=True)
    if directory:
        target.mkdir()
        os.chmod(target, 0o755)
    else:
        target.write_bytes(b"")
        os.chmod(target, 0o644)
    return target


def test_symbolic_links_are_not_followed_to_change_modes(tmp_path):
    """A data dir, a catalog and a log file that are symbolic links: agentd uses them,
    but what they point to keeps its mode; each refusal is logged."""
    paths = make_loose_tree(tmp_path)
    # The state dir is a link to a directory elsewhere, holding a loose tool-context dir.
    state_target = _elsewhere(tmp_path, "state", directory=True)
    (state_target / "tool-context").mkdir()
    os.chmod(state_target / "tool-context", 0o755)
    os.rmdir(paths["toolctx"])
    os.rmdir(paths["state"])
    paths["state"].symlink_to(state_target)
    # The catalog -wal is a link to a file elsewhere.
    wal_target = _elsewhere(tmp_path, "wal")
    paths["wal"].unlink()
    paths["wal"].symlink_to(wal_target)
    # The log file is a link to a file elsewhere.
    log_target = _elsewhere(tmp_path, "log")
    paths["log"].unlink()
    paths["log"].symlink_to(log_target)
    d = start(tmp_path)
    d.stop()
    # (The tool-context directory inside has the tool-context store's own checks.)
    assert mode(state_target) == 0o755
    assert mode(wal_target) == 0o644 and mode(log_target) == 0o644
    # Everything else is still made private.
    assert [mode(paths[k]) for k in ("data", "sessions", "catalog")] == [0o700, 0o700, 0o600]
    logged = log_target.read_text()
    assert f"file permissions: {paths['state']} is a symbolic link" in logged
    assert f"file permissions: {paths['wal']} is a symbolic link" in logged


def test_a_shared_data_dir_keeps_its_mode_but_agentds_files_in_it_are_private(tmp_path):
    """A data dir that holds other files (a home directory, say) is not agentd's to
    close; its sessions and catalog are."""
    paths = make_loose_tree(tmp_path)
    (paths["data"] / "notes.txt").write_text("the user's\n")
    os.chmod(paths["data"] / "notes.txt", 0o644)
    sticky = tmp_path / "sticky-state"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    d = start(tmp_path, AGENTD_STATE_DIR=str(sticky))
    d.stop()
    assert mode(paths["data"]) == 0o755 and mode(paths["data"] / "notes.txt") == 0o644
    assert [mode(paths[k]) for k in ("sessions", "catalog", "corrupt")] == [0o700, 0o600, 0o600]
    assert mode(sticky) == 0o1777 and mode(sticky / "tool-context") == 0o700


# Making a file another user's needs root, as CI runs (and this machine): as another
# user there is no foreign file to put in a temporary directory.
if os.geteuid() == 0:

    def test_files_of_another_user_are_left_alone(tmp_path):
        """Not owned by this user: left as they are, and said so in the log."""
        paths = make_loose_tree(tmp_path)
        os.chown(paths["catalog"], 54321, 54321)
        os.chown(paths["toolctx"], 54321, 54321)
        d = start(tmp_path)
        # (SQLite gives -wal and -shm the catalog's own mode: as open as the foreign one.)
        private = [mode(paths[k]) for k in ("data", "sessions", "corrupt")]
        d.stop()
        logged = (tmp_path / "agentd.log").read_text()
        for key in ("catalog", "toolctx"):
            st = os.lstat(paths[key])
            assert stat.S_IMODE(st.st_mode) in (0o644, 0o755) and st.st_uid == 54321
        assert (
            f"file permissions: {paths['catalog']} is -rw-r--r-- and owned by uid 54321" in logged
        )
        # The tool-context store refuses a directory it does not own, and says so.
        assert f"tool contexts are unavailable: {paths['toolctx']} is owned by uid 54321" in logged
        assert private == [0o700, 0o700, 0o600]


def test_write_file_outside_a_daemon_uses_the_current_umask(tmp_path):
    """agentd's modules used as a library (no `main`): the current umask is the user's."""
    code = (
        "import os, asyncio\n"
        "os.umask(0o027)\n"
        "from agentd.tools.files import write_file\n"
        "from agentd.tools.spec import ToolEnv\n"
        f"env = ToolEnv(workspace_root={str(tmp_path)!r}, spill_dir={str(tmp_path / 'spill')!r})\n"
        "asyncio.run(write_file({'path': 'a/b.txt', 'content': 'x'}, env, 'c1'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert mode(tmp_path / "a") == 0o750 and mode(tmp_path / "a" / "b.txt") == 0o640


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_agentd_chat_passes_the_users_umask_to_its_daemon(tmp_path, umask):
    """`agentd chat` itself runs under 077 like every agentd command: the daemon it
    spawns must still give the user's umask to what acts for the user (here an MCP
    server, which `agentd chat` offers to the model)."""
    config = write_config(tmp_path, {"ctx": ctx_server()})
    out = subprocess.run(
        [sys.executable, "-m", "agentd", "chat", "/tool ctx_umask {}"],
        capture_output=True,
        text=True,
        env={**os.environ, **daemon_env(tmp_path), **config},
        timeout=90,
        preexec_fn=lambda: os.umask(umask),
    )
    assert out.returncode == 0, out.stderr
    assert f"Tool ctx_umask returned: {umask:04o}" in out.stdout
    assert private_modes(tmp_path / "data", tmp_path / "state") == {}
