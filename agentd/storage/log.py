"""The session log: one append-only JSONL file per session, the source of truth.

Records (one JSON object per line, key `k` says which):
  session  the session's immutable fields, first line
  title    a new title; `generated: true` for one the model wrote, which never replaces
           a title the user gave (in session/create or session/update), whatever the
           order the records were written in
  message  a message's fields without parts (insert or replace by id)
  part     a part snapshot at a boundary (insert or replace by id)
  delta    streamed text since the last checkpoint, appended to a part's `text`
  run      a run starting (`state: start`, with the daemon's pid) or ending
  usage    usage and cost of a model call outside messages (titles, summaries)
  compact  history sent to the model is this summary message, the `keep` tail, then
           what follows (compaction)

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

logger = logging.getLogger(__name__)

LOG_NAME = "log.jsonl"
LOCK_NAME = "run.lock"
MAX_TOTAL = 2**63 - 1

# One thread writes every log: FIFO keeps each log's records in order, and the event
# loop never blocks on disk. (Measured: one executor hop per append is 3-5x cheaper
# than aiofiles' several hops for the same write.)
_writer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="agentd-log")


def cost_str(value: Decimal) -> str:
    """Costs are stored as exact decimal strings."""
    return format(value.normalize(), "f") if value else "0"


@attrs.define
class MessageState:
    meta: dict[str, Any]
    _parts: dict[str, dict[str, Any]] = attrs.Factory(dict)
    # Checkpointed text not yet joined into its part: joining per record would copy a
    # long answer's whole text once per checkpoint.
    _deltas: dict[str, list[str]] = attrs.Factory(dict)

    @property
    def parts(self) -> dict[str, dict[str, Any]]:
        if self._deltas:
            for part_id, chunks in self._deltas.items():
                part = self._parts[part_id]
                part["text"] = "".join([part.get("text", ""), *chunks])
            self._deltas = {}
        return self._parts

    def add_delta(self, part_id: str, text: str) -> None:
        if part_id in self._parts:
            self._deltas.setdefault(part_id, []).append(text)

    def set_part(self, part: dict[str, Any]) -> None:
        # A snapshot holds all the text so far: earlier deltas are included.
        self._deltas.pop(part["id"], None)
        self._parts[part["id"]] = part

    def to_wire(self) -> dict[str, Any]:
        return {**self.meta, "parts": list(self.parts.values())}


@attrs.define
class LogState:
    """A session log folded into its current state."""

    session: dict[str, Any] | None = None
    title: str | None = None
    # The user named the session: generated titles no longer apply.
    titled_by_user: bool = False
    messages: dict[str, MessageState] = attrs.Factory(dict)
    open_runs: dict[str, dict[str, Any]] = attrs.Factory(dict)
    extra_usage: dict[str, int] = attrs.Factory(dict)
    extra_cost: Decimal = Decimal(0)
    compact_from: str | None = None
    compact_keep: list[str] = attrs.Factory(list)
    last_at: int = 0
    bad_lines: int = 0

    def apply(self, rec: dict[str, Any]) -> None:
        kind = rec.get("k")
        if kind == "delta":
            msg = self.messages.get(rec["m"])
            if msg is not None:
                msg.add_delta(rec["p"], rec["d"])
            return
        if kind == "part":
            msg = self.messages.get(rec["m"])
            if msg is not None:
                msg.set_part(rec["part"])
            return
        if kind == "message":
            meta = rec["message"]
            existing = self.messages.get(meta["id"])
            if existing is None:
                self.messages[meta["id"]] = MessageState(meta=meta)
            else:
                existing.meta = meta
        elif kind == "session":
            self.session = rec["session"]
            self.title = self.title or rec["session"].get("title")
            self.titled_by_user = self.titled_by_user or bool(rec["session"].get("titleSet"))
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
            for key, value in rec["usage"].items():
                self.extra_usage[key] = self.extra_usage.get(key, 0) + int(value)
            self.extra_cost += Decimal(str(rec.get("cost", 0)))
        elif kind == "compact":
            self.compact_from = rec["from"]
            self.compact_keep = list(rec.get("keep") or ())
        at = rec.get("at")
        if isinstance(at, int) and at > self.last_at:
            self.last_at = at

    def usage_and_cost(self) -> tuple[dict[str, int], Decimal]:
        usage = dict(self.extra_usage)
        cost = self.extra_cost
        for msg in self.messages.values():
            for key, value in (msg.meta.get("usage") or {}).items():
                usage[key] = usage.get(key, 0) + int(value)
            if msg.meta.get("cost"):
                cost += Decimal(str(msg.meta["cost"]))
        return usage, cost

    def catalog_totals(self) -> dict[str, Any]:
        """The session's usage and cost as the catalog's columns."""
        usage, cost = self.usage_and_cost()

        def column(key: str) -> int:
            # SQLite integers are 64-bit; a total past that saturates (logs written
            # before usage was clamped at the provider may hold any figure).
            return min(max(usage.get(key, 0), 0), MAX_TOTAL)

        return {
            "input_tokens": column("inputTokens"),
            "output_tokens": column("outputTokens"),
            "reasoning_tokens": column("reasoningTokens"),
            "cache_read_tokens": column("cacheReadTokens"),
            "cache_write_tokens": column("cacheWriteTokens"),
            "cost": cost_str(cost),
        }


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
        # Only whole lines; a partial last line may still be being written.
        end = data.rfind(b"\n") + 1
        for line in data[:end].splitlines():
            if not line.strip():
                continue
            try:
                self._state.apply(orjson.loads(line))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                self._state.bad_lines += 1
                logger.warning("skipping unreadable line in %s", self.path)
        self._offset += end
        return self._state

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

    def try_acquire(self) -> bool:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the flock

    @property
    def held(self) -> bool:
        return self._fd is not None


def lock_is_free(directory: Path) -> bool:
    """True when no process holds the session's run lock."""
    lock = RunLock(directory)
    if not lock.path.exists():
        return True
    if lock.try_acquire():
        lock.release()
        return True
    return False
