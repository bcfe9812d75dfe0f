"""`agentd chat` as a user runs it: in a pseudo-terminal (tests/terminal.py) for the keys,
in a shell pipeline for a closed stdout, from odd current directories, with broken
daemons and bad configuration. Each test checks what the user sees (stdout, stderr, exit
code), what is stored, and that no process is left behind.

The client is started as `python -P -m agentd chat` with the package under test on
PYTHONPATH: like the `agentd` console script, it does not import from the current
directory. (The tests of the current directory use a console script.)
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from rpc_client import Daemon, daemon_env
from terminal import Terminal

import agentd

ROOT = Path(agentd.__file__).resolve().parents[1]
CHAT = [sys.executable, "-P", "-m", "agentd", "chat"]
MARK = "AGENTD_CHAT_TEST_MARK"
BANNER_START = "agentd: no model configured, using the bundled scripted model (offline)."
BANNER_LINES = 3


def chat_env(tmp_path: Path, base_url: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of one `agentd chat`: its own data, state and (absent) config;
    a mark inherited by every process it starts, to find any left behind."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {
        **os.environ,
        **daemon_env(tmp_path, base_url),
        "PYTHONPATH": path,
        MARK: uuid.uuid4().hex,
        **extra,
    }


def marked(env: dict[str, str]) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(MARK) == env[MARK] and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def assert_nothing_left(env: dict[str, str]) -> None:
    """No process started by that `agentd chat` (the daemon above all) still runs. The
    client waits for its daemon before exiting, so this holds at once; the deadline only
    covers the kernel finishing an exit."""
    deadline = time.monotonic() + 5
    left = marked(env)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = marked(env)
    assert not left, [p.cmdline() for p in left]


def stored_sessions(env: dict[str, str]) -> list[dict]:
    """The sessions in that chat's data dir, read by a daemon of our own."""
    d = Daemon({k: env[k] for k in ("AGENTD_DATA_DIR", "AGENTD_STATE_DIR", "AGENTD_CONFIG")})
    try:
        d.initialize()
        sessions = d.call("session/list", {"limit": 100})["sessions"]
        for s in sessions:
            s["messages"] = d.call("session/messages", {"sessionId": s["id"]})["messages"]
        return sessions
    finally:
        d.stop()


def text_of(message: dict) -> str:
    return "".join(p.get("text", "") for p in message["parts"] if p["type"] == "text")


def without_banner(stderr: str) -> list[str]:
    lines = stderr.splitlines()
    if BANNER_START in lines:
        at = lines.index(BANNER_START)
        del lines[at : at + BANNER_LINES]
    return lines


@pytest.fixture
def terminal() -> Iterator:
    """terminal(args, env, cwd=None) -> `agentd chat ARGS` in a pseudo-terminal."""
    started: list[tuple[Terminal, dict[str, str]]] = []

    def start(args: list[str], env: dict[str, str], cwd: Path | None = None) -> Terminal:
        term = Terminal([*CHAT, *args], env, cwd)
        started.append((term, env))
        return term

    yield start
    for term, env in started:
        term.close()
        # A test that failed may leave its daemon: ours, found by its mark.
        for proc in marked(env):
            with contextlib.suppress(psutil.Error):
                proc.kill()


def run_chat(
    args: list[str], env: dict[str, str], *, stdin: str = "", cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CHAT, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=90,
    )


# --- Ctrl-C and Ctrl-D in a terminal -------------------------------------------------------


@pytest.mark.parametrize(
    "keys",
    [
        ["^C", "^C"],
        ["^D"],
        ["^C", "^D"],
        ["typed but never sent", "^C", "^C"],
        ["typed but never sent", "^C", "^D"],
        # The first Ctrl-D hands the typed text over without a newline; the second is the
        # end of input: it leaves, and the text is not sent.
        ["typed but never sent", "^D", "^D"],
    ],
)
def test_keys_at_an_idle_prompt_leave_cleanly(tmp_path, terminal, keys):
    """Ctrl-C at the prompt clears the line and says how to leave; a second Ctrl-C, or
    Ctrl-D, leaves at once (it used to hang in a thread reading stdin, the daemon gone).
    Nothing was sent, so no session is left behind."""
    env = chat_env(tmp_path)
    term = terminal([], env)
    term.expect("you> ")
    for i, key in enumerate(keys):
        if key == "^C":
            term.ctrl_c()
        elif key == "^D":
            term.ctrl_d()
        else:
            term.send(key)
        if key == "^C" and i < len(keys) - 1:
            term.expect(r"\(Ctrl-C again or Ctrl-D to leave\)")
            term.expect("you> ")
    assert term.ended(timeout=15) == 0
    assert "Traceback" not in term.output
    assert_nothing_left(env)
    assert stored_sessions(env) == []


