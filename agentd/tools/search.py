"""The search tools: glob and grep, over a confined walk of the workspace.

Both run in a worker thread with a stop flag that cancellation sets, so a cancelled search
stops at the next file instead of walking the rest of the tree. The walk never follows a
symlinked directory (that is how it stays inside the workspace and out of cycles), skips
`.git` and `node_modules`, and visits entries in name order so capped results are stable.
grep opens each file with O_NOFOLLOW and re-checks it with fstat; unlike read_file it does
not also ask the OS for the opened file's path, which cost more than the search itself.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import os
import re
import stat
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from agentd.tools.spec import ToolEnv, ToolError, ToolOutput
from agentd.tools.workspace import Workspace, is_within

SKIPPED_DIR_NAMES = frozenset({".git", "node_modules"})
GLOB_MAX_RESULTS = 1000
GREP_MAX_MATCHES = 500
GREP_MAX_LINE_CHARS = 400
GREP_MAX_FILE_BYTES = 16 * 1024 * 1024
BINARY_SNIFF_BYTES = 8192
_MAGIC = re.compile(r"[*?\[{\\]")
# Patterns whose per-line meaning can differ from their meaning on the whole file (lookaround
# sees across the line break; \A and \Z mean file boundaries): grep checks these line by line.
_LINE_SENSITIVE = re.compile(r"\(\?<?[=!]|\\[AZ]")
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

T = TypeVar("T")


async def glob(args: dict[str, Any], env: ToolEnv, call_id: str) -> ToolOutput:
    return await _run_stoppable(_glob, args, Workspace(env.workspace_root))


async def grep(args: dict[str, Any], env: ToolEnv, call_id: str) -> ToolOutput:
    return await _run_stoppable(_grep, args, Workspace(env.workspace_root))


async def _run_stoppable(
    fn: Callable[[dict[str, Any], Workspace, threading.Event], T],
    args: dict[str, Any],
    ws: Workspace,
) -> T:
    stop = threading.Event()
    try:
        return await asyncio.to_thread(fn, args, ws, stop)
    except asyncio.CancelledError:
        stop.set()
        raise


class Stopped(Exception):
    """The awaiting task was cancelled; the worker thread gives up."""


# --- glob patterns ---------------------------------------------------------------------


def glob_to_regex(pattern: str) -> str:
    """Translate a glob to a regex matched against a whole '/'-separated relative path.

    `*` and `?` stay within one path segment, a `**` segment matches any number of
    directories (including none), `[...]` is a character class (`[!...]` negates), `{a,b}`
    is an alternation, and a backslash escapes the next character.
    """
    out: list[str] = []
    i, n = 0, len(pattern)
    depth = 0
    while i < n:
        c = pattern[i]
        if c == "*":
            j = i
            while j < n and pattern[j] == "*":
                j += 1
            whole_segment = (i == 0 or pattern[i - 1] == "/") and (j == n or pattern[j] == "/")
            if j - i >= 2 and whole_segment:
                if j < n:
                    out.append("(?:.*/)?")
                    i = j + 1
                else:
                    out.append(".*")
                    i = j
                continue
            out.append("[^/]*")
            i = j
            continue
        if c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i + 1
            if j < n and pattern[j] in "!^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : j].replace("\\", "\\\\")
                if body[0] in "!^":
                    out.append("[^/" + body[1:] + "]")
                else:
                    out.append("[" + body + "]")
                i = j
        elif c == "{":
            depth += 1
            out.append("(?:")
        elif c == "," and depth:
            out.append("|")
        elif c == "}" and depth:
            depth -= 1
            out.append(")")
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    if depth:
        raise ToolError(f"The pattern {pattern!r} has an unclosed '{{'.")
    return "".join(out)


def compile_glob(pattern: str, *, param: str = "pattern") -> re.Pattern[str]:
    if "\0" in pattern:
        raise ToolError(f'Parameter "{param}" contains a NUL byte.')
    if pattern.strip() == "":
        raise ToolError(f'Parameter "{param}" must not be empty.')
    try:
        return re.compile(glob_to_regex(pattern), re.DOTALL)
    except re.error as exc:
        raise ToolError(f"The pattern {pattern!r} is not a valid glob: {exc}.") from None


# --- the walk --------------------------------------------------------------------------


def walk_files(
    start: str, stop: threading.Event, *, max_depth: int | None = None
) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """Yield (path relative to `start`, entry) for every non-directory below `start`.

    Symlinked directories are not entered; unreadable directories are skipped.
    """
    stack: list[tuple[str, str, int]] = [(start, "", 1)]
    while stack:
        if stop.is_set():
            raise Stopped
        directory, rel, depth = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        subdirs: list[tuple[str, str, int]] = []
        for entry in entries:
            child = f"{rel}{entry.name}"
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                continue
            if is_dir:
                if entry.name in SKIPPED_DIR_NAMES:
                    continue
                if max_depth is None or depth < max_depth:
                    subdirs.append((entry.path, child + "/", depth + 1))
            else:
                yield child, entry
        stack.extend(reversed(subdirs))


def confined_regular_file(entry: os.DirEntry[str], ws: Workspace) -> str | None:
    """The real path of a regular file (or a symlink to one inside the workspace), else None."""
    try:
        if entry.is_symlink():
            real = os.path.realpath(entry.path)
            if not is_within(real, ws.root) or not stat.S_ISREG(os.stat(real).st_mode):
                return None
            return real
        if entry.is_file(follow_symlinks=False):
            return entry.path
    except OSError:
        return None
    return None


def _search_root(args: dict[str, Any], ws: Workspace) -> tuple[str, str]:
    """(real path, display) of the `path` argument (default: the workspace root)."""
    path: str = args.get("path", ".")
    real = ws.resolve(path)
    if not os.path.exists(real):
        raise ToolError(f"Path not found: {path}")
    return real, ws.relative(real)


def _join_display(prefix: str, rel: str) -> str:
    return rel if prefix == "." else f"{prefix}/{rel}"


# --- glob ------------------------------------------------------------------------------


def _glob(args: dict[str, Any], ws: Workspace, stop: threading.Event) -> ToolOutput:
    ws.check_root()
    pattern: str = args["pattern"]
    title = pattern
    while pattern.startswith("./"):
        pattern = pattern[2:]
    regex = compile_glob(pattern)
    if pattern.startswith("/") or os.path.isabs(pattern):
        raise ToolError(
            "The pattern must be relative to the search directory; use the path parameter "
            "to choose where to search."
        )
    segments = pattern.split("/")
    if ".." in segments:
        raise ToolError("The pattern must not contain '..'; use the path parameter instead.")
    base, base_display = _search_root(args, ws)
    if not os.path.isdir(base):
        raise ToolError(f"{base_display} is not a directory.")

    # Walk only below the literal leading directories of the pattern, and only as deep as
    # the pattern can reach when it has no `**`.
    literal: list[str] = []
    for seg in segments[:-1]:
        if _MAGIC.search(seg) or seg in ("", "."):
            break
        literal.append(seg)
    start = os.path.join(base, *literal) if literal else base
    if literal and os.path.realpath(start) != os.path.normpath(start):
        # The literal prefix goes through a symlink or does not exist; the walk would not
        # follow it either.
        start = ""
    max_depth = None
    if "**" not in pattern and "{" not in pattern:
        max_depth = len(segments) - len(literal)
    prefix = "/".join(literal) + "/" if literal else ""

    matches: list[tuple[float, str]] = []
    if start and os.path.isdir(start):
        for rel, entry in walk_files(start, stop, max_depth=max_depth):
            full_rel = prefix + rel
            if not regex.fullmatch(full_rel):
                continue
            real = confined_regular_file(entry, ws)
            if real is None:
                continue
            try:
                mtime = os.stat(real).st_mtime
            except OSError:
                continue
            matches.append((mtime, _join_display(base_display, full_rel)))
    total = len(matches)
    if total == 0:
        hint = ""
        if "/" not in pattern and "**" not in pattern:
            hint = f" (the pattern matches only directly in {base_display}; use **/{pattern} to search subdirectories)"
        return ToolOutput(
            output=f"No files found matching {pattern}{hint}.",
            title=title,
            metadata={"count": 0},
        )
    newest = heapq.nlargest(GLOB_MAX_RESULTS, matches, key=lambda m: (m[0], m[1]))
    lines = [path for _, path in newest]
    if total > len(newest):
        lines.append(
            f"\n(Showing the {len(newest)} most recently modified of {total} matching files. "
            "Use a more specific pattern or path.)"
        )
    return ToolOutput(
        output="\n".join(lines),
        title=title,
        metadata={"count": total, "truncated": total > len(newest)},
    )


# --- grep ------------------------------------------------------------------------------


class _GrepState:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.matches = 0
        self.files_with_matches = 0
        self.skipped_large = 0
        self.capped = False


def _grep(args: dict[str, Any], ws: Workspace, stop: threading.Event) -> ToolOutput:
    ws.check_root()
    pattern: str = args["pattern"]
    title = pattern
    try:
        line_regex = re.compile(pattern, re.MULTILINE)
    except re.error as exc:
        raise ToolError(f"Invalid regular expression {pattern!r}: {exc}.") from None
    whole_file_regex = None if _LINE_SENSITIVE.search(pattern) else line_regex
    include: str | None = args.get("include")
    include_regex = compile_glob(include, param="include") if include else None
    include_on_path = include is not None and "/" in include
    base, base_display = _search_root(args, ws)
    state = _GrepState()

    def search_one(real: str, display: str) -> None:
        _grep_file(real, display, line_regex, whole_file_regex, state)

    if os.path.isdir(base):
        for rel, entry in walk_files(base, stop):
            if stop.is_set():
                raise Stopped
            if include_regex is not None:
                subject = rel if include_on_path else entry.name
                if not include_regex.fullmatch(subject):
                    continue
            real = confined_regular_file(entry, ws)
            if real is None:
                continue
            search_one(real, _join_display(base_display, rel))
            if state.capped:
                break
    else:
        st = os.stat(base)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
            raise ToolError(
                f"Refusing to search {base_display}: only regular files with a single "
                "link can be searched."
            )
        search_one(base, base_display)
    metadata = {
        "matches": state.matches,
        "files": state.files_with_matches,
        "truncated": state.capped,
    }
    if not state.lines:
        output = "No matches found."
    else:
        output = "\n".join(state.lines)
    notes = []
    if state.capped:
        notes.append(
            f"(Stopped at {GREP_MAX_MATCHES} matches. Use a more specific pattern, path or include.)"
        )
    if state.skipped_large:
        notes.append(
            f"({state.skipped_large} files larger than {GREP_MAX_FILE_BYTES // (1024 * 1024)} MB "
            "were not searched.)"
        )
    if notes:
        output += "\n\n" + "\n".join(notes)
    return ToolOutput(output=output, title=title, metadata=metadata)


def _grep_file(
    real: str,
    display: str,
    line_regex: re.Pattern[str],
    whole_file_regex: re.Pattern[str] | None,
    state: _GrepState,
) -> None:
    try:
        fd = os.open(real, _OPEN_FLAGS)
    except OSError:
        return
    try:
        st = os.fstat(fd)
        # Hard-linked files may be the same file as one outside the workspace: not searched.
        if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
            return
        if st.st_size > GREP_MAX_FILE_BYTES:
            state.skipped_large += 1
            return
        chunks = []
        remaining = GREP_MAX_FILE_BYTES + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
    except OSError:
        return
    finally:
        os.close(fd)
    if not data or b"\0" in data[:BINARY_SNIFF_BYTES]:
        return
    text = data.decode("utf-8", "replace")
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    # A final newline ends the last line; it does not start an empty one.
    if text.endswith("\n"):
        text = text[:-1]
    found_before = state.matches
    if whole_file_regex is None:
        lines = text.split("\n")
        # compress + map keep the per-line loop in C; only matching lines reach Python.
        for index in itertools.compress(range(len(lines)), map(line_regex.search, lines)):
            _add_match(state, display, index + 1, lines[index])
            if state.capped:
                break
    else:
        # One C-level scan of the whole file finds candidate lines; each is then checked on
        # its own, so multi-line matches never count. A per-line match is always found by the
        # whole-file scan for patterns without lookaround or \A/\Z.
        pos = 0
        number = 1
        counted_to = 0
        while True:
            m = whole_file_regex.search(text, pos)
            if m is None:
                break
            line_start = text.rfind("\n", 0, m.start()) + 1
            line_end = text.find("\n", m.start())
            if line_end < 0:
                line_end = len(text)
            number += text.count("\n", counted_to, line_start)
            counted_to = line_start
            line = text[line_start:line_end]
            if line_regex.search(line):
                _add_match(state, display, number, line)
                if state.capped:
                    break
            pos = line_end + 1
            if pos > len(text):
                break
    if state.matches > found_before:
        state.files_with_matches += 1


def _add_match(state: _GrepState, display: str, number: int, line: str) -> None:
    if state.matches >= GREP_MAX_MATCHES:
        state.capped = True  # there is at least one match more than is shown
        return
    if len(line) > GREP_MAX_LINE_CHARS:
        line = line[:GREP_MAX_LINE_CHARS] + " [line truncated]"
    state.lines.append(f"{display}:{number}:{line}")
    state.matches += 1
