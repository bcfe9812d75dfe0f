"""Store: everything agentd keeps about sessions, in one place.

- the data directory and its file modes,
- the catalog (SQLite, derived) and the session logs (the source of truth), with the
  open logs cached,
- the tool-context store,
- a run's storage lifetime (`running`): its lock, its records, its catalog row and
  its tool-context file, released on every path,
- recovery of runs whose daemon died.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs

from agentd import file_modes, ids
from agentd.config import Config
from agentd.errors import SessionBusy, SessionNotFound, StorageError
from agentd.protocol import types as t
from agentd.storage.catalog import Catalog, SessionRow
from agentd.storage.log import (
    LOCK_SETTLE_S,
    LOG_NAME,
    RunLock,
    SessionLog,
    encode,
    lock_is_free,
)
from agentd.storage.recovery import interrupted_records
from agentd.storage.reindex import reindex_sync
from agentd.toolctx import ToolContextStore

logger = logging.getLogger(__name__)

LOG_CACHE = 16


@attrs.define
class RunStorage:
    """What a run holds while `Store.running` is open."""

    log: SessionLog
    header: dict[str, Any]
    # The session had no message before this run.
    first_run: bool


class Store:
    def __init__(self, config: Config) -> None:
        self.data_dir = config.data_dir
        self.state_dir = config.state_dir
        self.sessions_dir = config.data_dir / "sessions"
        self.catalog = Catalog(config.data_dir / "catalog.sqlite3")
        self.toolctx = ToolContextStore(config.tool_context_dir)
        # Open logs with their folded state, least recently used first; idle ones beyond
        # LOG_CACHE are closed (their state is read again from disk when needed).
        self._logs: collections.OrderedDict[str, SessionLog] = collections.OrderedDict()
        # Sessions with a run inside `running` (their logs stay open).
        self._running: set[str] = set()

    # --- lifecycle ---------------------------------------------------------------------

    def open(self) -> None:
        """Open storage, rebuild the catalog if needed, and sweep stale tool-context
        files. Runs before serving, off the hot path."""
        file_modes.make_private_dir(self.data_dir)
        file_modes.make_private_dir(self.state_dir)
        # Left too open by an older agentd or a looser umask: made private.
        catalog = self.catalog.path.name
        problems = file_modes.tighten_tree(
            self.data_dir,
            lambda name: name == self.sessions_dir.name or name.startswith(catalog),
        )
        # The tool-context directory is checked by the tool-context store itself.
        toolctx = self.toolctx.directory.name
        problems += file_modes.tighten_tree(
            self.state_dir, lambda name: name == toolctx, checked_elsewhere=(toolctx,)
        )
        for problem in problems:
            logger.warning("file permissions: %s", problem)
        file_modes.make_private_dir(self.sessions_dir)
        usable = self.catalog.open_sync()
        if not usable and self.sessions_dir.exists() and any(os.scandir(self.sessions_dir)):
            reindex_sync(self.catalog.tables, self.sessions_dir)
        removed = self.toolctx.prepare()
        if removed:
            logger.info("removed %d stale tool-context files", removed)

    async def close(self) -> None:
        for log in self._logs.values():
            await log.flush()
            log.close()
        self._logs.clear()
        await asyncio.to_thread(self.catalog.close)

    # --- logs --------------------------------------------------------------------------

    def session_dir(self, session_id: str) -> Path:
        return self.sessions_dir / session_id

    def log_for(self, session_id: str) -> SessionLog:
        log = self._logs.get(session_id)
        if log is None:
            log = self._logs[session_id] = SessionLog(self.session_dir(session_id))
            self._evict_logs()
        else:
            self._logs.move_to_end(session_id)
        return log

    def _evict_logs(self) -> None:
        excess = len(self._logs) - LOG_CACHE
        for sid in list(self._logs)[:excess]:
            log = self._logs[sid]
            if sid in self._running or log.busy:
                continue
            del self._logs[sid]
            log.close()

    def drop_log(self, session_id: str) -> None:
        log = self._logs.pop(session_id, None)
        if log is not None:
            log.close()

    async def remove(self, session_id: str) -> None:
        """Forget a session's files: its open log (flushed), then its folder."""
        log = self._logs.pop(session_id, None)
        if log is not None:
            await log.flush()
            log.close()
        await asyncio.to_thread(shutil.rmtree, self.session_dir(session_id), True)

    async def add_whole(
        self,
        session_id: str,
        records: list[dict[str, Any]],
        row: dict[str, Any],
        runs: list[tuple[str, str, int, int | None]],
    ) -> bool:
        """Create a session whole at once (fork, import): its log is written under a
        temporary name and renamed into place, then its catalog row goes in. Until the
        rename there is no log (a crash leaves a folder nothing reads: reindex and every
        lookup need `log.jsonl`); until the row, no daemon lists it. A failure on the
        way removes the folder: there is never half a session. False when the catalog
        already holds its clientSessionId (nothing is left either)."""
        directory = self.session_dir(session_id)
        try:
            await asyncio.to_thread(_write_new_log, directory, records)
            if await self.catalog.insert_whole(row, runs):
                return True
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, directory, True)
            raise
        await asyncio.to_thread(shutil.rmtree, directory, True)
        return False

    # --- catalog rows ------------------------------------------------------------------

    async def get_row(self, session_id: str) -> SessionRow:
        """The session's catalog row; 1001 when there is none (or its log is gone)."""
        if not isinstance(session_id, str) or not ids.is_valid_id(session_id, "ses"):
            raise SessionNotFound(
                f"session not found: {session_id}", data={"sessionId": session_id}
            )
        row = await self.catalog.call(self._row_with_log, session_id)
        if row is None:
            self.drop_log(session_id)
            raise SessionNotFound(
                f"session not found: {session_id}", data={"sessionId": session_id}
            )
        return row

    def _row_with_log(self, session_id: str) -> SessionRow | None:
        """The catalog row, if the session's log (the source of truth) still exists; a
        row whose log was deleted by hand is dropped, so the catalog heals. On the
        catalog thread: the stat costs microseconds, and never the event loop's."""
        row = self.catalog.tables.get_session(session_id)
        if row is not None and not (self.session_dir(session_id) / LOG_NAME).exists():
            self._forget_row(session_id, "its log is missing")
            return None
        return row

    def _forget_row(self, session_id: str, why: str) -> None:
        logger.warning("session %s: %s; removed from the catalog", session_id, why)
        self.catalog.tables.delete_sessions([session_id])

    async def forget_broken(self, session_id: str, why: str) -> SessionNotFound:
        """A session whose log cannot be used (no header line): it leaves the catalog
        (its folder stays on disk, untouched) and the caller answers 1001."""
        await self.catalog.call(self._forget_row, session_id, why)
        self.drop_log(session_id)
        return SessionNotFound(
            f"session {session_id} cannot be used: {why}", data={"sessionId": session_id}
        )

    async def is_running_elsewhere(self, session_id: str) -> bool:
        """Another process holds the session's run lock."""
        if session_id in self._running:
            return False
        return not await asyncio.to_thread(
            lock_is_free, self.session_dir(session_id), LOCK_SETTLE_S
        )

    @contextlib.asynccontextmanager
    async def exclusive(self, session_id: str) -> AsyncIterator[None]:
        """Hold the session's run lock for work that must not overlap a run in any
        daemon (a summary on request); SessionBusy when it is held."""
        lock = RunLock(self.session_dir(session_id))
        if not await asyncio.to_thread(lock.try_acquire):
            row = await self.catalog.get(session_id)
            raise SessionBusy(
                "session is running in another agentd",
                data={"sessionId": session_id, "runId": row.run_id if row else None},
            )
        self._running.add(session_id)
        try:
            yield
        finally:
            lock.release()
            self._running.discard(session_id)

    # --- a run's lifetime --------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(
        self, session_id: str, run_id: str, trace_id: str | None
    ) -> AsyncIterator[RunStorage]:
        """Hold the session for one run: its lock (so a second daemon sees it busy), a
        `run` start record (after records closing any run a dead daemon left open),
        the catalog's busy row and the tool-context file. On the way out, on every
        path: the log is flushed, the catalog told the run ended (even when the log
        could not take it), the tool-context file and the lock released; a storage
        failure is then raised."""
        async with self.exclusive(session_id):
            log = self.log_for(session_id)
            state = await log.read()
            if state.session is None:
                raise await self.forget_broken(session_id, "its log has no session header")
            try:
                now = ids.now_ms()
                log.append(
                    # Holding the lock, any run still open in the log is one that could
                    # not end (its daemon died, or its last writes failed): closed first.
                    *interrupted_records(state, now),
                    {"k": "run", "run": run_id, "state": "start", "pid": os.getpid(), "at": now},
                )
                await self.catalog.start_run(run_id, session_id, now, os.getpid())
                await self.toolctx.write(_tool_context(state.session, run_id, trace_id, now))
                yield RunStorage(log=log, header=state.session, first_run=not state.messages)
            finally:
                await self._end_run(session_id, run_id, log)

    @contextlib.asynccontextmanager
    async def holding(self, session_id: str) -> AsyncIterator[SessionLog]:
        """Hold the session without a run (a revert): its lock, so that no run starts,
        here or in another daemon, until the way out. Runs a dead daemon left open are
        closed first (as `interrupted`), as a run's start would."""
        async with self.exclusive(session_id):
            log = self.log_for(session_id)
            state = await log.read()
            if state.session is None:
                raise await self.forget_broken(session_id, "its log has no session header")
            if state.open_runs:
                await self._close_open_runs(session_id, state.session["sessionScopeKey"], log)
            yield log
            await log.flush()

    async def _end_run(self, session_id: str, run_id: str, log: SessionLog) -> None:
        failure: StorageError | None = None
        try:
            try:
                await log.flush()
            except StorageError as exc:
                failure = exc
            state = await log.read()
            await self.catalog.end_run(
                run_id,
                session_id,
                ids.now_ms(),
                state.catalog_totals(),
                closed=failure is None,
            )
        finally:
            await self.toolctx.release(run_id)
        if failure is not None:
            raise failure

    # --- recovery ----------------------------------------------------------------------

    async def recover(self) -> None:
        """Close runs of daemons that died: `interrupted`, idle, no tool-context file."""
        for row in await self.catalog.busy():
            if not await asyncio.to_thread(lock_is_free, self.session_dir(row.id)):
                continue  # a live daemon is running it
            await self._close_interrupted(row.id, row.scope_key)

    async def _close_interrupted(self, session_id: str, scope_key: str) -> None:
        lock = RunLock(self.session_dir(session_id))
        if not await asyncio.to_thread(lock.try_acquire):
            return
        try:
            await self._close_open_runs(session_id, scope_key, self.log_for(session_id))
        finally:
            lock.release()

    async def _close_open_runs(self, session_id: str, scope_key: str, log: SessionLog) -> None:
        """Holding the lock: runs left open in the log end `interrupted`, the catalog row
        goes idle, a stale tool-context file goes."""
        state = await log.read()
        now = ids.now_ms()
        records = interrupted_records(state, now)
        if records:
            log.append(*records)
            await log.flush()
        state = await log.read()
        await self.catalog.end_run("", session_id, now, state.catalog_totals())
        if scope_key:
            await self.toolctx.discard_stale(scope_key)


def _write_new_log(directory: Path, records: list[dict[str, Any]]) -> None:
    """A new session's whole log, appearing at once under its name."""
    data = encode(records)
    partial = directory / (LOG_NAME + ".partial")
    try:
        directory.mkdir(mode=0o700)  # a new id: the folder must not exist yet
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            file_modes.write_all(fd, data)
        finally:
            os.close(fd)
        os.replace(partial, directory / LOG_NAME)
    except OSError as exc:
        raise StorageError(
            f"cannot write the session log ({exc.strerror}): {partial}",
            data={"errno": exc.errno, "path": str(partial)},
        ) from exc


def _tool_context(
    header: dict[str, Any], run_id: str, trace_id: str | None, now: int
) -> t.ToolContext:
    """The tool-context file's content: who and what the run works for (never secrets)."""
    return t.ToolContext(
        session_scope_key=header["sessionScopeKey"],
        session_id=header["id"],
        client_session_id=header["clientSessionId"],
        run_id=run_id,
        actor_key=header["actorKey"],
        project_key=header["projectKey"],
        project_id=header.get("projectId"),
        trace_id=trace_id or header.get("traceId") or "",
        workspace_root=header.get("workspaceRoot"),
        pid=os.getpid(),
        updated_at=now,
    )