def test_ctrl_c_clears_the_typed_line_and_the_chat_goes_on(tmp_path, terminal):
    env = chat_env(tmp_path)
    term = terminal([], env)
    term.expect("you> ")
    term.send("lost words")
    term.ctrl_c()
    term.expect("you> ")
    term.sendline("kept words")
    assert term.expect("You said: (.*?)\r\n").group(1) == "kept words"
    # A Ctrl-C, then a line: the next Ctrl-C clears again rather than leaving.
    term.expect("you> ")
    term.ctrl_c()
    term.expect("you> ")
    term.sendline("more")
    term.expect("You said: more")
    term.expect("you> ")
    term.ctrl_c()
    term.expect("to leave")
    term.expect("you> ")
    term.ctrl_d()
    assert term.ended() == 0
    assert_nothing_left(env)
    [session] = stored_sessions(env)
    assert [text_of(m) for m in session["messages"] if m["role"] == "user"] == [
        "kept words",
        "more",
    ]


def test_ctrl_c_during_an_answer_stops_it_and_the_session_goes_on(tmp_path, terminal):
    env = chat_env(tmp_path)
    term = terminal([], env)
    term.expect("you> ")
    term.sendline("/stream 400 20")
    term.expect("w5 ")
    term.ctrl_c()
    term.expect(r"\[stopped\]")
    term.expect("you> ")
    term.sendline("again")
    term.expect("You said: again")
    # A whole answer has its usage line (only a stopped one, with none reported, has not).
    term.expect(r"\[[1-9]\d* in, [1-9]\d* out, \$0\.\d{4}\]")
    term.expect("you> ")
    term.ctrl_d()
    assert term.ended() == 0
    assert "0 in, 0 out" not in term.output
    assert_nothing_left(env)
    [session] = stored_sessions(env)
    stopped, answered = [m for m in session["messages"] if m["role"] == "assistant"]
    assert stopped["finishReason"] == "aborted" and text_of(stopped).startswith("w1 w2 w3 w4 w5")
    assert "w400" not in text_of(stopped)
    assert answered["finishReason"] == "stop"


def test_ctrl_c_in_one_shot_mode_stops_the_answer_and_exits_130(tmp_path, terminal):
    env = chat_env(tmp_path)
    term = terminal(["/stream 400 20"], env)
    term.expect("w5 ")
    term.ctrl_c()
    term.expect(r"\[stopped\]")
    assert term.ended() == 130
    # The answer stopped before the model reported usage: no line of zeros.
    assert "0 in, 0 out" not in term.output and "Traceback" not in term.output
    assert_nothing_left(env)
    [session] = stored_sessions(env)
    assert session["messages"][-1]["finishReason"] == "aborted"


def test_ctrl_c_while_starting_leaves_with_130(tmp_path, terminal):
    env = chat_env(tmp_path)
    term = terminal(["hello"], env)
    term.expect("offline")  # the banner: the client runs, the daemon is starting
    term.ctrl_c()
    assert term.ended() == 130
    assert "Traceback" not in term.output
    assert_nothing_left(env)


def test_ctrl_c_at_a_permission_question_refuses_and_stops(tmp_path, terminal):
    env = chat_env(tmp_path)
    call = '/tool write_file {"path": "x.txt", "content": "x"}'
    term = terminal([call], env, cwd=tmp_path)
    term.expect(r"allow write_file x.txt\? \[y\]es / \[a\]lways / \[N\]o: ")
    term.ctrl_c()
    term.expect(r"\[stopped\]")
    assert term.ended() == 130
    assert not (tmp_path / "x.txt").exists()
    assert_nothing_left(env)


