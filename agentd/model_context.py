"""What the model is sent for a run: the system prompt, then the session's history
from its latest summary on (the summary, the tail kept verbatim, what came after), in
the Chat Completions format, with attached files read again. Reverted messages are left
out (`session/revert`)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agentd.history import encoded, message_to_chat
from agentd.storage.log import LogState, MessageState

# What the attached files of a session may add to one request, newest first.
ATTACHED_TOTAL_CHARS = 2_000_000


def chat_of(msg: MessageState, wire: dict[str, Any] | None = None) -> list[Any]:
    """A message's chat-format messages (file parts by name only), converted and
    encoded once per version of a complete message (a long session's history is not
    converted again at every run)."""
    if msg.chat is not None:
        return msg.chat
    wire = wire if wire is not None else msg.to_wire()
    if not msg.complete or _has_files(wire):
        return message_to_chat(wire)
    msg.chat = encoded(message_to_chat(wire))
    return msg.chat


async def model_messages(
    system: str, state: LogState, root: Path, exclude: str | None = None
) -> list[Any]:
    """The system prompt and the history; `exclude` leaves out a message still being
    written (the run's own assistant message, when a run compacts mid-way)."""
    return [{"role": "system", "content": system}, *await history(state, root, exclude)]


async def history(state: LogState, root: Path, exclude: str | None = None) -> list[Any]:
    msgs: Iterable[MessageState] = state.messages.values()
    if state.compact_from and state.compact_from in state.messages:
        # The model sees the summary, then the tail kept verbatim, then what came after.
        order = list(state.messages)
        after = order[order.index(state.compact_from) + 1 :]
        msgs = [state.messages[state.compact_from]]
        msgs += [state.messages[i] for i in state.compact_keep if i in state.messages]
        msgs += [state.messages[i] for i in after]
    if state.reverted:
        # A revert's messages stay in the log, out of what the model sees.
        msgs = [m for m in msgs if m.meta["id"] not in state.reverted]
    # Runs at every chat over the whole history (20,000 messages in a long session):
    # kept to a cached list's extend per message. Messages with attached files are
    # converted again each time: their files are read again (in a thread).
    out: list[Any] = []
    extend = out.extend
    with_files: list[tuple[int, dict[str, Any]]] = []
    for msg in msgs:
        chat = msg.chat
        if chat is None:
            if msg.meta["id"] == exclude:
                continue
            wire = msg.to_wire()
            if _has_files(wire):
                with_files.append((len(out), wire))
                continue
            chat = chat_of(msg, wire)
        extend(chat)
    if with_files:
        read = await _with_file_text([w for _, w in with_files], root)
        # Inserted back to front, so earlier positions stay right.
        for (at, _), wire in reversed(list(zip(with_files, read, strict=True))):
            out[at:at] = message_to_chat(wire)
    return out


async def _with_file_text(messages: list[dict[str, Any]], root: Path) -> list[dict[str, Any]]:
    """User messages' file parts with the text the model reads (`content`). Every file is
    read again on every run, off the event loop; a file that cannot be attached any more
    (or a path an older agentd stored unchecked) becomes a note, never an error."""
    paths = [
        part.get("path")
        for msg in messages
        if msg.get("role") == "user"
        for part in msg.get("parts") or []
        if part.get("type") == "file"
    ]
    if not paths:
        return messages
    texts = iter(await asyncio.to_thread(_read_newest_first, root, paths))
    out = []
    for msg in messages:
        if msg.get("role") == "user":
            parts = [
                {**part, "content": next(texts)} if part.get("type") == "file" else part
                for part in msg.get("parts") or []
            ]
            msg = {**msg, "parts": parts}
        out.append(msg)
    return out


def _read_newest_first(root: Path, paths: list[Any]) -> list[str]:
    """The attached files' texts, in `paths`' order, read newest first within
    ATTACHED_TOTAL_CHARS: older files past it are a note, not read again (a session that
    attached many large files must not make every run send and read them all)."""
    from agentd.tools.files import attached_file_text

    budget = ATTACHED_TOTAL_CHARS
    texts: list[str] = []
    for path in reversed(paths):
        if budget <= 0:
            texts.append(
                f"[file {path}: not attached again: the files attached in this session are "
                f"over {ATTACHED_TOTAL_CHARS // 1_000_000} MB; the newest are sent]"
            )
            continue
        text = attached_file_text(root, path)
        budget -= len(text)
        texts.append(text)
    texts.reverse()
    return texts


def _has_files(wire: dict[str, Any]) -> bool:
    return wire.get("role") == "user" and any(p.get("type") == "file" for p in wire["parts"])
