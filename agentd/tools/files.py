"""The file tools (read_file, list_dir, write_file, edit_file) and the reading of files
the editor attaches to a message (`attached_file_text`).

Each runs its file I/O in a worker thread; the bodies below are synchronous on purpose.
Paths are confined by `Workspace` (see workspace.py for what is refused and why).
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from agentd.tools.spec import EditorFiles, ToolEnv, ToolError, ToolOutput
from agentd.tools.workspace import Workspace, check_regular_single_link, is_within

READ_DEFAULT_LIMIT = 2000  # also the most lines one call returns
# Kept under the 50 KB truncation limit so a long read ends with "continue at offset N",
# which the model can act on, rather than with a spill file it cannot read.
READ_MAX_OUTPUT_BYTES = 45_000
READ_MAX_LINE_CHARS = 2000
# Bytes read per line before the rest of an overlong line is skipped unread.
_READ_LINE_BYTES = READ_MAX_LINE_CHARS * 4
BINARY_SNIFF_BYTES = 8192
LIST_MAX_ENTRIES = 1000
# The most of an attached file the model sees (the rest is cut, with a note).
ATTACH_MAX_BYTES = 200_000
# A path no OS takes (Linux PATH_MAX); longer ones are refused before anything is stored.
MAX_PATH_BYTES = 4096
DIFF_MAX_BYTES = 1_000_000
SKIPPED_DIR_NAMES = frozenset({".git"})

log = logging.getLogger(__name__)


async def read_file(args: dict[str, Any], env: ToolEnv, call_id: str) -> ToolOutput:
    if env.editor_files is not None and env.editor_files.reads:
        return await _read_from_editor(
            args, env.editor_files, Workspace(env.workspace_root, env.umask)
        )
    return await asyncio.to_thread(_read_file, args, Workspace(env.workspace_root, env.umask))


async def list_dir(args: dict[str, Any], env: ToolEnv, call_id: str) -> ToolOutput:
    return await asyncio.to_thread(_list_dir, args, Workspace(env.workspace_root, env.umask))


async def write_file(args: dict[str, Any], env: ToolEnv, call_id: str) -> ToolOutput:
    if env.editor_files is not None and env.editor_files.writes:
        return await _write_through_editor(
            args, env.editor_files, Workspace(env.workspace_root, env.umask)
        )
    return await asyncio.to_thread(_write_file, args, Workspace(env.workspace_root, env.umask))


async def edit_file(args: dict[str, Any], env: ToolEnv, call_id: str) -> ToolOutput:
    files = env.editor_files
    if files is not None and files.reads and files.writes:
        return await _edit_through_editor(args, files, Workspace(env.workspace_root, env.umask))
    return await asyncio.to_thread(_edit_file, args, Workspace(env.workspace_root, env.umask))


# --- through the editor ---------------------------------------------------------------------
# The editor's buffers (unsaved edits included) are the files: the path is confined here
# first, exactly as for the disk (links resolved against the root), and the editor is
# given the absolute path.


async def check_target(path: str, env: ToolEnv, action: str) -> None:
    """Raise ToolError when write_file / edit_file could not write `path` (see _confined)."""
    await _confined(Workspace(env.workspace_root, env.umask), path, action)


async def _confined(ws: Workspace, path: str, action: str) -> tuple[str, str]:
    """The absolute path to give the editor, refused as the disk tools refuse it: outside
    the root (links resolved), not a regular file, or a file with other hard links (its
    bytes may be a file outside the workspace)."""

    def resolve() -> tuple[str, str]:
        ws.check_root()
        real = ws.resolve(path)
        display = ws.relative(real)
        st = _existing(ws, real, display)
        if st is not None and real != ws.root:  # (None: a new file, for write_file)
            check_regular_single_link(st, display, action=action)
        return real, display

    return await asyncio.to_thread(resolve)


async def _read_from_editor(args: dict[str, Any], files: EditorFiles, ws: Workspace) -> ToolOutput:
    offset: int = args.get("offset", 1)
    limit: int = min(args.get("limit", READ_DEFAULT_LIMIT), READ_DEFAULT_LIMIT)
    real, display = await _confined(ws, args["path"], "read")
    # One line more than asked: whether more follow.
    text = await files.read(real, offset, limit + 1)
    if "\0" in text[:BINARY_SNIFF_BYTES]:
        raise ToolError(f"{display} is a binary file; read_file only reads text.")
    lines = text.splitlines()
    if not lines:
        if offset > 1:
            raise ToolError(f"offset {offset} is past the end of {display}.")
        return ToolOutput(output="(empty file)", title=display)
    numbered = ((n, line, False) for n, line in enumerate(lines, start=offset))
    out, _ = _shown_lines(numbered, offset, limit)
    return ToolOutput(output="\n".join(out), title=display)


async def _write_through_editor(
    args: dict[str, Any], files: EditorFiles, ws: Workspace
) -> ToolOutput:
    real, display = await _confined(ws, args["path"], "write")
    if real == ws.root:
        raise ToolError("Cannot write to the workspace root itself; give a file path.")
    content: str = args["content"]
    data = _encode(content, "content")
    await files.write(real, content)
    return ToolOutput(
        output=f"Wrote {display} ({len(data)} bytes).",
        title=display,
        metadata={"bytes": len(data), "editor": True},
    )


async def _edit_through_editor(
    args: dict[str, Any], files: EditorFiles, ws: Workspace
) -> ToolOutput:
    real, display = await _confined(ws, args["path"], "edit")
    text = await files.read(real, 1, 0)
    updated, replaced = _apply_edit(args, text, display)
    _encode(updated, "newString")
    await files.write(real, updated)
    return _edited(display, text, updated, replaced)


def _read_file(args: dict[str, Any], ws: Workspace) -> ToolOutput:
    ws.check_root()
    path: str = args["path"]
    offset: int = args.get("offset", 1)
    limit: int = min(args.get("limit", READ_DEFAULT_LIMIT), READ_DEFAULT_LIMIT)
    real = ws.resolve(path)
    display = ws.relative(real)
    fd, st = ws.open_file(real, display)
    with os.fdopen(fd, "rb") as f:
        if b"\0" in f.read(BINARY_SNIFF_BYTES):
            raise ToolError(
                f"{display} is a binary file ({st.st_size} bytes); read_file only reads text."
            )
        f.seek(0)
        if st.st_size == 0:
            return ToolOutput(output="(empty file)", title=display)
        lines = ((n, raw.decode("utf-8", "replace"), cut) for n, raw, cut in _numbered_lines(f))
        out, last = _shown_lines(lines, offset, limit)
    if last < offset:
        raise ToolError(f"offset {offset} is past the end of {display}, which has {last} lines.")
    return ToolOutput(output="\n".join(out), title=display)


def _shown_lines(
    lines: Iterable[tuple[int, str, bool]], offset: int, limit: int
) -> tuple[list[str], int]:
    """read_file's output of numbered `lines` (number, text, whether it was cut): those
    from `offset`, `limit` of them at most and within READ_MAX_OUTPUT_BYTES, ending with
    a note saying where to go on, or that the file ended. Also the last line number
    seen (below `offset`: the file ended before it; no note then)."""
    out: list[str] = []
    used = 0
    number = 0
    for number, text, cut in lines:
        if number < offset:
            continue
        if number >= offset + limit:
            out.append(f"\n(More lines follow. Use offset={number} to continue reading.)")
            return out, number
        if cut or len(text) > READ_MAX_LINE_CHARS:
            text = text[:READ_MAX_LINE_CHARS] + " [line truncated]"
        line = f"{number:>5}\t{text}"
        used += len(line.encode("utf-8", "replace")) + 1
        if used > READ_MAX_OUTPUT_BYTES and number > offset:
            out.append(
                f"\n(Output limited to {READ_MAX_OUTPUT_BYTES // 1000} KB. "
                f"Use offset={number} to continue reading.)"
            )
            return out, number
        out.append(line)
    if number >= offset:
        out.append(f"\n(End of file: {number} lines.)")
    return out, number


def _numbered_lines(f: BinaryIO) -> Iterator[tuple[int, bytes, bool]]:
    """Yield (line number, line bytes without the newline, whether the line was cut)."""
    number = 0
    while True:
        raw = f.readline(_READ_LINE_BYTES)
        if not raw:
            return
        number += 1
        cut = False
        if not raw.endswith(b"\n"):
            # Either the last line without a newline or an overlong line: skip its rest.
            rest = f.readline(_READ_LINE_BYTES)
            while rest:
                cut = True
                if rest.endswith(b"\n"):
                    break
                rest = f.readline(_READ_LINE_BYTES)
        raw = raw.rstrip(b"\n")
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        yield number, raw, cut


def _list_dir(args: dict[str, Any], ws: Workspace) -> ToolOutput:
    ws.check_root()
    path: str = args.get("path", ".")
    real = ws.resolve(path)
    display = ws.relative(real)
    try:
        fd = ws.open_dir(real, display)
    except ToolError as exc:
        if exc.message.endswith("is not a directory."):
            raise ToolError(f"{exc.message} Use read_file to read a file.") from None
        if exc.message.startswith("File not found"):
            raise ToolError(f"Directory not found: {path}") from None
        raise
    names: list[str] = []
    # Listed through the descriptor: what is listed is the directory that was opened. The
    # entries stat through that fd when the file system gives no type: it stays open.
    try:
        with os.scandir(fd) as it:
            for entry in it:
                if entry.name in SKIPPED_DIR_NAMES:
                    continue
                if entry.is_symlink():
                    names.append(entry.name + "@")
                elif entry.is_dir(follow_symlinks=False):
                    names.append(entry.name + "/")
                else:
                    names.append(entry.name)
    finally:
        os.close(fd)
    names.sort()
    total = len(names)
    if total == 0:
        return ToolOutput(output="(empty directory)", title=display, metadata={"count": 0})
    shown = names[:LIST_MAX_ENTRIES]
    lines = list(shown)
    if total > len(shown):
        lines.append(
            f"\n(Showing {len(shown)} of {total} entries. Use glob to find specific files.)"
        )
    return ToolOutput(output="\n".join(lines), title=display, metadata={"count": total})


def _write_file(args: dict[str, Any], ws: Workspace) -> ToolOutput:
    ws.check_root()
    path: str = args["path"]
    content: str = args["content"]
    real = ws.resolve(path)
    display = ws.relative(real)
    if real == ws.root:
        raise ToolError("Cannot write to the workspace root itself; give a file path.")
    data = _encode(content, "content")
    old_text = _existing_text_for_diff(ws, real, display)
    created = ws.write_atomically(real, data, display)
    verb = "Created" if created else "Wrote"
    metadata: dict[str, Any] = {"created": created, "bytes": len(data)}
    if old_text is not None and len(data) <= DIFF_MAX_BYTES:
        metadata["diff"] = unified_diff(old_text, content, display)
    return ToolOutput(
        output=f"{verb} {display} ({len(data)} bytes).", title=display, metadata=metadata
    )


def _existing(ws: Workspace, real: str, display: str) -> os.stat_result | None:
    """The status of `real`; None when it, or a parent, does not exist yet (write_file
    creates them)."""
    try:
        return ws.lstat(real, display)
    except FileNotFoundError:
        return None
    except ToolError as exc:
        if exc.message.startswith("File not found"):
            return None
        raise


def _existing_text_for_diff(ws: Workspace, real: str, display: str) -> str | None:
    """The current text of a file about to be overwritten, for the diff; "" if it is new.

    Refusals (not regular, hard-linked) surface here, before anything is written.
    """
    try:
        st = _existing(ws, real, display)
    except ToolError as exc:
        if "a parent is not a directory" in exc.message:
            raise ToolError(f"Cannot write {display}: a parent path is not a directory.") from None
        raise
    if st is None:
        return ""
    if stat.S_ISDIR(st.st_mode):
        raise ToolError(f"{display} is a directory.")
    fd, st = ws.open_file(real, display, action="write")
    with os.fdopen(fd, "rb") as f:
        if st.st_size > DIFF_MAX_BYTES:
            return None
        data = f.read()
    if b"\0" in data[:BINARY_SNIFF_BYTES]:
        return None
    return data.decode("utf-8", "replace")


def _edit_file(args: dict[str, Any], ws: Workspace) -> ToolOutput:
    ws.check_root()
    _check_edit(args)
    real = ws.resolve(args["path"])
    display = ws.relative(real)
    fd, st = ws.open_file(real, display, action="edit")
    with os.fdopen(fd, "rb") as f:
        data = f.read()
    if b"\0" in data[:BINARY_SNIFF_BYTES]:
        raise ToolError(f"{display} is a binary file; edit_file only edits text.")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ToolError(
            f"{display} is not valid UTF-8 (byte {exc.start}); editing it would corrupt it."
        ) from None
    updated, replaced = _apply_edit(args, text, display)
    data = _encode(updated, "newString")
    ws.write_atomically(real, data, display, expect=(st.st_dev, st.st_ino))
    return _edited(display, text, updated, replaced)


def _check_edit(args: dict[str, Any]) -> None:
    if args["oldString"] == "":
        raise ToolError(
            "oldString must not be empty. Use write_file to create or overwrite a file."
        )
    if args["oldString"] == args["newString"]:
        raise ToolError("oldString and newString are identical; there is nothing to change.")


def _apply_edit(args: dict[str, Any], text: str, display: str) -> tuple[str, int]:
    """`text` with the edit applied, and how many occurrences it replaced."""
    _check_edit(args)
    old: str = args["oldString"]
    new: str = args["newString"]
    replace_all: bool = args.get("replaceAll", False)
    count = text.count(old)
    if count == 0 and "\r\n" in text and "\n" in old and "\r\n" not in old:
        # The model writes "\n"; the file uses CRLF. Match and write in the file's style.
        old = old.replace("\n", "\r\n")
        new = new.replace("\r\n", "\n").replace("\n", "\r\n")
        count = text.count(old)
    if count == 0:
        raise ToolError(
            f"oldString was not found in {display}. It must match the file exactly, including "
            "whitespace and indentation; read the file again to copy the exact text."
        )
    if count > 1 and not replace_all:
        raise ToolError(
            f"oldString occurs {count} times in {display}. Include more surrounding lines to "
            "make it unique, or set replaceAll to true to replace every occurrence."
        )
    updated = text.replace(old, new) if replace_all else text.replace(old, new, 1)
    return updated, count if replace_all else 1


def _edited(display: str, text: str, updated: str, replaced: int) -> ToolOutput:
    noun = "occurrence" if replaced == 1 else "occurrences"
    return ToolOutput(
        output=f"Edited {display}: replaced {replaced} {noun}.",
        title=display,
        metadata={"diff": unified_diff(text, updated, display), "replacements": replaced},
    )


def _encode(text: str, param: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        # JSON can carry lone surrogates (\ud800); they have no UTF-8 form.
        raise ToolError(
            f"{param} contains an invalid character (a lone surrogate at index {exc.start})."
        ) from None


def unified_diff(before: str, after: str, display: str) -> str:
    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            fromfile=f"a/{display}",
            tofile=f"b/{display}",
        )
    )


# --- attached files ----------------------------------------------------------------------


def attachment_problem(root: Path, path: str) -> str | None:
    """Why `path` can never name a file to attach, judged from the string alone (so a
    chat can be refused before anything is stored); None if it may."""
    if path == "":
        return "must not be empty"
    if "\0" in path:
        return "contains a NUL byte; that is never a valid path"
    try:
        size = len(path.encode("utf-8"))
    except UnicodeEncodeError as exc:
        return f"contains an invalid character (a lone surrogate at index {exc.start})"
    if size > MAX_PATH_BYTES:
        return f"is {size} bytes long; paths are at most {MAX_PATH_BYTES}"
    ws = Workspace(root)
    joined = path if os.path.isabs(path) else os.path.join(ws.given_root, path)
    lexical = os.path.normpath(joined)
    if not (is_within(lexical, ws.given_root) or is_within(lexical, ws.root)):
        return f"{path} is outside the workspace ({ws.given_root})"
    return None


def attached_file_text(root: Path, path: object) -> str:
    """What the model reads for a `file` part: the file's text, or a one-line note saying
    why it is not attached. Never raises: a stored message is read again on every later
    run, so whatever it names (now, or as an older agentd stored it) must not fail them.

    The same rules as read_file: confined to the workspace (symlinks included), regular
    files with one link only, never opened if special (a FIFO would block). At most
    ATTACH_MAX_BYTES are read, however large the file is; binary files become a note.
    """
    if not isinstance(path, str):
        return "[file (a stored path that is not a string): not attached]"
    try:
        problem = attachment_problem(root, path)
        if problem is not None:
            return f"[file {path}: not attached: the path {problem}]"
        ws = Workspace(root)
        ws.check_root()
        real = ws.resolve(path)
        display = ws.relative(real)
        fd, st = ws.open_file(real, display, action="attach")
        with os.fdopen(fd, "rb") as f:
            data = f.read(ATTACH_MAX_BYTES + 1)
    except ToolError as exc:
        return f"[file {path}: not attached: {exc.message}]"
    except OSError as exc:
        return f"[file {path}: not attached: {exc.strerror or type(exc).__name__}]"
    except Exception:
        log.exception("reading the attached file %r failed", path)
        return f"[file {path}: not attached: it could not be read]"
    if b"\0" in data[:BINARY_SNIFF_BYTES]:
        return f"[file {display}: a binary file ({st.st_size} bytes), not attached]"
    text = data[:ATTACH_MAX_BYTES].decode("utf-8", "replace")
    if len(data) > ATTACH_MAX_BYTES:
        size = max(st.st_size, len(data))
        text += (
            f"\n[file {display}: cut after {ATTACH_MAX_BYTES // 1000} KB of {size} bytes; "
            "read_file can read the rest]"
        )
    return f"[file {display}]\n{text}"
