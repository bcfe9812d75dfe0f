"""Built-in tools, exercised on real files, real processes and real FIFOs in tmp_path."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import time
from pathlib import Path
from typing import Any, TypeVar

import pytest
from helpers import run

from agentd.tools import (
    BUILTIN_TOOLS,
    DEFAULT_TOOLS,
    ToolEnv,
    ToolOutput,
    run_builtin_tool,
    to_openai_tool,
    truncate_output,
)
from agentd.tools import bash as bash_module
from agentd.tools.patterns import GlobPattern
from agentd.tools.search import GLOB_MAX_RESULTS, GREP_MAX_MATCHES

T = TypeVar("T")


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory next to the workspace with a file the tools must never touch."""
    d = tmp_path / "outside"
    d.mkdir()
    (d / "secret.txt").write_text("top secret\n")
    return d


@pytest.fixture
def env(ws: Path, tmp_path: Path) -> ToolEnv:
    return ToolEnv(
        workspace_root=ws,
        spill_dir=tmp_path / "spill",
        process_env={"AGENTD_SESSION_SCOPE_KEY": "scope-123"},
    )


def call(env: ToolEnv, name: str, /, call_id: str = "call_1", **input: Any) -> ToolOutput:
    return run(run_builtin_tool(name, input, env, call_id=call_id))


