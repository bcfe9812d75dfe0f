"""RunStream: what a run tells the editor and writes to the log, in one order.

- Notifications never wait on disk: log records are queued to the storage thread.
- Text deltas are coalesced adaptively: a delta goes out on the next turn of the event
  loop (no timer, no added delay at a human pace); deltas that arrive within one loop
  turn, or while the editor's pipe is congested, are merged into one `part/delta`.
  Any other notification of the run first flushes pending deltas, so nothing is
  reordered.
- Streaming text is checkpointed to the log at most every CHECKPOINT_S as the new
  text only (`delta` records), and a part is written whole at its boundaries: disk
  bytes stay proportional to the text, never rewritten per token. A part whose text
  the log already holds in part (its snapshot and deltas) ends with the rest of its
  text as a `delta` and its other fields as a `fields` record: its text is written
  once, not again whole at its end.
"""

from __future__ import annotations

import asyncio

from agentd.editor import EditorLink
from agentd.protocol import types as t
from agentd.protocol.converter import unstructure
from agentd.storage.log import SessionLog

CHECKPOINT_S = 0.2


class RunStream:
    def __init__(self, link: EditorLink, log: SessionLog, session_id: str, run_id: str) -> None:
        self.link = link
        self.log = log
        self.session_id = session_id
        self.run_id = run_id
        self._loop = asyncio.get_running_loop()
        # Pending editor deltas per (messageId, partId), in arrival order: a model that
        # alternates between parts (reasoning, text, reasoning...) while the editor is
        # behind still costs one pending delta per part, not one per token.
        self._pending: dict[tuple[str, str], list[str]] = {}
        self._flush_scheduled = False
        # Text not yet checkpointed, per (messageId, partId), in arrival order.
        self._unsaved: dict[tuple[str, str], list[str]] = {}
        # Per text or reasoning part: the text the log holds for it (its last snapshot's
        # text, then each checkpointed delta), in order.
        self._logged: dict[tuple[str, str], list[str]] = {}
        self._checkpoint_handle: asyncio.TimerHandle | None = None

    # --- editor ------------------------------------------------------------------------

    def notify(self, method: str, params: t.NotificationParams) -> None:
        self.flush_deltas()
        self.link.notify(method, params)

    def delta(self, message_id: str, part_id: str, text: str) -> None:
        if not text:
            return
        key = (message_id, part_id)
        pending = self._pending.get(key)
        if pending is None:
            self._pending[key] = [text]
        else:
            pending.append(text)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._scheduled_flush)
        unsaved = self._unsaved.get(key)
        if unsaved is None:
            self._unsaved[key] = [text]
        else:
            unsaved.append(text)
        if self._checkpoint_handle is None:
            self._checkpoint_handle = self._loop.call_later(CHECKPOINT_S, self.checkpoint)

    def _scheduled_flush(self) -> None:
        if self.link.congested():
            # The editor is behind: keep merging until its pipe drains.
            self.link.when_drained(self._scheduled_flush)
            return
        self._flush_scheduled = False
        self.flush_deltas()

    def flush_deltas(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        for (message_id, part_id), chunks in pending.items():
            self.link.notify(
                "part/delta",
                t.PartDeltaParams(
                    self.session_id, self.run_id, message_id, part_id, "".join(chunks)
                ),
            )

    # --- parts and messages ------------------------------------------------------------

    def part(self, message_id: str, part: t.Part, *, persist: bool = True) -> None:
        """A part appeared or changed state: tell the editor; log it whole when `persist`
        (at boundaries: creation with content, state changes, end)."""
        self.notify(
            "part/updated", t.PartUpdatedParams(self.session_id, self.run_id, message_id, part)
        )
        if persist:
            key = (message_id, part.id)
            # The record holds all text so far: unsaved deltas are now redundant.
            self._unsaved.pop(key, None)
            if not isinstance(part, t.TextPart | t.ReasoningPart):
                self.log.append({"k": "part", "m": message_id, "part": unstructure(part)})
                return
            logged = "".join(self._logged.pop(key, ()))
            self._logged[key] = [part.text]
            data = unstructure(part)
            if logged and part.text.startswith(logged):
                # Only what the log lacks: the rest of the text, then the other fields.
                data.pop("text", None)
                rest = part.text[len(logged) :]
                self.log.append(
                    *([{"k": "delta", "m": message_id, "p": part.id, "d": rest}] if rest else []),
                    {"k": "fields", "m": message_id, "part": data},
                )
            else:
                self.log.append({"k": "part", "m": message_id, "part": data})

    def message(self, message: t.Message, *, persist: bool = True) -> None:
        self.notify(
            "message/updated", t.MessageUpdatedParams(self.session_id, self.run_id, message=message)
        )
        if persist:
            data = unstructure(message)
            data.pop("parts", None)
            self.log.append({"k": "message", "message": data, "at": message.time.created})

    def status(
        self,
        status: t.SessionStatus,
        *,
        attempt: int | None = None,
        next_retry_at: int | None = None,
        message: str | None = None,
    ) -> None:
        self.notify(
            "session/status",
            t.SessionStatusParams(
                self.session_id, status, self.run_id, attempt, next_retry_at, message
            ),
        )

    def error(self, error: t.ErrorInfo) -> None:
        self.notify(
            "session/error", t.SessionErrorParams(self.session_id, self.run_id, error=error)
        )

    # --- disk --------------------------------------------------------------------------

    def checkpoint(self) -> None:
        self._checkpoint_handle = None
        unsaved, self._unsaved = self._unsaved, {}
        records = []
        for key, chunks in unsaved.items():
            text = "".join(chunks)
            records.append({"k": "delta", "m": key[0], "p": key[1], "d": text})
            logged = self._logged.get(key)
            if logged is not None:
                logged.append(text)
        if records:
            self.log.append(*records)

    def drain(self) -> None:
        """At the run's end: pending deltas to the editor, unsaved text to the log
        (queued; the log's owner flushes it)."""
        self.flush_deltas()
        if self._checkpoint_handle is not None:
            self._checkpoint_handle.cancel()
        self.checkpoint()