def test_a_permission_question_is_answered_in_the_terminal(tmp_path, terminal):
    """The chat offers the tools its --help names: write_file asks, `y` allows it."""
    env = chat_env(tmp_path)
    term = terminal([], env, cwd=tmp_path)
    term.expect("you> ")
    term.sendline('/tool write_file {"path": "x.txt", "content": "x"}')
    term.expect(r"\[N\]o: ")
    term.sendline("y")
    term.expect(r"\[tool write_file x.txt\] done")
    term.expect("you> ")
    term.sendline('/tool write_file {"path": "y.txt", "content": "y"}')
    term.expect(r"\[N\]o: ")
    term.ctrl_d()  # Ctrl-D at the question: no
    term.expect(r"\[tool write_file\] failed: the user refused write_file")
    term.expect("you> ")
    term.ctrl_d()
    assert term.ended() == 0
    assert (tmp_path / "x.txt").read_text() == "x" and not (tmp_path / "y.txt").exists()


@pytest.mark.parametrize("where", ["prompt", "answer"])
def test_closing_the_terminal_stops_the_chat_and_its_daemon(tmp_path, terminal, where):
    """The terminal window closed (SIGHUP): the answer is stopped and stored, the daemon
    stopped, the client gone: 129, or 141 when it finds the terminal gone by writing to it
    first (nobody sees that code)."""
    env = chat_env(tmp_path)
    term = terminal([], env)
    term.expect("you> ")
    term.sendline("/stream 400 20" if where == "answer" else "hello")
    term.expect("w5 " if where == "answer" else "You said: hello")
    if where == "prompt":
        term.expect("you> ")
    assert term.hang_up() in (129, 141)
    assert_nothing_left(env)
    [session] = stored_sessions(env)
    answer = session["messages"][-1]
    assert answer["finishReason"] == ("aborted" if where == "answer" else "stop")


@pytest.mark.parametrize("when", ["idle", "answering"])
@pytest.mark.parametrize(
    "sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)]
)
def test_a_signal_with_piped_input_leaves_at_once(tmp_path, sig, code, when):
    """Lines piped in from a pipe that stays open: a signal ends the client, while it
    waits for a line (it used to wait in a thread, unwakeable) or while an answer streams
    (stopped and stored: piped lines are a script, and Ctrl-C ends a script)."""
    env = chat_env(tmp_path)
    client = subprocess.Popen(
        CHAT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert client.stdin is not None and client.stdout is not None
        client.stdin.write("/stream 3 1\n" if when == "idle" else "/stream 400 20\n")
        client.stdin.flush()
        # (Idle: the whole answer has come; the client is back at its read, or about to be.)
        assert client.stdout.read(9) == ("w1 w2 w3\n" if when == "idle" else "w1 w2 w3 ")
        client.send_signal(sig)
        assert client.wait(timeout=30) == code
        assert "Traceback" not in client.stderr.read()  # type: ignore[union-attr]
    finally:
        client.kill()
        client.wait()
    assert_nothing_left(env)
    [session] = stored_sessions(env)
    _question, answer = session["messages"]
    assert answer["finishReason"] == ("stop" if when == "idle" else "aborted")


# --- a closed stdout -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args,stdin,reader,aborted",
    [
        (["/stream 400 5"], "", "head -c 100", True),
        # One line: head reads it all, the answer ends before head does.
        (["/stream 400 5"], "", "head -1", False),
        (["hi"], "", "head -1", False),
        (["/stream 400 5"], "", "true", True),
        (["/stream 400 5"], "", "head -c 1", True),
        ([], "/stream 400 5\nnever sent\n", "head -c 50", True),
    ],
)
def test_a_closed_stdout_ends_the_client_and_its_daemon(tmp_path, args, stdin, reader, aborted):
    """`agentd chat ... | head`: the client ends quietly (0, or 141 like a process killed
    by SIGPIPE), the answer is aborted (stored as such), no daemon is left running."""
    env = chat_env(tmp_path)
    err, status = tmp_path / "stderr", tmp_path / "status"
    script = (
        f"{shlex.join([*CHAT, *args])} 2>{err} | {reader} >/dev/null; "
        f'echo "${{PIPESTATUS[0]}}" >{status}'
    )
    subprocess.run(["bash", "-c", script], input=stdin, text=True, env=env, timeout=60)
    assert status.read_text().strip() in ("0", "141")
    assert without_banner(err.read_text()) == []
    assert_nothing_left(env)
    [session] = stored_sessions(env)
    # One question (the second line of stdin never sent), one answer.
    assert [m["role"] for m in session["messages"]] == ["user", "assistant"]
    if aborted:
        answer = session["messages"][-1]
        assert answer["finishReason"] == "aborted" and "w400" not in text_of(answer)


