"""What `session/chat` sends in (`parts`): checked against the workspace before anything
is stored, then made into the run's user message."""

from __future__ import annotations

import os
from pathlib import Path

from agentd import ids
from agentd.errors import InvalidParams
from agentd.protocol import types as t

# Files one message may attach (each is read again, up to 200 KB, at every later run).
MAX_FILE_PARTS = 32


def workspace_path(root: str | None) -> Path:
    """The workspace a session's tools and attached files see (as `tool_env` makes it)."""
    return Path(root or ".").absolute()


def check_file_parts(parts: list[t.InputPart], root: Path) -> None:
    """Refuse (-32602, before anything is stored) a file part whose path can never
    name a file in the workspace; what may change later (a file deleted, replaced by a
    FIFO or a symlink) is stored and read as a note instead (`attached_file_text`)."""
    # Loaded with the first chat, as the rest of the tool machinery.
    from agentd.tools.files import attachment_problem

    files = [(i, p) for i, p in enumerate(parts) if isinstance(p, t.FileInputPart)]
    if len(files) > MAX_FILE_PARTS:
        raise InvalidParams(
            f"params.parts: at most {MAX_FILE_PARTS} files can be attached to a message "
            f"({len(files)} were)",
            data={"field": "parts"},
        )
    seen: dict[str, int] = {}
    for index, part in files:
        problem = attachment_problem(root, part.path)
        same = os.path.normpath(part.path)
        if problem is None and same in seen:
            problem = f"is attached already, as parts[{seen[same]}]"
        if problem is not None:
            raise InvalidParams(
                f"params.parts[{index}].path: {problem}",
                data={
                    "field": f"parts[{index}].path",
                    "errors": [f"params.parts[{index}].path: {problem}"],
                },
            )
        seen[same] = index


def user_message(params: t.SessionChatParams, run_id: str) -> t.Message:
    now = ids.now_ms()
    parts: list[t.Part] = []
    for inp in params.parts:
        if isinstance(inp, t.TextInputPart):
            parts.append(
                t.TextPart(id=ids.new_id("prt"), text=inp.text, time=t.PartTime(start=now, end=now))
            )
        else:
            parts.append(
                t.FilePart(
                    id=ids.new_id("prt"), path=inp.path, mime=inp.mime or _guess_mime(inp.path)
                )
            )
    return t.Message(
        id=ids.new_id("msg"),
        session_id=params.session_id,
        role="user",
        time=t.MessageTime(created=now, completed=now),
        parts=parts,
        run_id=run_id,
    )


def _guess_mime(path: str) -> str:
    import mimetypes

    return mimetypes.guess_type(path)[0] or "application/octet-stream"