def process_running(pid: int) -> bool:
    """False once the process is gone or a zombie (dead, waiting for a parent to reap it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat_line[stat_line.rfind(")") + 2] not in "ZX"


# --- the table -------------------------------------------------------------------------


def test_builtin_table_and_openai_shape() -> None:
    assert set(BUILTIN_TOOLS) == {
        "read_file",
        "list_dir",
        "glob",
        "grep",
        "write_file",
        "edit_file",
        "bash",
    }
    assert DEFAULT_TOOLS == ("read_file", "list_dir", "glob", "grep")
    assert {n for n, s in BUILTIN_TOOLS.items() if s.writes} == {"write_file", "edit_file", "bash"}
    for name, spec in BUILTIN_TOOLS.items():
        assert spec.name == name
        assert spec.parameters["type"] == "object"
        assert set(spec.parameters["required"]) <= set(spec.parameters["properties"])
    assert BUILTIN_TOOLS["edit_file"].parameters["required"] == ["path", "oldString", "newString"]
    spec = BUILTIN_TOOLS["read_file"]
    assert to_openai_tool(spec.name, spec.description, spec.parameters) == {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": spec.description,
            "parameters": spec.parameters,
        },
    }


# --- input validation ------------------------------------------------------------------


def test_input_validation_messages(env: ToolEnv) -> None:
    out = call(env, "read_file")
    assert out.is_error and "missing required parameter 'path'" in out.output
    out = call(env, "read_file", path=3)
    assert out.is_error and "'path' must be a string" in out.output
    out = call(env, "read_file", path="a", offset="2")
    assert out.is_error and "'offset' must be an integer, got a string" in out.output
    out = call(env, "read_file", path="a", offset=True)
    assert out.is_error and "'offset' must be an integer, got a boolean" in out.output
    out = call(env, "read_file", path="a", offset=0)
    assert out.is_error and "'offset' must be at least 1" in out.output
    out = call(env, "read_file", path="a", bogus=1)
    assert out.is_error and "unknown parameter 'bogus'" in out.output
    out = call(env, "edit_file", path="a", oldString="x", newString="y", replaceAll="yes")
    assert out.is_error and "'replaceAll' must be a boolean" in out.output
    out = run(run_builtin_tool("grep", ["x"], env, call_id="c"))  # type: ignore[arg-type]
    assert out.is_error and "must be a JSON object" in out.output
    out = call(env, "no_such_tool")
    assert out.is_error and "Unknown tool 'no_such_tool'" in out.output


def test_null_optional_parameter_counts_as_absent(env: ToolEnv, ws: Path) -> None:
    (ws / "a.txt").write_text("x\n")
    assert call(env, "list_dir", path=None).output == "a.txt"
    out = call(env, "read_file", path=None)
    assert out.is_error and "'path' must be a string, got null" in out.output


def test_integral_float_is_accepted_as_integer(env: ToolEnv, ws: Path) -> None:
    (ws / "a.txt").write_text("one\ntwo\nthree\n")
    out = call(env, "read_file", path="a.txt", offset=2.0, limit=1)
    assert not out.is_error
    assert out.output.startswith("    2\ttwo\n")


# --- read_file -------------------------------------------------------------------------


def test_read_file_numbers_lines_and_notes_the_end(env: ToolEnv, ws: Path) -> None:
    (ws / "a.txt").write_text("alpha\r\nbeta\ngamma")
    out = call(env, "read_file", path="a.txt")
    assert not out.is_error
    assert out.title == "a.txt"
    assert out.output == "    1\talpha\n    2\tbeta\n    3\tgamma\n\n(End of file: 3 lines.)"


def test_read_file_offset_limit_and_continuation(env: ToolEnv, ws: Path) -> None:
    (ws / "big.txt").write_text("".join(f"line {i}\n" for i in range(1, 3001)))
    first = call(env, "read_file", path="big.txt")
    lines = first.output.split("\n")
    assert lines[0] == "    1\tline 1"
    assert lines[1999] == " 2000\tline 2000"
    assert "Use offset=2001 to continue" in first.output
    assert "line 2001" not in first.output
    rest = call(env, "read_file", path="big.txt", offset=2001)
    assert rest.output.startswith(" 2001\tline 2001\n")
    assert rest.output.endswith("(End of file: 3000 lines.)")
    window = call(env, "read_file", path="big.txt", offset=10, limit=2)
    assert window.output.split("\n")[:2] == ["   10\tline 10", "   11\tline 11"]
    assert "Use offset=12 to continue" in window.output


def test_read_file_limits_output_size_and_cuts_long_lines(env: ToolEnv, ws: Path) -> None:
    (ws / "wide.txt").write_text("x" * 10_000 + "\n" + ("y" * 1000 + "\n") * 100)
    out = call(env, "read_file", path="wide.txt")
    first = out.output.split("\n")[0]
    assert first == "    1\t" + "x" * 2000 + " [line truncated]"
    assert len(out.output.encode()) < 50_000
    assert "Output limited" in out.output
    assert "[output truncated" not in out.output  # the read tool's own limit came first


def test_read_file_errors(env: ToolEnv, ws: Path) -> None:
    (ws / "bin.dat").write_bytes(b"\x89PNG\r\n\x00\x00data")
    (ws / "short.txt").write_text("one\n")
    (ws / "empty.txt").write_text("")
    (ws / "sub").mkdir()
    out = call(env, "read_file", path="bin.dat")
    assert out.is_error and "binary file" in out.output
    out = call(env, "read_file", path="missing.txt")
    assert out.is_error and out.output == "File not found: missing.txt"
    out = call(env, "read_file", path="sub")
    assert out.is_error and "is a directory" in out.output and "list_dir" in out.output
    out = call(env, "read_file", path="short.txt", offset=5)
    assert out.is_error and "offset 5 is past the end of short.txt, which has 1 lines" in out.output
    out = call(env, "read_file", path="empty.txt")
    assert not out.is_error and out.output == "(empty file)"
    out = call(env, "read_file", path="")
    assert out.is_error and "must not be empty" in out.output


def test_read_file_accepts_absolute_path_inside_and_symlink_inside(env: ToolEnv, ws: Path) -> None:
    (ws / "real.txt").write_text("inside\n")
    (ws / "link.txt").symlink_to("real.txt")
    out = call(env, "read_file", path=str(ws / "real.txt"))
    assert not out.is_error and "inside" in out.output
    out = call(env, "read_file", path="link.txt")
    assert not out.is_error and "inside" in out.output


def test_workspace_root_given_through_a_symlink(tmp_path: Path, ws: Path) -> None:
    (ws / "a.txt").write_text("hello\n")
    alias = tmp_path / "alias"
    alias.symlink_to(ws)
    env = ToolEnv(workspace_root=alias, spill_dir=tmp_path / "spill", process_env={})
    assert "hello" in call(env, "read_file", path="a.txt").output
    assert "hello" in call(env, "read_file", path=str(alias / "a.txt")).output
    assert "hello" in call(env, "read_file", path=str(ws / "a.txt")).output
    assert call(env, "grep", pattern="hello").output == "a.txt:1:hello"


def test_missing_workspace_root_is_a_tool_error(tmp_path: Path) -> None:
    env = ToolEnv(workspace_root=tmp_path / "gone", spill_dir=tmp_path / "spill", process_env={})
    for name, args in [
        ("read_file", {"path": "a"}),
        ("grep", {"pattern": "a"}),
        ("bash", {"command": "true"}),
    ]:
        out = call(env, name, **args)
        assert out.is_error and "does not exist" in out.output


# --- confinement -----------------------------------------------------------------------


@pytest.fixture
def escapes(ws: Path, outside: Path) -> dict[str, str]:
    """Each way out of the workspace, as a path argument."""
    (ws / "sub").mkdir()
    (ws / "to_etc").symlink_to("/etc")
    (ws / "to_outside_dir").symlink_to(outside)
    (ws / "to_secret").symlink_to(outside / "secret.txt")
    (ws / "zero").symlink_to("/dev/zero")
    (ws / "dangling_out").symlink_to(outside / "new.txt")
    return {
        "dotdot": "../outside/secret.txt",
        "dotdot_via_subdir": "sub/../../outside/secret.txt",
        "absolute_outside": str(outside / "secret.txt"),
        "symlink_to_etc": "to_etc/hostname",
        "symlinked_dir_out": "to_outside_dir/secret.txt",
        "symlinked_file_out": "to_secret",
        "dev_zero_via_symlink": "zero",
        "dangling_symlink_out": "dangling_out",
        "nul_byte": "sub/a\0b.txt",
    }


ESCAPE_NAMES = [
    "dotdot",
    "dotdot_via_subdir",
    "absolute_outside",
    "symlink_to_etc",
    "symlinked_dir_out",
    "symlinked_file_out",
    "dev_zero_via_symlink",
    "dangling_symlink_out",
    "nul_byte",
]


@pytest.mark.parametrize("escape", ESCAPE_NAMES)
def test_every_file_tool_refuses_paths_leaving_the_workspace(
    env: ToolEnv, outside: Path, escapes: dict[str, str], escape: str
) -> None:
    path = escapes[escape]
    before = sorted(p.name for p in outside.iterdir())
    attempts = [
        ("read_file", {"path": path}),
        ("write_file", {"path": path, "content": "pwned\n"}),
        ("edit_file", {"path": path, "oldString": "top", "newString": "pwned"}),
        ("list_dir", {"path": path}),
        ("grep", {"pattern": "secret", "path": path}),
        ("glob", {"pattern": "*", "path": path}),
    ]
    for name, args in attempts:
        out = call(env, name, **args)
        assert out.is_error, (name, out)
        if escape == "nul_byte":
            assert "NUL byte" in out.output
        else:
            assert "outside the workspace" in out.output, (name, out.output)
        assert "top secret" not in out.output
    assert (outside / "secret.txt").read_text() == "top secret\n"
    assert sorted(p.name for p in outside.iterdir()) == before


def test_write_through_new_dirs_cannot_escape(env: ToolEnv, tmp_path: Path) -> None:
    out = call(env, "write_file", path="newdir/../../escaped.txt", content="x")
    assert out.is_error and "outside the workspace" in out.output
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "ws" / "newdir").exists()


def test_hard_link_to_a_file_outside_is_refused(env: ToolEnv, ws: Path, outside: Path) -> None:
    os.link(outside / "secret.txt", ws / "hard.txt")
    out = call(env, "read_file", path="hard.txt")
    assert out.is_error and "hard links" in out.output and "top secret" not in out.output
    out = call(env, "write_file", path="hard.txt", content="pwned")
    assert out.is_error and "hard links" in out.output
    out = call(env, "edit_file", path="hard.txt", oldString="top", newString="pwned")
    assert out.is_error and "hard links" in out.output
    out = call(env, "grep", pattern="secret")
    assert out.output == "No matches found."
    out = call(env, "grep", pattern="secret", path="hard.txt")
    assert out.is_error and "top secret" not in out.output
    assert (outside / "secret.txt").read_text() == "top secret\n"


def test_fifo_socket_and_device_are_refused_without_blocking(env: ToolEnv, ws: Path) -> None:
    os.mkfifo(ws / "pipe")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(ws / "sock"))
    try:
        special = {"pipe": "a FIFO", "sock": "a socket"}
        try:
            os.mknod(ws / "zero", stat.S_IFCHR | 0o600, os.makedev(1, 5))
            special["zero"] = "a device file"
        except PermissionError:
            pass  # no CAP_MKNOD here; /dev/zero via a symlink is covered by the escapes
        for name, kind in special.items():
            out = call(env, "read_file", path=name)
            assert out.is_error and kind in out.output, out
            out = call(env, "write_file", path=name, content="x")
            assert out.is_error and kind in out.output, out
            out = call(env, "edit_file", path=name, oldString="a", newString="b")
            assert out.is_error and kind in out.output, out
        (ws / "real.txt").write_text("needle\n")
        # grep and glob walk past special files instead of opening them (a FIFO would block).
        assert call(env, "grep", pattern="needle").output == "real.txt:1:needle"
        assert call(env, "glob", pattern="*").output == "real.txt"
        assert stat.S_ISFIFO(os.stat(ws / "pipe").st_mode)
    finally:
        sock.close()


def test_search_does_not_follow_symlinks_out(env: ToolEnv, ws: Path, outside: Path) -> None:
    (ws / "to_outside_dir").symlink_to(outside)
    (ws / "to_secret").symlink_to(outside / "secret.txt")
    (ws / "to_etc").symlink_to("/etc")
    (ws / "loop").symlink_to(".")
    (ws / "inside.txt").write_text("secret inside\n")
    (ws / "to_inside").symlink_to("inside.txt")
    out = call(env, "grep", pattern="secret")
    assert sorted(out.output.split("\n")) == [
        "inside.txt:1:secret inside",
        "to_inside:1:secret inside",
    ]
    out = call(env, "glob", pattern="**/*")
    assert sorted(out.output.split("\n")) == ["inside.txt", "to_inside"]
    out = call(env, "list_dir")
    assert out.output.split("\n") == [
        "inside.txt",
        "loop@",
        "to_etc@",
        "to_inside@",
        "to_outside_dir@",
        "to_secret@",
    ]
    assert str(outside) not in out.output


# --- list_dir --------------------------------------------------------------------------


def test_list_dir_sorted_with_dir_suffix_and_skips_git(env: ToolEnv, ws: Path) -> None:
    (ws / ".git").mkdir()
    (ws / "b.txt").write_text("")
    (ws / "a").mkdir()
    (ws / ".env").write_text("")
    (ws / "a" / "inner.txt").write_text("")
    out = call(env, "list_dir")
    assert out.output == ".env\na/\nb.txt"
    assert out.title == "."
    out = call(env, "list_dir", path="a")
    assert out.output == "inner.txt" and out.title == "a"
    (ws / "a" / "inner.txt").unlink()
    assert call(env, "list_dir", path="a").output == "(empty directory)"
    out = call(env, "list_dir", path="b.txt")
    assert out.is_error and "not a directory" in out.output
    out = call(env, "list_dir", path="nope")
    assert out.is_error and "not found" in out.output


def test_list_dir_caps_entries(env: ToolEnv, ws: Path) -> None:
    for i in range(1005):
        (ws / f"f{i:04d}").write_text("")
    out = call(env, "list_dir")
    lines = out.output.split("\n")
    assert lines[0] == "f0000" and lines[999] == "f0999"
    assert "f1000" not in out.output
    assert "Showing 1000 of 1005 entries" in out.output
    assert out.metadata == {"count": 1005}


# --- glob ------------------------------------------------------------------------------


def test_glob_recursive_sorted_newest_first_skipping_git_and_node_modules(
    env: ToolEnv, ws: Path
) -> None:
    files = ["a.py", "src/b.py", "src/deep/c.py", "src/d.txt", ".git/e.py", "node_modules/f.py"]
    for i, rel in enumerate(files):
        p = ws / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
        os.utime(p, (1_000_000 + i, 1_000_000 + i))
    os.utime(ws / "a.py", (2_000_000, 2_000_000))  # newest
    out = call(env, "glob", pattern="**/*.py")
    assert out.output.split("\n") == ["a.py", "src/deep/c.py", "src/b.py"]
    assert out.title == "**/*.py"
    assert call(env, "glob", pattern="src/**/*.py").output.split("\n") == [
        "src/deep/c.py",
        "src/b.py",
    ]
    assert call(env, "glob", pattern="*.py").output == "a.py"
    assert call(env, "glob", pattern="./src/*.py").output == "src/b.py"
    assert call(env, "glob", pattern="src/*").output.split("\n") == ["src/d.txt", "src/b.py"]
    assert call(env, "glob", pattern="**/*.{py,txt}", path="src").output.split("\n") == [
        "src/d.txt",
        "src/deep/c.py",
        "src/b.py",
    ]
    assert call(env, "glob", pattern="src/?.py").output == "src/b.py"
    assert call(env, "glob", pattern="src/[!b].*").output == "src/d.txt"
    none = call(env, "glob", pattern="*.txt")
    assert not none.is_error and "No files found" in none.output and "**/*.txt" in none.output


def test_glob_caps_results(env: ToolEnv, ws: Path) -> None:
    for i in range(GLOB_MAX_RESULTS + 5):
        (ws / f"f{i}.txt").write_text("")
    out = call(env, "glob", pattern="*.txt")
    lines = out.output.split("\n")
    assert len([line for line in lines if line.endswith(".txt")]) == GLOB_MAX_RESULTS
    assert f"Showing the {GLOB_MAX_RESULTS} most recently modified of 1005" in out.output
    assert out.metadata == {"count": 1005, "truncated": True}


def test_glob_pattern_errors(env: ToolEnv) -> None:
    for pattern, message in [
        ("/etc/*", "relative"),
        ("../*", "'..'"),
        ("{a,b", "unclosed"),
        ("", "must not be empty"),
    ]:
        out = call(env, "glob", pattern=pattern)
        assert out.is_error and message in out.output, (pattern, out.output)


def test_glob_translation() -> None:
    def matches(pattern: str, path: str) -> bool:
        return GlobPattern(pattern).fullmatch(path)

    assert matches("**/*.py", "a.py") and matches("**/*.py", "x/y/a.py")
    assert not matches("*.py", "x/a.py")
    assert matches("a/**/b", "a/b") and matches("a/**/b", "a/x/y/b")
    assert matches("src/**", "src/x/y")
    assert matches("*.{ts,tsx}", "a.tsx") and not matches("*.{ts,tsx}", "a.js")
    assert matches("[!a]*", "bcd") and not matches("[!a]*", "abc")
    assert matches(r"\*.txt", "*.txt") and not matches(r"\*.txt", "a.txt")
    assert matches("a+b(c).txt", "a+b(c).txt")


# --- grep ------------------------------------------------------------------------------


def test_grep_results_include_and_skips(env: ToolEnv, ws: Path) -> None:
    (ws / "src").mkdir()
    (ws / "src" / "a.py").write_text("import os\ndef main():\n    return os.getcwd()\n")
    (ws / "src" / "b.txt").write_text("os is mentioned\r\nhere\r\n")
    (ws / "bin.dat").write_bytes(b"os\x00binary")
    (ws / ".git").mkdir()
    (ws / ".git" / "config").write_text("os\n")
    (ws / "node_modules").mkdir()
    (ws / "node_modules" / "m.js").write_text("os\n")
    out = call(env, "grep", pattern=r"\bos\b")
    assert out.output.split("\n") == [
        "src/a.py:1:import os",
        "src/a.py:3:    return os.getcwd()",
        "src/b.txt:1:os is mentioned",
    ]
    assert out.metadata == {"matches": 3, "files": 2, "truncated": False}
    assert call(env, "grep", pattern="os", include="*.py").output.count("\n") == 1
    assert (
        call(env, "grep", pattern="os", include="*.{txt,md}").output
        == "src/b.txt:1:os is mentioned"
    )
    assert call(env, "grep", pattern="^here$").output == "src/b.txt:2:here"
    assert call(env, "grep", pattern="main", path="src/a.py").output == "src/a.py:2:def main():"
    assert (
        call(env, "grep", pattern="os", path="src", include="b.*").output
        == "src/b.txt:1:os is mentioned"
    )
    assert call(env, "grep", pattern="zzz").output == "No matches found."
    out = call(env, "grep", pattern="(unclosed")
    assert out.is_error and "Invalid regular expression" in out.output
    out = call(env, "grep", pattern="x", path="nope")
    assert out.is_error and "not found" in out.output


def test_grep_is_line_by_line_for_every_kind_of_pattern(env: ToolEnv, ws: Path) -> None:
    (ws / "a.txt").write_text("foo\nbar foo\nfoo bar\nxfoo\n")
    # Negative lookahead at the end of a line must not see the next line's text.
    assert call(env, "grep", pattern=r"foo(?!\s)").output.split("\n") == [
        "a.txt:1:foo",
        "a.txt:2:bar foo",
        "a.txt:4:xfoo",
    ]
    assert call(env, "grep", pattern=r"(?<!x)foo$").output.split("\n") == [
        "a.txt:1:foo",
        "a.txt:2:bar foo",
    ]
    assert call(env, "grep", pattern=r"\Afoo").output.split("\n") == [
        "a.txt:1:foo",
        "a.txt:3:foo bar",
    ]
    # A match spanning lines is not a match.
    assert call(env, "grep", pattern=r"foo\nbar").output == "No matches found."
    assert call(env, "grep", pattern=r"(?s)bar.*xfoo").output == "No matches found."
    # An empty-matching pattern matches every line, and no phantom line after the last newline.
    assert call(env, "grep", pattern="z*").metadata["matches"] == 4  # type: ignore[index]


def test_grep_caps_matches_and_long_lines(env: ToolEnv, ws: Path) -> None:
    (ws / "many.txt").write_text("hit\n" * (GREP_MAX_MATCHES + 10) + "hit" + "x" * 1000 + "\n")
    out = call(env, "grep", pattern="hit")
    lines = out.output.split("\n")
    assert lines[GREP_MAX_MATCHES - 1] == f"many.txt:{GREP_MAX_MATCHES}:hit"
    assert f"Stopped at {GREP_MAX_MATCHES} matches" in out.output
    assert out.metadata == {"matches": GREP_MAX_MATCHES, "files": 1, "truncated": True}
    (ws / "many.txt").write_text("hit" + "x" * 1000 + "\n")
    out = call(env, "grep", pattern="hit")
    assert out.output.endswith(" [line truncated]") and len(out.output) < 500


def test_grep_on_a_large_tree_runs_off_the_event_loop(env: ToolEnv, ws: Path) -> None:
    """Correct results over 1,000 files, and the event loop keeps turning meanwhile
    (speed itself is measured in bench/)."""
    body = "".join(
        f"    value_{i} = compute(alpha, beta, gamma, {i})\n" for i in range(100)
    ).encode()
    for d in range(20):
        sub = ws / f"pkg{d:02d}"
        sub.mkdir()
        for f in range(50):
            data = body + (b"needle_here = 1\n" if (d * 50 + f) % 100 == 0 else b"")
            (sub / f"m{f:02d}.py").write_bytes(data)

    async def scenario() -> tuple[ToolOutput, int]:
        ticks = 0
        done = False

        async def heartbeat() -> None:
            nonlocal ticks
            while not done:
                await asyncio.sleep(0)
                ticks += 1

        beat = asyncio.create_task(heartbeat())
        out = await run_builtin_tool("grep", {"pattern": r"needle_\w+ = 1"}, env, call_id="g")
        done = True
        await beat
        return out, ticks

    out, ticks = run(scenario())
    assert out.metadata == {"matches": 10, "files": 10, "truncated": False}
    # A grep running on the loop would finish before the heartbeat ever ran.
    assert ticks > 0


def test_grep_and_glob_cancel_promptly(env: ToolEnv, ws: Path) -> None:
    for d in range(20):
        sub = ws / f"d{d}"
        sub.mkdir()
        for f in range(50):
            (sub / f"f{f}.txt").write_text("text\n" * 200)

    async def scenario(name: str, args: dict[str, Any]) -> None:
        task = asyncio.create_task(run_builtin_tool(name, args, env, call_id="c"))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(scenario("grep", {"pattern": "nothing here"}))
    run(scenario("glob", {"pattern": "**/*"}))


def test_grep_keeps_line_by_line_meaning_with_the_linear_engine(env: ToolEnv, ws: Path) -> None:
    """Every pattern RE2 takes means what it meant with Python's re, line by line."""
    (ws / "a.txt").write_text("foo\nbar foo\nfoo bar\nxfoo\n")
    assert call(env, "grep", pattern=r"foo\Z").output.split("\n") == [
        "a.txt:1:foo",
        "a.txt:2:bar foo",
        "a.txt:4:xfoo",
    ]
    assert call(env, "grep", pattern=r"foo\z").output == call(env, "grep", pattern="foo$").output
    assert call(env, "grep", pattern=r"^\Afoo").output.split("\n") == [
        "a.txt:1:foo",
        "a.txt:3:foo bar",
    ]
    # An escaped backslash before A is a literal, not the line start.
    (ws / "b.txt").write_text("x\\Ay\n")
    assert call(env, "grep", pattern=r"x\\A", path="b.txt").output == "b.txt:1:x\\Ay"
    assert call(env, "grep", pattern=r"[\\A]y", path="b.txt").output == "b.txt:1:x\\Ay"
    # Nothing matches across a line break, \C (any byte) included.
    assert call(env, "grep", pattern=r"foo\C+bar", path="a.txt").output == "a.txt:3:foo bar"
    assert call(env, "grep", pattern=r"[^z]+xfoo", path="a.txt").output == "No matches found."
    # CRLF files: $ matches before the CR; invalid UTF-8 reads as U+FFFD, as before.
    (ws / "c.txt").write_bytes(b"caf\xe9 au lait\r\nend\r\n")
    assert call(env, "grep", pattern="lait$").output == "c.txt:1:caf\ufffd au lait"
    assert call(env, "grep", pattern="caf. au").output == "c.txt:1:caf\ufffd au lait"
    # RE2's own extras are accepted; a pattern neither engine takes is a tool error.
    assert call(env, "grep", pattern=r"\pL+ bar").output == "a.txt:3:foo bar"
    out = call(env, "grep", pattern="(?<=")
    assert out.is_error and "Invalid regular expression" in out.output
    out = call(env, "grep", pattern="a" * 10_001)
    assert out.is_error and "at most 10000" in out.output


