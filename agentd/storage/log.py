"""The session log: one append-only JSONL file per session, the source of truth.

Records (one JSON object per line, key `k` says which):
  session  the session's immutable fields, first line
  title    a new title; `generated: true` for one the model wrote, which never replaces
           a title the user gave (in session/create or session/update), whatever the
           order the records were written in
  model    the session's model from now on (session/update, ACP's model option)
  message  a message's fields without parts (insert or replace by id)
  part     a part snapshot at a boundary (insert or replace by id)
  delta    streamed text since the last checkpoint, appended to a part's `text`
  fields   a part's fields but its `text`, which stays what the log holds (its last
           snapshot's and the deltas since): how a streamed part ends without writing
           its text twice. An older agentd skips it (the part keeps its text, without
           the fields its end set, such as `time.end`)
  run      a run starting (`state: start`, with the daemon's pid) or ending
  usage    usage and cost of a model call outside messages (titles, summaries)
  compact  history sent to the model is this summary message, the `keep` tail, then
           what follows (compaction)
  snapshot the workspace snapshot before a step that may change files (`before`, or
           `error` when it could not be taken), then after it (`after`), by `step`
  revert   messages marked reverted and the files restored (`session/revert`)
  unrevert the latest revert undone (`session/unrevert`)

Appends are single `write()` calls of whole lines on an O_APPEND descriptor, so two
processes appending to one log never interleave within a line. Writes run on one
storage thread, in order, and callers do not wait for them unless they need
durability (`flush`). A torn last line (a crash mid-write) is skipped on read and a
newline is written before the next append.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import orjson

from agentd.errors import StorageError
from agentd.file_locks import flock_within
from agentd.history import encoded, message_to_chat

logger = logging.getLogger(__name__)

LOG_NAME = "log.jsonl"
LOCK_NAME = "run.lock"
# How long a run lock found held is tried again (see RunLock.try_acquire).
LOCK_SETTLE_S = 0.5
MAX_TOTAL = 2**63 - 1

# One thread writes every log: FIFO keeps each log's records in order, and the event
# loop never blocks on disk. (Measured: one executor hop per append is 3-5x cheaper
# than aiofiles' several hops for the same write.)
_writer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="agentd-log")


def cost_str(value: Decimal) -> str:
    """Costs are stored as exact decimal strings."""
    return format(value.normalize(), "f") if value else "0"


# Messages kept whole in memory: the latest ones (what session/messages shows by
# default, what a run's recovery and compaction look at). Older complete messages are
# *settled*: their parts are dropped from memory and read from the log when asked for
# (session/messages paging, export); what the model needs of them, their chat-format
# messages, is kept (a tenth of the size). A 20,000-message session thus costs a few
# MiB, not hundreds.
RECENT_MESSAGES = 100
# What a settled message keeps of its fields.
_SETTLED_META = ("id", "role", "runId", "time", "summary")


@attrs.define
class MessageState:
    meta: dict[str, Any]
    # None once settled (see RECENT_MESSAGES).
    _parts: dict[str, dict[str, Any]] | None = attrs.Factory(dict)
    # Checkpointed text not yet joined into its part: joining per record would copy a
    # long answer's whole text once per checkpoint.
    _deltas: dict[str, list[str]] = attrs.Factory(dict)
    # The byte range of the log that holds this message's records.
    start: int = 0
    end: int = 0
    # Its chat-format messages, computed and encoded once (see `agentd.history`); None
    # when not yet computed or changed since.
    chat: list[orjson.Fragment] | None = None

    @property
    def settled(self) -> bool:
        return self._parts is None

    @property
    def parts(self) -> dict[str, dict[str, Any]]:
        if self._parts is None:
            raise RuntimeError(f"message {self.meta.get('id')} is settled: read it from the log")
        if self._deltas:
            for part_id, chunks in self._deltas.items():
                part = self._parts[part_id]
                part["text"] = "".join([part.get("text", ""), *chunks])
            self._deltas = {}
        return self._parts

    @property
    def complete(self) -> bool:
        return bool((self.meta.get("time") or {}).get("completed"))

    def add_delta(self, part_id: str, text: str) -> None:
        if self._parts is not None and part_id in self._parts:
            self._deltas.setdefault(part_id, []).append(text)
            self.chat = None

    def set_part(self, part: dict[str, Any]) -> None:
        if self._parts is None:
            return
        # A snapshot holds all the text so far: earlier deltas are included.
        self._deltas.pop(part["id"], None)
        self._parts[part["id"]] = part
        self.chat = None

    def set_fields(self, fields: dict[str, Any]) -> None:
        """A `fields` record: the part's fields, its text kept."""
        if self._parts is None or fields["id"] not in self._parts:
            return
        text = self.parts[fields["id"]].get("text", "")
        self._parts[fields["id"]] = {**fields, "text": text}
        self.chat = None

    def settle(self, chat: list[orjson.Fragment]) -> None:
        self.chat = chat
        self.meta = {k: self.meta[k] for k in _SETTLED_META if k in self.meta}
        self._parts = None
        self._deltas = {}

    def to_wire(self) -> dict[str, Any]:
        return {**self.meta, "parts": list(self.parts.values())}


