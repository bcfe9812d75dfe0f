"""The search tools: glob and grep, over a confined walk of the workspace.

Confinement. The walk holds a descriptor of each directory on its way down and opens
every entry relative to it with O_NOFOLLOW (`dir_fd=`): a directory swapped for a symbolic
link mid-walk is not entered and a file swapped for one is not read, so whatever is listed
or read was reached from the workspace root without following a link. A symbolic link met
in the tree is followed only to a regular file inside the workspace, opened again from the
root the same way (`Workspace.open_file`). The walk skips `.git` and `node_modules`, never
enters a symlinked directory, and visits entries in name order so capped results are
stable. Files with more than one hard link are not searched.

Patterns (patterns.py). grep matches with RE2 in a worker thread: linear time, and the GIL
is released while it matches. A pattern only Python's `re` understands runs in a child
process (`agentd.tools.grep_child`) that is killed on abort or when the time budget runs
out. The event loop never waits on a match.

Time. A search has a budget (`ToolEnv.search_timeout_s`): when it is spent, the search
ends with what it found so far and a note saying so. Abort sets a stop flag that the walk
checks between files, or kills the child process.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import os
import re
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import attrs

from agentd.tools.patterns import GlobPattern, LinearLines, compile_grep
from agentd.tools.spec import ToolEnv, ToolError, ToolOutput
from agentd.tools.workspace import Workspace, is_within

SKIPPED_DIR_NAMES = frozenset({".git", "node_modules"})
GLOB_MAX_RESULTS = 1000
GREP_MAX_MATCHES = 500
GREP_MAX_LINE_CHARS = 400
GREP_MAX_FILE_BYTES = 16 * 1024 * 1024
BINARY_SNIFF_BYTES = 8192
# The walk holds one descriptor per level; deeper directories are left out (and counted).
MAX_WALK_DEPTH = 128
# How long after its budget a search may take to hand back what it found before it is
# abandoned (a thread: only a hung file system makes it that late) or killed (the child
# process, whose match may never end).
GRACE_S = 2.0
CHILD_GRACE_S = 0.5
_MAGIC = re.compile(r"[*?\[{\\]")
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

T = TypeVar("T")


async def glob(args: dict[str, Any], env: ToolEnv, call_id: str) -> ToolOutput:
    ws = Workspace(env.workspace_root)
    return await _in_thread(lambda limits: _glob(args, ws, limits), env.search_timeout_s)


async def grep(args: dict[str, Any], env: ToolEnv, call_id: str) -> ToolOutput:
    ws = Workspace(env.workspace_root)
    pattern: str = args["pattern"]
    matcher = await asyncio.to_thread(compile_grep, pattern)
    timeout_s = env.search_timeout_s
    if isinstance(matcher, LinearLines):
        found = await _in_thread(lambda limits: run_grep(args, ws, matcher, limits), timeout_s)
        return grep_output(pattern, found)
    return await _grep_in_child(args, ws, timeout_s)


class Stopped(Exception):
    """The awaiting task was cancelled; the worker gives up."""


class SearchLimits:
    """The stop flag (abort) and the time budget one search runs under."""

    def __init__(self, timeout_s: float, *, remaining_s: float | None = None) -> None:
        self.timeout_s = timeout_s
        self.deadline = time.monotonic() + (timeout_s if remaining_s is None else remaining_s)
        self.stop = threading.Event()
        self.timed_out = False
        self.too_deep = 0

    def spent(self) -> bool:
        """True once the budget is spent (and from then on); raises Stopped on abort."""
        if self.stop.is_set():
            raise Stopped
        if not self.timed_out and time.monotonic() >= self.deadline:
            self.timed_out = True
        return self.timed_out


def _notes(limits: SearchLimits, tool: str) -> list[str]:
    notes = []
    if limits.timed_out:
        notes.append(
            f"({tool} stopped when its time budget of {limits.timeout_s:g} s ran out; the "
            "results are incomplete. Search a narrower path, or use a simpler pattern.)"
        )
    if limits.too_deep:
        notes.append(
            f"({limits.too_deep} directories deeper than {MAX_WALK_DEPTH} levels were not "
            "searched.)"
        )
    return notes


async def _in_thread(fn: Callable[[SearchLimits], T], timeout_s: float) -> T:
    """Run fn(limits) in a worker thread; abort sets the stop flag, and a worker that has
    not handed back its partial result shortly after the budget is abandoned."""
    limits = SearchLimits(timeout_s)
    task = asyncio.ensure_future(asyncio.to_thread(fn, limits))
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout_s + GRACE_S)
    except asyncio.CancelledError:
        limits.stop.set()
        task.add_done_callback(_consume)
        raise
    if not done:
        limits.stop.set()
        task.add_done_callback(_consume)
        raise ToolError(
            f"The search did not finish within its time budget of {timeout_s:g} s (the file "
            "system may be slow); search a narrower path."
        )
    return task.result()


def _consume(task: asyncio.Future[Any]) -> None:
    """Collect an abandoned worker's outcome (Stopped, as a rule) so it is not logged."""
    if not task.cancelled():
        task.exception()