def test_fallback_patterns_match_like_python(env: ToolEnv, ws: Path) -> None:
    """Backreferences and lookaround run with Python's re (in a child process)."""
    (ws / "a.txt").write_text("abab\nabba\naa bb\n")
    assert call(env, "grep", pattern=r"(ab)\1").output == "a.txt:1:abab"
    assert call(env, "grep", pattern=r"(\w)\1").output.split("\n") == [
        "a.txt:2:abba",
        "a.txt:3:aa bb",
    ]
    assert call(env, "grep", pattern=r"a(?=b)", include="*.txt").metadata == {
        "matches": 2,
        "files": 1,
        "truncated": False,
    }
    out = call(env, "grep", pattern=r"(a)\1", path="missing")
    assert out.is_error and "not found" in out.output


def test_search_time_budget_ends_glob_and_grep_with_a_note(ws: Path, tmp_path: Path) -> None:
    for d in range(3):
        (ws / f"d{d}").mkdir()
        (ws / f"d{d}" / "f.txt").write_text("needle\n")
    spent = ToolEnv(workspace_root=ws, spill_dir=tmp_path / "spill", search_timeout_s=1e-9)
    for name, args in [("grep", {"pattern": "needle"}), ("glob", {"pattern": "**/*.txt"})]:
        out = call(spent, name, **args)
        assert not out.is_error
        assert f"{name} stopped when its time budget of 1e-09 s ran out" in out.output
        assert out.metadata is not None and out.metadata["timedOut"] is True
    roomy = ToolEnv(workspace_root=ws, spill_dir=tmp_path / "spill", search_timeout_s=30)
    out = call(roomy, "grep", pattern="needle")
    assert out.metadata == {"matches": 3, "files": 3, "truncated": False}


