"""Project instructions: the AGENTS.md files (and the files the configuration names) a
run's system prompt carries.

Read before every run, in a worker thread, so an edit applies from the next run:

1. the user's own file, `AGENTS.md` beside the configuration file
   (`~/.config/agentd/AGENTS.md` by default);
2. the files and globs of the `instructions` option, in the order given (a glob's matches
   sorted by path; relative ones are under the workspace root, `~` is expanded);
3. `AGENTS.md` in each directory from the repository root (the nearest directory above
   the workspace root holding a `.git`) down to the workspace root; without a
   repository, the workspace root's alone.

General first, most specific last, each under a heading naming its path. A file named
twice is sent once, at its last (most specific) place. Only regular files are read
(a FIFO, a device, a directory named AGENTS.md is skipped, never opened for reading
and waited on); empty ones are skipped.

Limits: at most FILE_LIMIT bytes of a file and TOTAL_LIMIT bytes in all. The budget goes
to the most specific files first, so it is the general ones that are cut when there is
too much; a cut file ends with a note saying so, and one left out entirely is named
with a note. At most MAX_FILES files.
"""

from __future__ import annotations

import glob
import logging
import os
import stat
from pathlib import Path

import attrs

from agentd.config import Config, default_config_path
from agentd.protocol import types as t

logger = logging.getLogger(__name__)

FILE_NAME = "AGENTS.md"
FILE_LIMIT = 32 * 1024
TOTAL_LIMIT = 64 * 1024
MAX_FILES = 64

PREAMBLE = (
    "# Project instructions\n\n"
    "The files below tell you how to work in this project, the most general first: "
    "where they disagree, the later (more specific) one wins."
)


@attrs.define
class Instructions:
    """What a run's system prompt gets: the text (empty: no instruction files) and the
    files it holds, in order."""

    text: str = ""
    files: list[t.InstructionFile] = attrs.Factory(list)


@attrs.define
class _Found:
    path: Path
    size: int
    data: bytes  # its first FILE_LIMIT bytes and a few more (to cut between characters)


def user_file(config: Config) -> Path:
    """The user's own instruction file, beside the configuration file."""
    config_path = config.config_path or default_config_path(os.environ)
    return config_path.parent / FILE_NAME


def candidate_paths(workspace_root: Path, config: Config) -> list[Path]:
    """Every path that may hold instructions, the most general first."""
    paths = [user_file(config)]
    for pattern in config.instructions:
        paths += _matches(pattern, workspace_root)
    paths += [d / FILE_NAME for d in directories(workspace_root)]
    return paths


def directories(workspace_root: Path) -> list[Path]:
    """From the repository root down to the workspace root (the workspace root alone
    outside a repository)."""
    chain = [workspace_root]
    current = workspace_root
    while not os.path.lexists(current / ".git"):
        if current.parent == current:  # the filesystem's root: no repository
            return [workspace_root]
        current = current.parent
        chain.append(current)
    return list(reversed(chain))


def _matches(pattern: str, root: Path) -> list[Path]:
    expanded = os.path.expanduser(pattern)
    if not os.path.isabs(expanded):
        expanded = os.path.join(root, expanded)
    if not glob.has_magic(expanded):
        return [Path(expanded)]
    try:
        return [Path(p) for p in sorted(glob.glob(expanded, recursive=True))]
    except (OSError, ValueError):
        return []


def _read(path: Path) -> _Found | None:
    """The first FILE_LIMIT bytes of a regular, non-empty file; None otherwise."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, ValueError):  # ValueError: a NUL byte in a configured name
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            logger.info("instructions: %s is not a regular file: skipped", path)
            return None
        chunks: list[bytes] = []
        remaining = FILE_LIMIT + 4
        while remaining > 0:
            chunk = os.read(fd, remaining)
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
    except OSError as exc:
        logger.info("instructions: cannot read %s (%s): skipped", path, exc.strerror)
        return None
    finally:
        os.close(fd)
    if not data.strip():
        return None
    # A file read to its end is the size read (it may have changed since fstat).
    size = len(data) if len(data) <= FILE_LIMIT else max(info.st_size, len(data))
    return _Found(path=path, size=size, data=data)


def _cut(data: bytes, limit: int) -> bytes:
    """At most `limit` bytes, never inside a UTF-8 sequence."""
    if len(data) <= limit:
        return data
    end = limit
    while end > 0 and (data[end] & 0xC0) == 0x80:
        end -= 1
    return data[:end]


def gather(workspace_root: Path, config: Config) -> Instructions:
    """Read the instruction files for a run (blocking: call it in a thread)."""
    read = [(path, _read(path)) for path in candidate_paths(workspace_root, config)]
    # A file named twice is kept at its last (most specific) place.
    files: list[_Found] = []
    seen: set[str] = set()
    for path, item in reversed(read):
        if item is not None and (key := os.path.realpath(path)) not in seen:
            seen.add(key)
            files.append(item)
    files.reverse()
    left_over = max(0, len(files) - MAX_FILES)
    # Past MAX_FILES the most general are left out, as with the byte budget.
    files = files[left_over:]
    if not files:
        return Instructions()
    # The budget goes to the most specific files first.
    budget = TOTAL_LIMIT
    sent: list[bytes] = [b""] * len(files)
    for index in range(len(files) - 1, -1, -1):
        sent[index] = _cut(files[index].data, min(FILE_LIMIT, budget))
        budget -= len(sent[index])
    sections = [PREAMBLE]
    if left_over:
        sections.append(
            f"[agentd: {left_over} more instruction files were left out: at most "
            f"{MAX_FILES} are sent]"
        )
    records = []
    for item, body in zip(files, sent, strict=True):
        text = body.decode("utf-8", "replace").rstrip()
        if len(body) < item.size:
            text += "\n\n" + _cut_note(item.size, len(body))
        sections.append(f"## {item.path}\n\n{text}")
        records.append(t.InstructionFile(path=str(item.path), size=item.size, sent=len(body)))
    return Instructions(text="\n\n".join(sections), files=records)


def _cut_note(size: int, sent: int) -> str:
    why = (
        f"instruction files are sent up to {FILE_LIMIT // 1024} KiB each and "
        f"{TOTAL_LIMIT // 1024} KiB in all, the most specific first"
    )
    if sent == 0:
        return f"[agentd: this file ({size} bytes) was left out: {why}]"
    return f"[agentd: cut here: only the first {sent} of this file's {size} bytes are sent: {why}]"
