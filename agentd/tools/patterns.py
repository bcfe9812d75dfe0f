"""Patterns from the model (grep's regex, glob and include globs), compiled for matching
that cannot run away.

Python's `re` backtracks: `^(a+)+$` against forty `a` and a `!` runs for hours and holds
the GIL all along, so a search in a worker thread freezes the event loop as surely as one
on it. RE2 (google-re2) matches in time linear in the text and releases the GIL while it
matches. Every glob and every regex RE2 accepts is matched by RE2; a regex only Python's
`re` understands (lookaround, backreferences, atomic groups...) is matched by `re` in a
child process the caller can kill (`search.py`), never in this process.

The low-level `re2._re2.RE2` object is used rather than `re2.compile`: the latter keeps
the last 128 patterns alive for the life of the process (each may grow to `max_mem`,
8 MiB, of DFA cache), and it re-encodes a `str` subject on every call; here patterns live
as long as one tool call and subjects are bytes.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator

import re2
from re2 import _re2

from agentd.tools.spec import ToolError

# Longer patterns are refused before any engine sees them (compiling is work too).
MAX_PATTERN_CHARS = 10_000

_UNANCHORED = _re2.RE2.Anchor.UNANCHORED
_ANCHOR_BOTH = _re2.RE2.Anchor.ANCHOR_BOTH
_NO_MATCH = (-1, -1)


def _options(*, never_nl: bool) -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # RE2 would print each bad pattern on stderr, our log
    options.never_capture = True  # only the whole match's span is ever needed
    options.never_nl = never_nl
    return options


class LinearPattern:
    """A compiled RE2 pattern matched against bytes (UTF-8)."""

    def __init__(self, pattern: bytes, *, never_nl: bool = False) -> None:
        self._re = _re2.RE2(pattern, _options(never_nl=never_nl))
        if not self._re.ok():
            raise re2.error(self._re.error().decode("utf-8", "replace"))

    def search(self, data: bytes, pos: int = 0) -> tuple[int, int] | None:
        span: tuple[int, int] = self._re.Match(_UNANCHORED, data, pos, len(data))[0]
        return None if span == _NO_MATCH else span

    def fullmatch(self, data: bytes) -> bool:
        return bool(self._re.Match(_ANCHOR_BOTH, data, 0, len(data))[0] != _NO_MATCH)


def _check_length(pattern: str, param: str) -> bytes:
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ToolError(
            f'Parameter "{param}" is {len(pattern)} characters long; at most '
            f"{MAX_PATTERN_CHARS} are accepted."
        )
    try:
        return pattern.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ToolError(
            f'Parameter "{param}" contains an invalid character (a lone surrogate at index '
            f"{exc.start})."
        ) from None


# --- grep --------------------------------------------------------------------------------


def to_line_pattern(pattern: str) -> str:
    """`pattern` with grep's line-by-line meaning made explicit for a whole-file search:
    multi-line mode, and \\A, \\Z, \\z (start and end of the subject, which for grep is one
    line) as start and end of a line. Escapes and character classes are left alone."""
    out = ["(?m)"]
    i, n = 0, len(pattern)
    in_class = False
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            nxt = pattern[i + 1]
            if not in_class and nxt == "A":
                out.append("(?m:^)")
            elif not in_class and nxt in "Zz":
                out.append("(?m:$)")
            else:
                out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
        elif c == "[":
            in_class = True
            out.append(c)
            i += 1
            # A ']' first in a class (after an optional '^') is a literal.
            if i < n and pattern[i] == "^":
                out.append("^")
                i += 1
            if i < n and pattern[i] == "]":
                out.append("]")
                i += 1
            continue
        out.append(c)
        i += 1
    return "".join(out)


class LinearLines:
    """grep's matcher for patterns RE2 accepts: one RE2 scan over the whole file per
    matching line. `never_nl` keeps every match inside one line, so the line holding a
    match is a line that matches on its own."""

    def __init__(self, pattern: str) -> None:
        self._pattern = LinearPattern(to_line_pattern(pattern).encode("utf-8"), never_nl=True)

    def matching_lines(self, data: bytes) -> Iterator[tuple[int, str]]:
        """(line number, line) for each matching line of `data`: UTF-8, LF line ends, no
        newline after the last line."""
        search = self._pattern.search
        n = len(data)
        pos = 0
        number = 1
        counted_to = 0
        while pos <= n:
            span = search(data, pos)
            if span is None:
                return
            start, end = span
            line_start = data.rfind(b"\n", 0, start) + 1
            line_end = data.find(b"\n", start)
            if line_end < 0:
                line_end = n
            line = data[line_start:line_end]
            # \C (any byte) is the one construct that can still cross a newline.
            if b"\n" not in data[start:end] or search(line) is not None:
                number += data.count(b"\n", counted_to, line_start)
                counted_to = line_start
                yield number, line.decode("utf-8", "replace")
            pos = line_end + 1


class PythonLines:
    """grep's matcher for patterns only Python's `re` understands; run it only where the
    process can be killed (it may backtrack for ever)."""

    def __init__(self, regex: re.Pattern[str]) -> None:
        self._regex = regex

    def matching_lines(self, data: bytes) -> Iterator[tuple[int, str]]:
        lines = data.decode("utf-8", "replace").split("\n")
        # compress + map keep the per-line loop in C; only matching lines reach Python.
        for index in itertools.compress(range(len(lines)), map(self._regex.search, lines)):
            yield index + 1, lines[index]


def compile_grep(pattern: str) -> LinearLines | re.Pattern[str]:
    """RE2 lines for a pattern RE2 accepts; else the Python regex, for a child process.

    ToolError when neither engine accepts it (the message is Python's, since the tool is
    described with Python's syntax)."""
    _check_length(pattern, "pattern")
    try:
        return LinearLines(pattern)
    except re2.error:
        pass
    try:
        return re.compile(pattern, re.MULTILINE)
    except (re.error, RecursionError, OverflowError, ValueError) as exc:
        raise ToolError(f"Invalid regular expression {pattern!r}: {exc}.") from None


# --- globs -------------------------------------------------------------------------------


def glob_to_regex(pattern: str) -> str:
    """Translate a glob to an RE2 regex matched against a whole '/'-separated path.

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
                out.append(re2.escape(c))
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
            out.append(re2.escape(pattern[i]))
        else:
            out.append(re2.escape(c))
        i += 1
    if depth:
        raise ToolError(f"The pattern {pattern!r} has an unclosed '{{'.")
    return "".join(out)


class GlobPattern:
    """A glob compiled for RE2, matched against a whole relative path."""

    def __init__(self, pattern: str, *, param: str = "pattern") -> None:
        if "\0" in pattern:
            raise ToolError(f'Parameter "{param}" contains a NUL byte.')
        if pattern.strip() == "":
            raise ToolError(f'Parameter "{param}" must not be empty.')
        _check_length(pattern, param)
        try:
            # (?s): `.` in a `**` also matches a newline in a file name.
            self._pattern = LinearPattern(("(?s)" + glob_to_regex(pattern)).encode("utf-8"))
        except re2.error as exc:
            raise ToolError(f"The pattern {pattern!r} is not a valid glob: {exc}.") from None

    def fullmatch(self, path: str) -> bool:
        # A name that is not UTF-8 (surrogate escapes) still matches `*` and `?`.
        return self._pattern.fullmatch(path.encode("utf-8", "replace"))