def test_search_timeout_option(tmp_path: Path) -> None:
    from agentd.config import load_config

    path = tmp_path / "c.toml"
    path.write_text("search_timeout = 2.5\n")
    assert load_config({}, path=path).search_timeout_s == 2.5
    for bad in ("0", "-1", '"soon"', "99999"):
        path.write_text(f"search_timeout = {bad}\n")
        config = load_config({}, path=path)
        assert config.search_timeout_s == 30.0
        assert any("search_timeout" in problem for problem in config.problems), bad


def test_walk_depth_is_bounded_with_a_note(env: ToolEnv, ws: Path) -> None:
    deep = ws
    for _ in range(130):
        deep = deep / "d"
        os.mkdir(deep)
    (deep / "f.txt").write_text("needle\n")
    (ws / "top.txt").write_text("needle\n")
    out = call(env, "grep", pattern="needle")
    assert out.output.startswith("top.txt:1:needle\n\n")
    assert "1 directories deeper than 128 levels were not searched" in out.output


# --- write_file ------------------------------------------------------------------------


def test_write_file_creates_dirs_and_reports(env: ToolEnv, ws: Path) -> None:
    out = call(env, "write_file", path="a/b/c.txt", content="héllo\n")
    assert not out.is_error
    assert out.output == "Created a/b/c.txt (7 bytes)."
    assert out.title == "a/b/c.txt"
    assert out.metadata is not None and out.metadata["created"] is True
    assert "+héllo" in out.metadata["diff"]
    assert (ws / "a/b/c.txt").read_text() == "héllo\n"
    mode = stat.S_IMODE(os.stat(ws / "a/b/c.txt").st_mode)
    assert mode == 0o666 & ~_umask()


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def test_write_file_is_atomic_and_keeps_mode(env: ToolEnv, ws: Path) -> None:
    target = ws / "script.sh"
    target.write_text("old\n")
    os.chmod(target, 0o751)
    before = os.stat(target)
    with open(target) as reader:
        out = call(env, "write_file", path="script.sh", content="new\n")
        # The old file was replaced by a rename, not rewritten in place.
        assert reader.read() == "old\n"
    assert not out.is_error and out.output == "Wrote script.sh (4 bytes)."
    assert out.metadata is not None and out.metadata["created"] is False
    assert "-old\n+new\n" in out.metadata["diff"]
    after = os.stat(target)
    assert after.st_ino != before.st_ino
    assert stat.S_IMODE(after.st_mode) == 0o751
    assert target.read_text() == "new\n"
    assert sorted(os.listdir(ws)) == ["script.sh"]  # no temp file left behind