_USAGE_KEYS = (
    "inputTokens",
    "outputTokens",
    "reasoningTokens",
    "cacheReadTokens",
    "cacheWriteTokens",
)


@attrs.define
class LogState:
    """A session log folded into its current state."""

    session: dict[str, Any] | None = None
    title: str | None = None
    # The user named the session: generated titles no longer apply.
    titled_by_user: bool = False
    # The session's model: the header's, then the latest `model` record's.
    model: str | None = None
    messages: dict[str, MessageState] = attrs.Factory(dict)
    open_runs: dict[str, dict[str, Any]] = attrs.Factory(dict)
    compact_from: str | None = None
    compact_keep: list[str] = attrs.Factory(list)
    last_at: int = 0
    # The usage of the latest step (its step-finish part), unless a summary came after
    # it: what decides whether the next run compacts first.
    last_step_usage: dict[str, Any] | None = None
    # Running totals of every message's usage and cost, and of calls outside messages
    # (titles, summaries): kept as records are folded, never summed over the history.
    usage: dict[str, int] = attrs.Factory(lambda: dict.fromkeys(_USAGE_KEYS, 0))
    cost: Decimal = Decimal(0)
    # Settled messages that received records since (rare): read again from the log.
    touched: set[str] = attrs.Factory(set)
    # What happened to the workspace, in log order (see agentd.revert): steps' snapshots
    # ({"kind": "step", before, after, error...}), reverts and unreverts.
    workspace: list[dict[str, Any]] = attrs.Factory(list)
    # Messages a revert hid: kept, but out of what the model sees and session/messages.
    reverted: set[str] = attrs.Factory(set)
    # Reverts session/unrevert can still undo (latest last): those since the last new
    # message.
    pending_reverts: list[dict[str, Any]] = attrs.Factory(list)
    _steps: dict[str, dict[str, Any]] = attrs.Factory(dict)
    # Every compaction (summary id, kept ids), in order; the latest whose summary is not
    # reverted applies.
    _compactions: list[tuple[str, list[str]]] = attrs.Factory(list)
    # Message ids in log order, and those out of the recent window not yet settled.
    _order: list[str] = attrs.Factory(list)
    _outside: set[str] = attrs.Factory(set)

    def apply(self, rec: dict[str, Any], start: int = 0, end: int = 0) -> None:
        """Fold one record; `start`/`end` are its byte range in the log."""
        kind = rec.get("k")
        if kind in ("delta", "part", "fields"):
            msg = self.messages.get(rec["m"])
            if msg is None:
                return
            msg.end = end
            if msg.settled:
                self.touched.add(rec["m"])
            elif kind == "delta":
                msg.add_delta(rec["p"], rec["d"])
            elif kind == "fields":
                msg.set_fields(rec["part"])
            else:
                part = rec["part"]
                msg.set_part(part)
                if part.get("type") == "step-finish":
                    self.last_step_usage = part.get("usage") or {}
            return
        if kind == "message":
            meta = rec["message"]
            existing = self.messages.get(meta["id"])
            if existing is None:
                # A new message: the reverts before it are for good.
                self.pending_reverts.clear()
                self._count(meta, +1)
                self.messages[meta["id"]] = MessageState(meta=meta, start=start, end=end)
                self._order.append(meta["id"])
                if len(self._order) > RECENT_MESSAGES:
                    self._left_window(self._order[-RECENT_MESSAGES - 1])
            else:
                self._count(existing.meta, -1)
                self._count(meta, +1)
                existing.end = end
                if existing.settled:
                    self.touched.add(meta["id"])
                else:
                    existing.meta = meta
                    existing.chat = None
                    if meta["id"] in self._outside:
                        self._try_settle(meta["id"])
            if meta.get("summary"):
                self.last_step_usage = None
        elif kind == "session":
            self.session = rec["session"]
            self.model = rec["session"].get("model")
            self.title = self.title or rec["session"].get("title")
            self.titled_by_user = self.titled_by_user or bool(rec["session"].get("titleSet"))
        elif kind == "model":
            self.model = rec["model"]
        elif kind == "title":
            if not rec.get("generated"):
                self.titled_by_user = True
                self.title = rec["title"]
            elif not self.titled_by_user:
                self.title = rec["title"]
        elif kind == "run":
            if rec["state"] == "start":
                self.open_runs[rec["run"]] = rec
            else:
                self.open_runs.pop(rec["run"], None)
        elif kind == "usage":
            self._add(rec["usage"], rec.get("cost", 0), +1)
        elif kind == "compact":
            self._compactions.append((rec["from"], list(rec.get("keep") or ())))
            self._apply_compaction()
        elif kind == "snapshot":
            self._snapshot(rec)
        elif kind == "revert":
            self.reverted.update(rec["messages"])
            self.pending_reverts.append(rec)
            if rec.get("before"):  # it changed files
                self.workspace.append({**rec, "kind": "revert"})
            self._apply_compaction()
            # The last step's usage no longer says how big the history is.
            self.last_step_usage = None
        elif kind == "unrevert":
            if self.pending_reverts:
                self.pending_reverts.pop()
            self.reverted.difference_update(rec["messages"])
            if rec.get("before"):
                self.workspace.append({**rec, "kind": "unrevert"})
            self._apply_compaction()
            self.last_step_usage = None
        at = rec.get("at")
        if isinstance(at, int) and at > self.last_at:
            self.last_at = at

    def _snapshot(self, rec: dict[str, Any]) -> None:
        step = rec["step"]
        event = self._steps.get(step)
        if event is None:
            event = {
                "kind": "step",
                "step": step,
                "m": rec.get("m"),
                "ws": rec.get("ws"),
                "before": rec.get("before"),
                "after": None,
                "error": rec.get("error"),
            }
            self._steps[step] = event
            self.workspace.append(event)
        elif "after" in rec:
            event["after"] = rec["after"]

    def _apply_compaction(self) -> None:
        for summary, keep in reversed(self._compactions):
            if summary not in self.reverted:
                self.compact_from, self.compact_keep = summary, keep
                return
        self.compact_from, self.compact_keep = None, []

    def compaction_kept(self, summary_id: str) -> list[str] | None:
        """The ids a compaction whose summary is `summary_id` kept verbatim; None when
        that message is no summary (a fork or an export ending before the latest summary
        uses the one in effect there)."""
        for summary, keep in reversed(self._compactions):
            if summary == summary_id:
                return keep
        return None

    def visible(self) -> list[str]:
        """Message ids in order, reverted ones left out."""
        if not self.reverted:
            return list(self.messages)
        return [i for i in self.messages if i not in self.reverted]

    def _count(self, meta: dict[str, Any], sign: int) -> None:
        usage = meta.get("usage")
        if usage or meta.get("cost"):
            self._add(usage or {}, meta.get("cost") or 0, sign)

    def _add(self, usage: dict[str, Any], cost: Any, sign: int) -> None:
        for key, value in usage.items():
            self.usage[key] = self.usage.get(key, 0) + sign * int(value)
        self.cost += sign * Decimal(str(cost))

    def _left_window(self, message_id: str) -> None:
        """A new message pushed `message_id` out of the recent window."""
        self._outside.add(message_id)
        self._try_settle(message_id)

    def _try_settle(self, message_id: str) -> None:
        msg = self.messages[message_id]
        # An incomplete message (its run still open) settles when it completes.
        if msg.complete and not _has_file_parts(msg):
            msg.settle(encoded(message_to_chat(msg.to_wire())))
            self._outside.discard(message_id)

    def usage_and_cost(self) -> tuple[dict[str, int], Decimal]:
        return dict(self.usage), self.cost

    def catalog_totals(self) -> dict[str, Any]:
        """The session's usage and cost as the catalog's columns."""

        def column(key: str) -> int:
            # SQLite integers are 64-bit; a total past that saturates (logs written
            # before usage was clamped at the provider may hold any figure).
            return min(max(self.usage.get(key, 0), 0), MAX_TOTAL)

        return {
            "input_tokens": column("inputTokens"),
            "output_tokens": column("outputTokens"),
            "reasoning_tokens": column("reasoningTokens"),
            "cache_read_tokens": column("cacheReadTokens"),
            "cache_write_tokens": column("cacheWriteTokens"),
            "cost": cost_str(self.cost),
        }