# --- the walk --------------------------------------------------------------------------


def walk_files(
    start_fd: int, limits: SearchLimits, *, max_depth: int | None = None
) -> Iterator[tuple[str, int, os.DirEntry[str]]]:
    """Yield (path relative to the start, fd of its directory, entry) for every entry
    below `start_fd` that is not a directory. The fd is valid until the next item is
    asked for; `start_fd` stays the caller's.

    Each directory is opened relative to its parent's descriptor with O_NOFOLLOW, so a
    directory that became a symlink is skipped, never followed. Stops early (without
    raising) when the budget is spent.
    """
    # Frames: [fd, relative path with a trailing '/', depth, names of subdirectories to
    # visit (None until listed)]. One open descriptor per level.
    stack: list[list[Any]] = [[start_fd, "", 1, None]]
    try:
        while stack:
            frame = stack[-1]
            fd, rel, depth, pending = frame
            if pending is None:
                if limits.spent():
                    return
                try:
                    with os.scandir(fd) as it:
                        entries = sorted(it, key=lambda e: e.name)
                except OSError:
                    entries = []
                subdirs: list[str] = []
                for entry in entries:
                    try:
                        is_dir = entry.is_dir(follow_symlinks=False)
                    except OSError:
                        continue
                    if not is_dir:
                        yield f"{rel}{entry.name}", fd, entry
                    elif entry.name in SKIPPED_DIR_NAMES:
                        continue
                    elif max_depth is not None and depth >= max_depth:
                        continue
                    elif depth >= MAX_WALK_DEPTH:
                        limits.too_deep += 1
                    else:
                        subdirs.append(entry.name)
                frame[3] = iter(subdirs)
                continue
            name = next(pending, None)
            if name is None:
                stack.pop()
                if fd != start_fd:
                    os.close(fd)
                continue
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError:
                continue  # gone, unreadable, or swapped for a symlink: not entered
            stack.append([child, f"{rel}{name}/", depth + 1, None])
    finally:
        for frame in stack:
            if frame[0] != start_fd:
                os.close(frame[0])


def _open_entry(
    ws: Workspace, dir_fd: int, entry: os.DirEntry[str], start: str, rel: str
) -> tuple[int, os.stat_result] | None:
    """Open a walked entry (`rel` below the real directory `start`) that is a regular,
    singly linked file, or a symlink to one inside the workspace; None for anything else
    or anything that changed meanwhile."""
    try:
        if entry.is_symlink():
            target = os.path.realpath(os.path.join(start, rel))
            if not is_within(target, ws.root):
                return None
            return ws.open_file(target, entry.name, action="search", check_fd_path=False)
        if not entry.is_file(follow_symlinks=False):
            return None
        fd = os.open(entry.name, _OPEN_FLAGS, dir_fd=dir_fd)
    except (OSError, ToolError):
        return None
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        return None
    # Hard-linked files may be the same file as one outside the workspace: not searched.
    if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
        os.close(fd)
        return None
    return fd, st