def test_write_file_errors_leave_nothing_behind(env: ToolEnv, ws: Path) -> None:
    (ws / "dir").mkdir()
    (ws / "file").write_text("x")
    out = call(env, "write_file", path="dir", content="x")
    assert out.is_error and "is a directory" in out.output
    out = call(env, "write_file", path="file/child.txt", content="x")
    assert out.is_error and "not a directory" in out.output
    out = call(env, "write_file", path=".", content="x")
    assert out.is_error and "workspace root" in out.output
    assert sorted(os.listdir(ws)) == ["dir", "file"]
    assert os.listdir(ws / "dir") == []


def test_write_file_refuses_lone_surrogates(env: ToolEnv, ws: Path) -> None:
    out = call(env, "write_file", path="s.txt", content="ok \ud800")
    assert out.is_error and "lone surrogate at index 3" in out.output
    assert not (ws / "s.txt").exists()


def test_write_through_symlink_inside_writes_the_target(env: ToolEnv, ws: Path) -> None:
    (ws / "real.txt").write_text("a")
    (ws / "link.txt").symlink_to("real.txt")
    out = call(env, "write_file", path="link.txt", content="b")
    assert not out.is_error and out.title == "real.txt"
    assert (ws / "real.txt").read_text() == "b"
    assert (ws / "link.txt").is_symlink()


