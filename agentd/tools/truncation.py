"""Keeping tool output within what a model turn can carry.

Output over the limits is cut to its head and a short tail, the full text is saved to
`<spill_dir>/<call_id>.txt` (0600, directory 0700), and a last line says where. The result
is guaranteed to be within the limits itself, so truncating twice is a no-op and never
overwrites the saved full output with a shortened one.

`truncate_output` writes a file when it truncates: call it from a worker thread when the
text may be large.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from agentd import file_modes
from agentd.tools.spec import ToolEnv

DEFAULT_MAX_BYTES = 50_000
DEFAULT_MAX_LINES = 2000

_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


def spill_path(env: ToolEnv, call_id: str) -> Path:
    """Where the full output of `call_id` is saved; the id is made safe as a file name."""
    name = _UNSAFE_NAME_CHARS.sub("_", call_id)[:200].lstrip(".") or "output"
    return Path(env.spill_dir) / f"{name}.txt"


def open_spill_file(env: ToolEnv, call_id: str) -> tuple[int, Path]:
    """Create (or truncate) the spill file for `call_id`, mode 0600; returns (fd, path)."""
    os.makedirs(env.spill_dir, mode=0o700, exist_ok=True)
    path = spill_path(env, call_id)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its old mode through O_CREAT
    except BaseException:
        os.close(fd)
        raise
    return fd, path


def count_lines(text: str) -> int:
    if not text:
        return 0
    return text.count("\n") + (0 if text.endswith("\n") else 1)


def fits(text: str, *, max_bytes: int, max_lines: int) -> bool:
    # A str of more characters than max_bytes cannot fit; skip encoding it.
    if len(text) > max_bytes:
        return False
    return len(text.encode("utf-8", "replace")) <= max_bytes and count_lines(text) <= max_lines


def truncate_output(
    text: str,
    env: ToolEnv,
    *,
    call_id: str,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_lines: int = DEFAULT_MAX_LINES,
) -> str:
    """`text` if within the limits, else its head and tail plus a note naming the saved file."""
    if fits(text, max_bytes=max_bytes, max_lines=max_lines):
        return text
    data = text.encode("utf-8", "replace")
    try:
        fd, path = open_spill_file(env, call_id)
        try:
            file_modes.write_all(fd, data)
        finally:
            os.close(fd)
        where = f"full output saved to {path}"
    except OSError as exc:
        where = f"the full output could not be saved ({exc.strerror or exc})"
    return abridge(
        text, total_bytes=len(data), where=where, max_bytes=max_bytes, max_lines=max_lines
    )


def abridge(text: str, *, total_bytes: int, where: str, max_bytes: int, max_lines: int) -> str:
    """Head and tail of `text` with an omission marker and the truncation note, within limits.

    `total_bytes` is the size of the whole output, which may be larger than `text` when the
    caller only kept the head and tail of a stream.
    """
    note = f"[output truncated: {total_bytes} bytes total; {where}]"
    marker_template = "[... {} bytes omitted ...]"
    reserve = len(note.encode()) + len(marker_template.format(total_bytes).encode()) + 4
    budget = max(0, max_bytes - reserve)
    line_budget = max(0, max_lines - 2)
    tail_bytes = min(4000, budget // 10)
    tail_lines = min(20, line_budget // 10)
    head = _head(text, max_bytes=budget - tail_bytes, max_lines=line_budget - tail_lines)
    tail = _tail(text[len(head) :], max_bytes=tail_bytes, max_lines=tail_lines)
    shown = len(head.encode("utf-8", "replace")) + len(tail.encode("utf-8", "replace"))
    marker = marker_template.format(max(0, total_bytes - shown))
    parts = [head.rstrip("\n"), marker]
    if tail:
        parts.append(tail.rstrip("\n"))
    parts.append(note)
    if not parts[0]:
        parts.pop(0)
    return "\n".join(parts)


def _head(text: str, *, max_bytes: int, max_lines: int) -> str:
    """The longest prefix of whole lines within the limits, or a cut first line if none fits."""
    used = 0
    end = 0
    lines = 0
    while end < len(text) and lines < max_lines:
        nl = text.find("\n", end)
        stop = len(text) if nl < 0 else nl + 1
        size = len(text[end:stop].encode("utf-8", "replace"))
        if used + size > max_bytes:
            if lines == 0:
                return _cut_prefix(text[end:stop], max_bytes)
            break
        used += size
        end = stop
        lines += 1
    return text[:end]


def _tail(text: str, *, max_bytes: int, max_lines: int) -> str:
    """The longest suffix of whole lines within the limits, or a cut last line if none fits."""
    if max_lines <= 0 or max_bytes <= 0 or not text:
        return ""
    used = 0
    start = len(text)
    lines = 0
    # The newline that ends the last line belongs to it, so the first search stops before it.
    search_end = len(text) - 1 if text.endswith("\n") else len(text)
    while start > 0 and lines < max_lines:
        nl = text.rfind("\n", 0, search_end)
        begin = nl + 1
        size = len(text[begin:start].encode("utf-8", "replace"))
        if used + size > max_bytes:
            if lines == 0:
                return _cut_suffix(text[begin:start], max_bytes)
            break
        used += size
        start = begin
        lines += 1
        search_end = begin - 1
        if nl < 0:
            break
    return text[start:]


def _cut_prefix(line: str, max_bytes: int) -> str:
    return line.encode("utf-8", "replace")[:max_bytes].decode("utf-8", "ignore")


def _cut_suffix(line: str, max_bytes: int) -> str:
    if max_bytes <= 0:
        return ""
    return line.encode("utf-8", "replace")[-max_bytes:].decode("utf-8", "ignore")