def _entry_mtime(ws: Workspace, entry: os.DirEntry[str], start: str, rel: str) -> float | None:
    """The mtime of a walked entry (`rel` below the real directory `start`) that is a
    regular file, or a symlink to one inside the workspace; else None."""
    try:
        if entry.is_symlink():
            target = os.path.realpath(os.path.join(start, rel))
            if not is_within(target, ws.root):
                return None
            st = ws.lstat(target, entry.name)
        else:
            st = entry.stat(follow_symlinks=False)
    except (OSError, ToolError):
        return None
    return st.st_mtime if stat.S_ISREG(st.st_mode) else None


def _join_display(prefix: str, rel: str) -> str:
    return rel if prefix == "." else f"{prefix}/{rel}"


def _open_search_root(args: dict[str, Any], ws: Workspace) -> tuple[str, str, os.stat_result]:
    """(real path, display, lstat) of the `path` argument (default: the workspace root)."""
    path: str = args.get("path", ".")
    real = ws.resolve(path)
    display = ws.relative(real)
    try:
        st = ws.lstat(real, display)
    except FileNotFoundError:
        raise ToolError(f"Path not found: {path}") from None
    except ToolError as exc:
        if exc.message.startswith("File not found"):
            raise ToolError(f"Path not found: {path}") from None
        raise
    return real, display, st


# --- glob ------------------------------------------------------------------------------


def _glob(args: dict[str, Any], ws: Workspace, limits: SearchLimits) -> ToolOutput:
    ws.check_root()
    pattern: str = args["pattern"]
    title = pattern
    while pattern.startswith("./"):
        pattern = pattern[2:]
    matcher = GlobPattern(pattern)
    if pattern.startswith("/") or os.path.isabs(pattern):
        raise ToolError(
            "The pattern must be relative to the search directory; use the path parameter "
            "to choose where to search."
        )
    segments = pattern.split("/")
    if ".." in segments:
        raise ToolError("The pattern must not contain '..'; use the path parameter instead.")
    base, base_display, st = _open_search_root(args, ws)
    if not stat.S_ISDIR(st.st_mode):
        raise ToolError(f"{base_display} is not a directory.")

    # Walk only below the literal leading directories of the pattern, and only as deep as
    # the pattern can reach when it has no `**`.
    literal: list[str] = []
    for seg in segments[:-1]:
        if _MAGIC.search(seg) or seg in ("", "."):
            break
        literal.append(seg)
    max_depth = None
    if "**" not in pattern and "{" not in pattern:
        max_depth = len(segments) - len(literal)
    prefix = "/".join(literal) + "/" if literal else ""
    start_real = os.path.join(base, *literal)

    matches: list[tuple[float, str]] = []
    start_fd = ws.open_dir(base, base_display)
    try:
        for seg in literal:
            # Through a symlink or missing: the walk would not go there either.
            start_fd = _descend(start_fd, seg)
            if start_fd < 0:
                break
        if start_fd >= 0:
            for rel, _fd, entry in walk_files(start_fd, limits, max_depth=max_depth):
                full_rel = prefix + rel
                if not matcher.fullmatch(full_rel):
                    continue
                mtime = _entry_mtime(ws, entry, start_real, rel)
                if mtime is not None:
                    matches.append((mtime, _join_display(base_display, full_rel)))
    finally:
        if start_fd >= 0:
            os.close(start_fd)
    total = len(matches)
    notes = _notes(limits, "glob")
    if total == 0:
        hint = ""
        if "/" not in pattern and "**" not in pattern:
            hint = f" (the pattern matches only directly in {base_display}; use **/{pattern} to search subdirectories)"
        output = f"No files found matching {pattern}{hint}."
        if notes:
            output += "\n\n" + "\n".join(notes)
        metadata: dict[str, Any] = {"count": 0}
        if limits.timed_out:
            metadata["timedOut"] = True
        return ToolOutput(output=output, title=title, metadata=metadata)
    newest = heapq.nlargest(GLOB_MAX_RESULTS, matches, key=lambda m: (m[0], m[1]))
    lines = [path for _, path in newest]
    if total > len(newest):
        lines.append(
            f"\n(Showing the {len(newest)} most recently modified of {total} matching files. "
            "Use a more specific pattern or path.)"
        )
    if notes:
        lines.append("\n" + "\n".join(notes))
    metadata = {"count": total, "truncated": total > len(newest)}
    if limits.timed_out:
        metadata["timedOut"] = True
    return ToolOutput(output="\n".join(lines), title=title, metadata=metadata)