# --- edit_file -------------------------------------------------------------------------


def test_edit_file_replaces_once_with_diff(env: ToolEnv, ws: Path) -> None:
    (ws / "m.py").write_text("def f():\n    return 1\n\ndef g():\n    return 2\n")
    out = call(env, "edit_file", path="m.py", oldString="return 1", newString="return 10")
    assert not out.is_error
    assert out.output == "Edited m.py: replaced 1 occurrence."
    assert out.title == "m.py"
    assert (ws / "m.py").read_text() == "def f():\n    return 10\n\ndef g():\n    return 2\n"
    assert out.metadata is not None and out.metadata["replacements"] == 1
    diff = out.metadata["diff"]
    assert diff.startswith("--- a/m.py\n+++ b/m.py\n@@")
    assert "-    return 1\n+    return 10\n" in diff
    assert sorted(os.listdir(ws)) == ["m.py"]


def test_edit_file_ambiguity_and_replace_all(env: ToolEnv, ws: Path) -> None:
    (ws / "m.txt").write_text("a = 1\nb = 1\nc = 1\n")
    out = call(env, "edit_file", path="m.txt", oldString="= 1", newString="= 2")
    assert out.is_error
    assert "occurs 3 times in m.txt" in out.output and "replaceAll" in out.output
    assert (ws / "m.txt").read_text() == "a = 1\nb = 1\nc = 1\n"
    out = call(env, "edit_file", path="m.txt", oldString="= 1", newString="= 2", replaceAll=True)
    assert not out.is_error and out.output == "Edited m.txt: replaced 3 occurrences."
    assert (ws / "m.txt").read_text() == "a = 2\nb = 2\nc = 2\n"


def test_edit_file_errors(env: ToolEnv, ws: Path) -> None:
    (ws / "m.txt").write_text("hello\n")
    (ws / "latin1.txt").write_bytes(b"caf\xe9\n")
    cases = [
        ({"path": "m.txt", "oldString": "absent", "newString": "x"}, "was not found in m.txt"),
        ({"path": "m.txt", "oldString": "", "newString": "x"}, "must not be empty"),
        ({"path": "m.txt", "oldString": "hello", "newString": "hello"}, "identical"),
        ({"path": "nope.txt", "oldString": "a", "newString": "b"}, "File not found: nope.txt"),
        ({"path": "latin1.txt", "oldString": "caf", "newString": "x"}, "not valid UTF-8"),
    ]
    for args, message in cases:
        out = call(env, "edit_file", **args)
        assert out.is_error and message in out.output, (args, out.output)
    assert (ws / "m.txt").read_text() == "hello\n"
    assert (ws / "latin1.txt").read_bytes() == b"caf\xe9\n"