def _has_file_parts(msg: MessageState) -> bool:
    # A user message's attached files are read again at every run (their text may have
    # changed): such a message keeps its parts.
    return msg.meta.get("role") == "user" and any(
        p.get("type") == "file" for p in msg.parts.values()
    )


def encode(records: Iterable[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


class SessionLog:
    """Appends to and reads one session's log. Reads are incremental: the folded state
    is kept with the byte offset it covers, and only new bytes are read next time."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / LOG_NAME
        self._fd: int | None = None
        self._closed = False
        self._maybe_torn = False
        self._last: concurrent.futures.Future[None] | None = None
        self._state = LogState()
        self._offset = 0
        self._read_lock = asyncio.Lock()

    # --- writing -----------------------------------------------------------------------

    def _open(self) -> int:
        if self._fd is None:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._fd = os.open(
                self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
            # A crash may have left a partial last line.
            self._maybe_torn = True
        return self._fd

    def _write(self, data: bytes) -> None:
        try:
            fd = self._open()
            if self._maybe_torn:
                # A crash or a failed write may have left a partial line: end it first.
                self._end_torn_line(fd)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        except OSError as exc:
            self._maybe_torn = True
            raise StorageError(
                f"cannot write the session log ({exc.strerror}): {self.path}",
                data={"errno": exc.errno, "path": str(self.path)},
            ) from exc
        if self._closed:
            # A late append to a log already closed (evicted from the cache): do not
            # keep a descriptor nobody will close.
            self._fd = None
            os.close(fd)

    def _end_torn_line(self, fd: int) -> None:
        size = os.fstat(fd).st_size
        if size:
            rfd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                torn = os.pread(rfd, 1, size - 1) != b"\n"
            finally:
                os.close(rfd)
            if torn:
                os.write(fd, b"\n")
        self._maybe_torn = False

    def append(self, *records: dict[str, Any]) -> concurrent.futures.Future[None]:
        """Queue records for writing; returns at once. Serialisation happens now, so the
        caller may keep mutating what it passed."""
        data = encode(records)
        self._last = _writer.submit(self._write, data)
        return self._last

    @property
    def busy(self) -> bool:
        """Writes are still queued."""
        return self._last is not None and not self._last.done()

    async def flush(self) -> None:
        """Wait until every record appended so far is written; raises the write error."""
        if self._last is not None:
            await asyncio.wrap_future(self._last)

    def close(self) -> None:
        self._closed = True

        def _close() -> None:
            fd, self._fd = self._fd, None
            if fd is not None:
                os.close(fd)

        # On the writer thread, after every queued write.
        _writer.submit(_close)

    # --- reading -----------------------------------------------------------------------

    def _read_new(self) -> LogState:
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < self._offset:  # replaced or truncated: start over
                    self._state, self._offset = LogState(), 0
                f.seek(self._offset)
                data = f.read(size - self._offset)
        except FileNotFoundError:
            return self._state
        state = self._state
        # Only whole lines; a partial last line may still be being written.
        end = data.rfind(b"\n") + 1
        pos = 0
        while pos < end:
            nl = data.index(b"\n", pos)
            line = data[pos:nl]
            if line.strip():
                try:
                    state.apply(orjson.loads(line), self._offset + pos, self._offset + nl + 1)
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
                    logger.warning("skipping unreadable line in %s", self.path)
            pos = nl + 1
        self._offset += end
        if state.touched:
            self._refold(state.touched)
            state.touched = set()
        return state

    def _fold_span(self, ids: set[str]) -> dict[str, MessageState]:
        """Messages `ids` folded whole again from their byte ranges in the log."""
        spans = [self._state.messages[i] for i in ids if i in self._state.messages]
        if not spans:
            return {}
        first = min(m.start for m in spans)
        last = max(m.end for m in spans)
        with open(self.path, "rb") as f:
            f.seek(first)
            data = f.read(last - first)
        folded: dict[str, MessageState] = {}
        for line in data.splitlines():
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            kind = rec.get("k")
            if kind == "message" and rec["message"].get("id") in ids:
                meta = rec["message"]
                if meta["id"] in folded:
                    folded[meta["id"]].meta = meta
                else:
                    folded[meta["id"]] = MessageState(meta=meta)
            elif kind in ("part", "delta", "fields") and rec.get("m") in folded:
                msg = folded[rec["m"]]
                if kind == "part":
                    msg.set_part(rec["part"])
                elif kind == "fields":
                    msg.set_fields(rec["part"])
                else:
                    msg.add_delta(rec["p"], rec["d"])
        return folded

    def _refold(self, ids: set[str]) -> None:
        """Settled messages that received records: their chat-format messages again."""
        for message_id, fresh in self._fold_span(ids).items():
            self._state.messages[message_id].settle(encoded(message_to_chat(fresh.to_wire())))

    def read_messages_sync(self, ids: list[str]) -> list[dict[str, Any]]:
        """Messages `ids` whole, as wire dicts, in the order given: from memory when they
        are recent, from the log when settled."""
        messages = self._state.messages
        settled = {i for i in ids if i in messages and messages[i].settled}
        loaded = self._fold_span(settled) if settled else {}
        return [(loaded[i] if i in loaded else messages[i]).to_wire() for i in ids]

    async def read_messages(self, ids: list[str]) -> list[dict[str, Any]]:
        async with self._read_lock:
            return await asyncio.to_thread(self.read_messages_sync, ids)

    def read_sync(self) -> LogState:
        return self._read_new()

    async def read(self) -> LogState:
        """The folded state, including what other processes appended."""
        async with self._read_lock:
            if self._last is not None and not self._last.done():
                # Wait for queued writes; a failed one is its writer's error, not ours.
                await asyncio.wait([asyncio.wrap_future(self._last)])
            return await asyncio.to_thread(self._read_new)


def read_log_file(path: Path) -> LogState:
    """Fold a whole log in one go (reindex, recovery)."""
    log = SessionLog(path.parent)
    return log.read_sync()


class RunLock:
    """An OS file lock held while a run is active, so one writer runs a session at a time
    across processes. The OS releases it when the process dies: a crash never leaves a
    session stuck busy."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_NAME
        self._fd: int | None = None

    def try_acquire(self, settle_s: float = LOCK_SETTLE_S) -> bool:
        """Take the lock if no other process holds it; blocks up to `settle_s`.

        A flock belongs to the open file, and a process agentd starts (a command, git
        taking a snapshot) holds a copy of every descriptor from its fork until its exec,
        the lock's too: one run's lock can outlive the run by as long as the child
        waits to be scheduled (tens of milliseconds on a loaded machine), so a lock
        found held is tried again for a moment before the session counts as busy."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        if not flock_within(fd, settle_s):
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the flock


def lock_is_free(directory: Path, settle_s: float = 0.0) -> bool:
    """True when no process holds the session's run lock (tried for `settle_s`)."""
    lock = RunLock(directory)
    if not lock.path.exists():
        return True
    if lock.try_acquire(settle_s):
        lock.release()
        return True
    return False