def _descend(fd: int, name: str) -> int:
    """The directory `name` below `fd`, not through a symlink; closes `fd`; -1 if none."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=fd)
    except OSError:
        return -1
    finally:
        os.close(fd)


# --- grep ------------------------------------------------------------------------------


class LineMatcher(Protocol):
    def matching_lines(self, data: bytes) -> Iterator[tuple[int, str]]: ...


@attrs.define
class GrepFound:
    """What one grep found: the output lines and the counts behind the notes."""

    limits: SearchLimits
    # Matched with Python's re (a pattern RE2 does not take), which may backtrack.
    backtracking: bool = False
    lines: list[str] = attrs.Factory(list)
    matches: int = 0
    files_with_matches: int = 0
    skipped_large: int = 0
    capped: bool = False


def run_grep(
    args: dict[str, Any],
    ws: Workspace,
    matcher: LineMatcher,
    limits: SearchLimits,
    on_line: Callable[[str, str], None] | None = None,
) -> GrepFound:
    """Search the files under `path` (or the one file) for lines `matcher` matches.

    `on_line(display, line)` sees each output line as it is found (the child process
    streams them, so a kill keeps what was found)."""
    ws.check_root()
    include: str | None = args.get("include")
    include_matcher = GlobPattern(include, param="include") if include else None
    include_on_path = include is not None and "/" in include
    base, base_display, st = _open_search_root(args, ws)
    found = GrepFound(limits)

    def search_fd(fd: int, size: int, display: str) -> None:
        before = found.matches
        for number, line in _matching_lines(fd, size, matcher, found):
            if found.matches >= GREP_MAX_MATCHES:
                found.capped = True  # there is at least one match more than is shown
                break
            if len(line) > GREP_MAX_LINE_CHARS:
                line = line[:GREP_MAX_LINE_CHARS] + " [line truncated]"
            text = f"{display}:{number}:{line}"
            found.lines.append(text)
            found.matches += 1
            if on_line is not None:
                on_line(display, text)
        if found.matches > before:
            found.files_with_matches += 1

    if not stat.S_ISDIR(st.st_mode):
        fd, st = ws.open_file(base, base_display, action="search")
        search_fd(fd, st.st_size, base_display)
        return found
    start_fd = ws.open_dir(base, base_display)
    try:
        for rel, dir_fd, entry in walk_files(start_fd, limits):
            if limits.spent():
                break
            if include_matcher is not None:
                subject = rel if include_on_path else entry.name
                if not include_matcher.fullmatch(subject):
                    continue
            opened = _open_entry(ws, dir_fd, entry, base, rel)
            if opened is None:
                continue
            search_fd(opened[0], opened[1].st_size, _join_display(base_display, rel))
            if found.capped:
                break
    finally:
        os.close(start_fd)
    return found


def _matching_lines(
    fd: int, size: int, matcher: LineMatcher, found: GrepFound
) -> Iterator[tuple[int, str]]:
    data = _read_text(fd, size, found)
    return matcher.matching_lines(data) if data is not None else iter(())


def _read_text(fd: int, size: int, found: GrepFound) -> bytes | None:
    """The opened file's text for matching (fd is closed): UTF-8 with LF line ends and no
    phantom empty line after a final newline; None for binary, oversized or unreadable."""
    try:
        if size > GREP_MAX_FILE_BYTES:
            found.skipped_large += 1
            return None
        # A short read of a regular file is its end: one read() for a file whose size
        # did not change since fstat, more only if it grew meanwhile.
        chunks = []
        remaining = GREP_MAX_FILE_BYTES + 1
        want = min(size + 1, remaining)
        while remaining > 0:
            chunk = os.read(fd, want)
            chunks.append(chunk)
            remaining -= len(chunk)
            if len(chunk) < want:
                break
            want = min(remaining, 1 << 20)
        if remaining <= 0:
            found.skipped_large += 1
            return None
        data = b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)
    if not data or b"\0" in data[:BINARY_SNIFF_BYTES]:
        return None
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")
    if data.endswith(b"\n"):
        data = data[:-1]
    if not data.isascii():
        # RE2 reads UTF-8: an invalid byte becomes U+FFFD, as Python's decoding makes it.
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            data = data.decode("utf-8", "replace").encode("utf-8")
    return data


def grep_output(pattern: str, found: GrepFound) -> ToolOutput:
    metadata: dict[str, Any] = {
        "matches": found.matches,
        "files": found.files_with_matches,
        "truncated": found.capped,
    }
    if found.limits.timed_out:
        metadata["timedOut"] = True
    output = "\n".join(found.lines) if found.lines else "No matches found."
    notes = []
    if found.capped:
        notes.append(
            f"(Stopped at {GREP_MAX_MATCHES} matches. Use a more specific pattern, path or include.)"
        )
    if found.skipped_large:
        notes.append(
            f"({found.skipped_large} files larger than {GREP_MAX_FILE_BYTES // (1024 * 1024)} MB "
            "were not searched.)"
        )
    notes += _notes(found.limits, "grep")
    if found.limits.timed_out and found.backtracking:
        notes.append(
            "(This pattern needs Python's re (lookaround, backreferences or other constructs "
            "RE2 lacks), which can take exponential time on some lines; without those "
            "constructs grep runs in time linear in the text.)"
        )
    if notes:
        output += "\n\n" + "\n".join(notes)
    return ToolOutput(output=output, title=pattern, metadata=metadata)


# --- grep with Python's re, in a child process ------------------------------------------

# -I: no PYTHONPATH, user site or current directory on sys.path (the workspace must not
# be able to shadow agentd); the child imports the same agentd as this process.
_CHILD_BOOT = (
    "import sys; sys.path.insert(0, sys.argv[1]); from agentd.tools.grep_child import main; main()"
)
_IMPORT_ROOT = str(Path(__file__).resolve().parents[2])


async def _grep_in_child(args: dict[str, Any], ws: Workspace, timeout_s: float) -> ToolOutput:
    """grep with Python's `re` in a child process: killed on abort, or when the budget is
    spent and it has not ended by itself (a match that backtracks for ever). Matches it
    streamed before that are kept."""
    # The child stops by itself at the same wall-clock deadline when it can (between
    # files); it starts later than this call, so it gets the deadline, not the budget.
    request = json.dumps(
        {
            "args": args,
            "root": ws.given_root,
            "timeoutS": timeout_s,
            "deadline": time.time() + timeout_s,
        }
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-I",
        "-c",
        _CHILD_BOOT,
        _IMPORT_ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    found = GrepFound(SearchLimits(timeout_s), backtracking=True)
    files: set[str] = set()
    outcome: dict[str, Any] | None = None
    try:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(request.encode("utf-8"))
            await proc.stdin.drain()
            proc.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass  # it died at once; its exit code says so below
        try:
            async with asyncio.timeout(timeout_s + CHILD_GRACE_S):
                async for raw in proc.stdout:
                    message = json.loads(raw)
                    if "line" in message:
                        found.lines.append(message["line"])
                        files.add(message["file"])
                    else:
                        outcome = message
                await proc.wait()
        except TimeoutError:
            found.limits.timed_out = True
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    found.matches = len(found.lines)
    found.files_with_matches = len(files)
    if outcome is not None and "error" in outcome:
        raise ToolError(outcome["error"])
    if outcome is not None:
        done = outcome["done"]
        found.capped = done["capped"]
        found.skipped_large = done["skippedLarge"]
        found.limits.timed_out = done["timedOut"]
        found.limits.too_deep = done["tooDeep"]
    elif not found.limits.timed_out:
        raise ToolError(f"grep failed: its search process ended with code {proc.returncode}.")
    return grep_output(args["pattern"], found)