def test_edit_file_matches_lf_text_in_crlf_file(env: ToolEnv, ws: Path) -> None:
    (ws / "w.txt").write_bytes(b"one\r\ntwo\r\nthree\r\n")
    out = call(env, "edit_file", path="w.txt", oldString="one\ntwo", newString="1\n2")
    assert not out.is_error
    assert (ws / "w.txt").read_bytes() == b"1\r\n2\r\nthree\r\n"


# --- truncation ------------------------------------------------------------------------


def test_truncate_output_short_text_is_unchanged(env: ToolEnv) -> None:
    assert truncate_output("small\n", env, call_id="c") == "small\n"
    assert not env.spill_dir.exists()


def test_truncate_output_bytes_spill_file_and_mode(env: ToolEnv) -> None:
    text = "".join(f"row {i:06d} " + "x" * 80 + "\n" for i in range(2000))
    out = truncate_output(text, env, call_id="call_big", max_bytes=10_000, max_lines=2000)
    spill = env.spill_dir / "call_big.txt"
    assert spill.read_text() == text
    assert stat.S_IMODE(os.stat(spill).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(env.spill_dir).st_mode) == 0o700
    total = len(text.encode())
    assert out.endswith(f"\n[output truncated: {total} bytes total; full output saved to {spill}]")
    assert out.startswith("row 000000 ")
    assert "row 001999 " in out  # the tail is kept
    assert "bytes omitted ...]" in out
    assert len(out.encode()) <= 10_000
    # Truncating the result again changes nothing and keeps the saved full output.
    assert truncate_output(out, env, call_id="call_big", max_bytes=10_000) == out
    assert spill.read_text() == text


def test_truncate_output_lines_and_single_huge_line(env: ToolEnv) -> None:
    text = "\n".join(str(i) for i in range(5000))
    out = truncate_output(text, env, call_id="lines", max_lines=100)
    assert out.count("\n") + 1 <= 100
    assert out.startswith("0\n1\n2\n") and "\n4999\n[output truncated" in out
    huge = "a" * 30_000 + "b" * 30_000
    out = truncate_output(huge, env, call_id="huge")
    assert len(out.encode()) <= 50_000
    assert out.startswith("aaaa") and "bbbb\n[output truncated: 60000 bytes total" in out
    assert (env.spill_dir / "huge.txt").read_text() == huge


def test_truncate_output_sanitises_call_id(env: ToolEnv, tmp_path: Path) -> None:
    out = truncate_output("x" * 60_000, env, call_id="../../evil/id")
    files = os.listdir(env.spill_dir)
    assert files == ["_.._evil_id.txt"]
    assert str(env.spill_dir / files[0]) in out
    assert not (tmp_path / "evil").exists()