def test_no_stdout_at_all_ends_the_client_at_its_first_word(tmp_path):
    """`agentd chat ... >&-`: nowhere to write the answer; it is stopped at once."""
    env = chat_env(tmp_path)
    out = subprocess.run(
        ["bash", "-c", f"{shlex.join([*CHAT, '/stream 400 20'])} >&-"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 141
    assert without_banner(out.stderr) == []
    assert_nothing_left(env)
    [session] = stored_sessions(env)
    assert session["messages"][-1]["finishReason"] == "aborted"


# --- where the daemon comes from, and a daemon that fails ----------------------------------


# What `pip install -e .` puts in site-packages for agentd (setuptools' editable finder,
# abridged): the package comes from a finder on sys.meta_path, after the path entries.
_EDITABLE_FINDER = """\
import importlib.util
import sys


class _AgentdUnderTest:
    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname != "agentd":
            return None
        return importlib.util.spec_from_file_location(
            "agentd", {init!r}, submodule_search_locations=[{package!r}]
        )


sys.meta_path.append(_AgentdUnderTest)
"""


@pytest.fixture(scope="session")
def installed_agentd(tmp_path_factory) -> Path:
    """The `agentd` command of a virtual environment where agentd is installed as an
    editable install from a clone installs it: a console script, and the package found
    by a finder after sys.path's entries (so a folder named agentd on sys.path, even one
    without __init__.py, comes first)."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
        check=True,
        timeout=60,
    )
    [site] = venv.glob("lib/python3*/site-packages")
    package = ROOT / "agentd"
    finder = _EDITABLE_FINDER.format(init=str(package / "__init__.py"), package=str(package))
    (site / "_agentd_under_test.py").write_text(finder)
    # (Processed before the system site-packages' .pth files: this finder comes first.)
    (site / "_agentd_under_test.pth").write_text("import _agentd_under_test\n")
    script = venv / "bin" / "agentd"
    script.write_text(
        f"#!{venv / 'bin' / 'python'}\nimport sys\nfrom agentd.cli import main\n"
        "if __name__ == '__main__':\n    sys.exit(main())\n"
    )
    script.chmod(0o755)
    where = subprocess.run(
        [venv / "bin" / "python", "-c", "import agentd.cli; print(agentd.cli.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": ""},
        cwd=venv,
    ).stdout
    assert where == f"{package / 'cli.py'}\n"  # this copy, not another installed one
    return script


@pytest.mark.parametrize(
    "files",
    [
        # A folder named agentd without __init__.py: a namespace package ("cannot import
        # name '__version__' from 'agentd' (unknown location)", then a traceback chain).
        {"agentd/notes.txt": "a folder that happens to be named agentd\n"},
        {"agentd/__init__.py": "raise ImportError('the wrong agentd was imported')\n"},
        # Another clone, of another version.
        {
            "agentd/__init__.py": "__version__ = '0.0.1'\n",
            "agentd/__main__.py": "raise SystemExit('the wrong agentd was run')\n",
        },
        {"agentd.py": "raise ImportError('the wrong agentd was imported')\n"},
        # A module named like one of the daemon's dependencies.
        {"pygls/__init__.py": "raise ImportError('the wrong pygls was imported')\n"},
        {"orjson.py": "raise ImportError('the wrong orjson was imported')\n"},
    ],
    ids=["namespace", "package", "other-clone", "module", "dependency", "dependency-module"],
)
def test_what_the_current_directory_holds_is_not_imported(tmp_path, installed_agentd, files):
    """`agentd chat` of an editable install: the daemon is the installed agentd, whatever
    the current directory holds (`python -m agentd` imported a folder named agentd from
    it)."""
    cwd = tmp_path / "project"
    for name, content in files.items():
        (cwd / name).parent.mkdir(parents=True, exist_ok=True)
        (cwd / name).write_text(content)
    env = chat_env(tmp_path)
    env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")  # the package comes from the venv
    out = subprocess.run(
        [str(installed_agentd), "chat", "hello"],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=90,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("You said: hello\n")
    assert without_banner(out.stderr) == []
    assert_nothing_left(env)
    [session] = stored_sessions(env)
    assert session["messages"][-1]["finishReason"] == "stop"


def test_a_daemon_that_cannot_start_is_one_line(tmp_path):
    """A broken dependency of the daemon (the client does not import pygls): one line
    naming the cause, exit 1, no traceback."""
    broken = tmp_path / "broken-site" / "pygls"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('pygls is broken here')\n")
    env = chat_env(tmp_path)
    env["PYTHONPATH"] = f"{broken.parent}{os.pathsep}{env['PYTHONPATH']}"
    out = run_chat(["hello"], env)
    assert out.returncode == 1
    assert without_banner(out.stderr) == [
        "agentd: the daemon exited with code 1 while starting: ImportError: pygls is broken here"
    ]
    assert out.stdout == ""
    assert_nothing_left(env)


def test_a_daemon_without_storage_is_one_line(tmp_path):
    (tmp_path / "a-file").write_text("")
    env = chat_env(tmp_path, AGENTD_DATA_DIR=str(tmp_path / "a-file" / "data"))
    out = run_chat(["hello"], env)
    assert out.returncode == 1
    [line] = without_banner(out.stderr)
    assert line.startswith("agentd: storage unavailable: ") and "Not a directory" in line
    assert_nothing_left(env)


def test_a_daemon_killed_during_an_answer_is_one_line(tmp_path):
    env = chat_env(tmp_path)
    client = subprocess.Popen(
        [*CHAT, "/stream 400 20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert client.stdout is not None and client.stderr is not None
        seen = ""
        while "w3 " not in seen:
            chunk = client.stdout.read(1)
            assert chunk, "the answer never streamed"
            seen += chunk
        [daemon] = psutil.Process(client.pid).children()
        daemon.send_signal(signal.SIGKILL)
        rest, stderr = client.communicate(timeout=30)
    finally:
        client.kill()
        client.wait()
    assert client.returncode == 1
    assert without_banner(stderr) == ["agentd: the daemon was killed by SIGKILL"]
    assert "w400" not in seen + rest
    assert_nothing_left(env)


# --- configuration ----------------------------------------------------------------------------


def _model_config(tmp_path: Path, base_url: str) -> Path:
    path = tmp_path / "chat.toml"
    path.write_text(
        f'default_model = "mine"\n[providers.p]\nbase_url = "{base_url}"\n'
        '[models.mine]\nprovider = "p"\nname = "scripted"\n'
    )
    return path


@pytest.mark.parametrize(
    "args",
    [
        ["--config", "FILE", "hello"],
        ["--config=FILE", "hello"],
        ["hello", "--config", "FILE"],
        ["hello"],  # named by $AGENTD_CONFIG
    ],
)
def test_config_after_the_subcommand_is_read(tmp_path, model, args):
    """`agentd chat --config FILE`: the model named there answers (not the offline one)."""
    path = _model_config(tmp_path, model.base_url)
    model.enqueue({"text": "from the configured model"})
    env = chat_env(tmp_path)
    if args == ["hello"]:
        env["AGENTD_CONFIG"] = str(path)
    out = run_chat([a.replace("FILE", str(path)) for a in args], env)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    assert out.stdout == "from the configured model\n"


def test_data_dir_after_the_subcommand_is_used(tmp_path):
    env = chat_env(tmp_path)
    other = tmp_path / "elsewhere"
    out = run_chat(["--data-dir", str(other), "hello"], env)
    assert out.returncode == 0, out.stderr
    assert (other / "sessions").is_dir() and stored_sessions(env) == []


@pytest.mark.parametrize("where", ["after", "before"])
@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_a_config_file_that_cannot_be_read_is_an_error(tmp_path, where, kind):
    path = tmp_path / ("absent.toml" if kind == "missing" else "a-dir")
    if kind == "directory":
        path.mkdir()
    env = chat_env(tmp_path)
    args = ["--config", str(path), "hello"]
    if where == "before":
        out = subprocess.run(
            [*CHAT[:-1], "--config", str(path), "chat", "hello"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
    else:
        out = run_chat(args, env)
    assert out.returncode == 2
    reason = "No such file or directory" if kind == "missing" else "Is a directory"
    assert out.stderr == f"agentd: --config {path}: {reason}\n"
    assert out.stdout == ""


@pytest.mark.parametrize(
    "body,problem",
    [
        ("default_model = 5\n", "default_model: expected a non-empty string, got integer 5"),
        ('default_model = ""\n', "default_model: expected a non-empty string"),
        ('defualt_model = "x"\n', "defualt_model: unknown option, ignored (did you mean "),
        ("default_model = \n", "using defaults"),
        ("[providers.p]\nbase_url = 7\n", "providers.p.base_url: expected"),
    ],
)
def test_configuration_problems_come_first_and_once(tmp_path, body, problem):
    """Each problem once (the daemon's copy stays in its log), before the banner."""
    path = tmp_path / "bad.toml"
    path.write_text(body)
    env = chat_env(tmp_path)
    out = run_chat(["--config", str(path), "hello"], env)
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    assert lines[0].startswith("agentd: configuration: ") and problem in lines[0], lines
    assert out.stderr.count(problem) == 1
    assert lines[-BANNER_LINES] == BANNER_START
    assert "WARNING" not in out.stderr


def test_list_needs_no_model_and_says_nothing_else(tmp_path):
    env = chat_env(tmp_path)
    out = run_chat(["--list"], env)
    assert out.returncode == 0 and out.stderr == ""
    assert out.stdout == "no sessions yet\n"
    run_chat(["hello"], env)
    out = run_chat(["--list"], env)
    assert out.stderr == ""
    [line] = out.stdout.splitlines()
    assert re.fullmatch(r"ses_\S+  \d{4}-\d\d-\d\d \d\d:\d\d  hello", line), line


# --- sessions, errors, tool lines ------------------------------------------------------------


def test_a_session_is_created_with_the_first_message(tmp_path):
    env = chat_env(tmp_path)
    for stdin in ("", "\n\n", "/help\n/sessions\n/new\n"):
        assert run_chat([], env, stdin=stdin).returncode == 0
    assert stored_sessions(env) == []
    out = run_chat([], env, stdin="first\n/new\n/new\nsecond\n/new\n")
    assert out.returncode == 0, out.stderr
    sessions = stored_sessions(env)
    assert sorted(text_of(s["messages"][0]) for s in sessions) == ["first", "second"]


@pytest.mark.parametrize(
    "status,name,attempts", [(500, "ProviderUnavailable", 4), (401, "ProviderAuthError", 1)]
)
def test_a_model_error_goes_to_stderr_once_and_ends_the_run(
    tmp_path, model, status, name, attempts
):
    """The error on stderr, the client's retry notices there too (not the daemon's log
    lines), exit 1; once it is shown nothing retries: no title is asked of the model."""
    model.enqueue({"error": {"status": status}, "repeat": 20})
    env = chat_env(tmp_path, model.base_url)
    out = run_chat(["hello there"], env)
    assert out.returncode == 1
    assert out.stdout == ""
    [session] = stored_sessions(env)
    error = session["messages"][-1]["error"]
    lines = out.stderr.splitlines()
    retries = [line for line in lines if line.startswith("[retrying: ")]
    assert [line for line in lines if line not in retries] == [f"error: {name}: {error['message']}"]
    assert error["name"] == name and len(retries) == attempts - 1
    assert len(model.requests()) == attempts
    assert session["title"] == "hello there"


def test_an_unreachable_model_is_reported_once_on_stderr(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens
    env = chat_env(tmp_path, f"http://127.0.0.1:{port}/v1")
    out = run_chat(["hello"], env)
    assert out.returncode == 1 and out.stdout == ""
    errors = [line for line in out.stderr.splitlines() if not line.startswith("[retrying: ")]
    assert len(errors) == 1 and errors[0].startswith("error: ProviderUnavailable: "), errors
    assert "WARNING" not in out.stderr


@pytest.mark.parametrize(
    "call,label,outcome",
    [
        ("/tool list_dir {}", "list_dir", "done"),
        ('/tool list_dir {"path": "sub"}', "list_dir sub", "done"),
        ('/tool read_file {"path": "missing.txt"}', "read_file missing.txt", "failed"),
        ('/tool grep {"pattern": "needle"}', "grep needle", "done"),
    ],
)
def test_a_tool_call_is_one_label_from_start_to_end(tmp_path, call, label, outcome):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "file.txt").write_text("needle\n")
    env = chat_env(tmp_path)
    out = run_chat([call], env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    labels = re.findall(r"^\[tool (.*?)\] (running\.\.\.|done|failed)", out.stdout, re.M)
    assert labels[-1] == (label, outcome), out.stdout
    assert {seen for seen, _ in labels} == {label}, out.stdout


# --- the daemon's log ---------------------------------------------------------------------


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_shows_the_daemon_log(tmp_path, model, where):
    """The daemon's log is kept off the terminal, except with -v (before or after `chat`)."""
    model.enqueue({"error": {"status": 500, "headers": {}}}, {"text": "fine after a retry"})
    env = chat_env(tmp_path, model.base_url)
    argv = [*CHAT[:-1], "-v", "chat", "hello"] if where == "before" else [*CHAT, "-v", "hello"]
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=90)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "fine after a retry\n"
    assert "WARNING agentd.provider: model request failed" in out.stderr


def test_log_file_keeps_the_daemon_log(tmp_path, model):
    model.enqueue({"error": {"status": 500, "headers": {}}}, {"text": "fine after a retry"})
    env = chat_env(tmp_path, model.base_url)
    log = tmp_path / "agentd.log"
    out = run_chat(["hello", "--log-file", str(log)], env)
    assert out.returncode == 0 and out.stdout == "fine after a retry\n"
    assert "WARNING" not in out.stderr
    assert "WARNING agentd.provider: model request failed" in log.read_text()


@pytest.mark.parametrize("where", ["before", "after"])
def test_a_log_file_that_cannot_be_written_is_an_error(tmp_path, where):
    bad = tmp_path / "no-such-dir" / "agentd.log"
    env = chat_env(tmp_path)
    if where == "after":
        argv = [*CHAT, "--log-file", str(bad), "hello"]
    else:
        argv = [*CHAT[:-1], "--log-file", str(bad), "chat", "hello"]
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == f"agentd: --log-file {bad}: No such file or directory\n"


# --- the distribution's name -------------------------------------------------------------


def test_no_instructions_install_a_name_this_project_does_not_own():
    """`agentd` on PyPI is another project: the distribution has a name of its own, and
    nothing here (the package's messages, both editor plugins and the docs) tells users to
    install `agentd` from PyPI."""
    import tomllib

    name = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"]
    assert name == "agentd-daemon"
    pattern = re.compile(r"pipx? install (?:-U |--user |--upgrade )*agentd\b(?![-\w/.])")
    checked = [ROOT / "Makefile", ROOT / "pyproject.toml", ROOT / "README.md"]
    for folder in ("agentd", "editors/nvim", "editors/vscode/src", "protocol"):
        checked += [
            p
            for p in (ROOT / folder).rglob("*")
            if p.is_file() and p.suffix in {".py", ".md", ".txt", ".lua", ".sh", ".ts"}
        ]
    checked.append(ROOT / "editors/vscode/README.md")
    assert len(checked) > 50
    offenders = [
        f"{path.relative_to(ROOT)}: {m.group(0)}"
        for path in checked
        if path.name != "test_nvim_plugin.py"  # (it checks that the message avoids it)
        for m in pattern.finditer(path.read_text(errors="replace"))
    ]
    assert offenders == []