def test_truncate_output_when_spill_cannot_be_saved(tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")
    env = ToolEnv(workspace_root=tmp_path, spill_dir=blocker / "spill", process_env={})
    out = truncate_output("z\n" * 5000, env, call_id="c", max_lines=100)
    assert out.count("\n") + 1 <= 100
    assert out.endswith("bytes total; the full output could not be saved (Not a directory)]")


def test_tool_output_is_truncated_with_spill(env: ToolEnv, ws: Path) -> None:
    (ws / "big.txt").write_text(("needle " + "y" * 100 + "\n") * 499)
    out = call(env, "grep", pattern="needle", call_id="grep_1")
    assert "[output truncated:" in out.output
    spill = env.spill_dir / "grep_1.txt"
    assert spill.read_text().count("big.txt:") == 499
    assert len(out.output.encode()) <= 50_000


# --- bash ------------------------------------------------------------------------------


def test_bash_output_exit_code_and_title(env: ToolEnv, ws: Path) -> None:
    out = call(env, "bash", command="echo out; echo err >&2; pwd; exit 3")
    assert not out.is_error
    assert out.output == f"out\nerr\n{os.path.realpath(ws)}\n[exit code 3]"
    assert out.metadata == {"exitCode": 3, "timedOut": False}
    assert out.title == "echo out; echo err >&2; pwd; exit 3"
    ok = call(env, "bash", command="true")
    assert ok.output == "(no output)" and ok.metadata == {"exitCode": 0, "timedOut": False}
    long = call(env, "bash", command="echo " + "word " * 40)
    assert long.title is not None and len(long.title) == 60


def test_bash_decodes_invalid_utf8_and_has_empty_stdin(env: ToolEnv) -> None:
    out = call(env, "bash", command=r"printf 'a\xffb\n'; cat; echo done")
    assert out.output == "a\ufffdb\ndone"


def test_bash_environment_drops_secrets_and_adds_process_env(
    env: ToolEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = {
        "OPENAI_API_KEY": "sk-1",
        "ANTHROPIC_API_KEY": "sk-2",
        "GITHUB_TOKEN": "ghp",
        "AWS_SECRET": "aws",
        "DB_PASSWORD_FILE": "pw",
        "my_service_api_key": "lower",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HARMLESS_SETTING", "kept")
    out = call(env, "bash", command="env")
    names = {line.split("=", 1)[0] for line in out.output.split("\n") if "=" in line}
    assert not names & set(secrets)
    assert not [n for n in names if n.endswith("_API_KEY")]
    assert "HARMLESS_SETTING=kept" in out.output
    assert "AGENTD_SESSION_SCOPE_KEY=scope-123" in out.output


def test_bash_timeout_kills_the_group(env: ToolEnv, tmp_path: Path) -> None:
    pid_file = tmp_path / "pids"
    command = (
        f"sleep 1000 & echo $! > {pid_file}; "
        f"sh -c 'sleep 1000 >/dev/null 2>&1 & echo $!' >> {pid_file}; "
        "echo started; sleep 1000"
    )
    start = time.monotonic()
    out = call(env, "bash", command=command, timeoutMs=1000)
    elapsed = time.monotonic() - start
    assert out.is_error
    assert out.output == "started\n[command timed out after 1000 ms; its processes were killed]"
    assert out.metadata is not None and out.metadata["timedOut"] is True
    assert elapsed < 1.0 + bash_module.KILL_GRACE_S
    pids = [int(p) for p in pid_file.read_text().split()]
    assert len(pids) == 2
    assert not [pid for pid in pids if process_running(pid)]


def test_bash_cancellation_kills_children_and_grandchildren(env: ToolEnv, tmp_path: Path) -> None:
    fifo = tmp_path / "ready"
    os.mkfifo(fifo)
    # Two background sleeps (children of bash) and one whose parent exits at once (an
    # orphaned grandchild that is still in bash's process group).
    command = (
        "sleep 1000 & a=$!; sleep 1000 & b=$!; "
        "g=$(sh -c 'sleep 1000 >/dev/null 2>&1 & echo $!'); "
        f'echo "$a $b $g" > {fifo}; wait'
    )

    async def scenario() -> tuple[list[int], list[int], float]:
        task = asyncio.create_task(run_builtin_tool("bash", {"command": command}, env, call_id="c"))
        reader = asyncio.create_task(asyncio.to_thread(fifo.read_text))
        done, _ = await asyncio.wait({task, reader}, return_when=asyncio.FIRST_COMPLETED)
        if reader not in done:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # unblock the reader thread
            pytest.fail(f"bash ended before reporting its children: {task.result()}")
        pids = [int(p) for p in reader.result().split()]
        alive_before = [pid for pid in pids if process_running(pid)]
        start = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return pids, alive_before, time.monotonic() - start

    pids, alive_before, elapsed = run(scenario())
    assert len(pids) == 3 and alive_before == pids
    assert not [pid for pid in pids if process_running(pid)]
    # sleep dies on SIGTERM, so no SIGKILL grace should be waited out (an orphaned
    # grandchild left as a zombie must not count as alive).
    assert elapsed < bash_module.KILL_GRACE_S


def test_bash_background_job_does_not_hold_the_call(env: ToolEnv) -> None:
    start = time.monotonic()
    out = call(env, "bash", command="sleep 1000 & echo $!")
    assert time.monotonic() - start < bash_module.KILL_GRACE_S
    assert not out.is_error
    assert not process_running(int(out.output))


def test_bash_large_output_streams_to_spill_file(env: ToolEnv) -> None:
    lines = 600_000  # 6.6 MB, over the in-memory cap
    out = call(env, "bash", command=f"seq -w {lines} | sed 's/^/row /'", call_id="bash_big")
    assert not out.is_error
    spill = env.spill_dir / "bash_big.txt"
    assert out.metadata is not None and out.metadata["outputPath"] == str(spill)
    size = os.path.getsize(spill)
    assert size == lines * len("row 000000\n") > bash_module.MEMORY_CAP_BYTES
    with open(spill) as f:
        assert f.readline() == "row 000001\n"
    assert stat.S_IMODE(os.stat(spill).st_mode) == 0o600
    assert out.output.startswith("row 000001\nrow 000002\n")
    assert (
        f"row {lines}\n[output truncated: {size} bytes total; full output saved to {spill}]"
        in out.output
    )
    assert len(out.output.encode()) <= 50_000


def test_bash_input_errors(env: ToolEnv) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"command": "  "}, "must not be empty"),
        ({"command": "true", "timeoutMs": 0}, "at least 1"),
        ({"command": "true", "timeoutMs": 600_001}, "at most 600000"),
    ]
    for args, message in cases:
        out = call(env, "bash", **args)
        assert out.is_error and message in out.output, out


def test_a_link_replaced_while_a_path_is_resolved_is_refused_clearly(
    ws: Path, env: ToolEnv
) -> None:
    """A second thread exchanges a directory and a symbolic link to it (renameat2) while
    read_file and write_file resolve a path through that name, thousands of times: each
    call reads and writes, or is refused saying the path changed; never a bare OS error
    (realpath reads a link it has just seen, and a directory in its place fails the read)."""
    import ctypes
    import threading

    (ws / "a").mkdir()
    (ws / "a" / "x.txt").write_text("x\n")
    os.symlink(ws / "a", ws / "a.link")
    exchange = ctypes.CDLL(None, use_errno=True).renameat2
    names = (str(ws / "a").encode(), str(ws / "a.link").encode())
    done = threading.Event()

    def swap() -> None:
        while not done.is_set():
            exchange(-100, names[0], -100, names[1], 2)  # AT_FDCWD, RENAME_EXCHANGE

    async def calls() -> list[ToolOutput]:
        # At least 1,500 calls, and on until the race was met (30,000 at most).
        outputs: list[ToolOutput] = []
        for i in range(30_000):
            if i >= 1500 and any("being resolved" in o.output for o in outputs[-2:]):
                break
            name = "read_file" if i % 2 else "write_file"
            args = {"path": "a/x.txt"} if i % 2 else {"path": "a/x.txt", "content": "x\n"}
            outputs.append(await run_builtin_tool(name, args, env, call_id="c"))
        return outputs

    swapper = threading.Thread(target=swap)
    swapper.start()
    try:
        outputs = run(calls())
    finally:
        done.set()
        swapper.join()
    # (Refusals from later steps, which open each directory without following a link,
    # say what they met; an OS error no step expected reads "<tool> failed: <strerror>".)
    bare = {o.output for o in outputs if o.is_error and " failed: " in o.output}
    assert not bare, bare
    assert any("changed while it was being resolved" in o.output for o in outputs)
    assert any(not o.is_error for o in outputs)
    assert any(o.is_error for o in outputs)  # (the race was run)
