"""RunManager: admission of runs (reject, preempt, queue), abort, holds (a revert or
unrevert holds the session as a run would: a chat meanwhile is busy or waits its turn);
every run it started is aborted and persisted at shutdown.

A run is one `session/chat`. Its storage lifetime (lock, records, catalog row,
tool-context file) is `Store.running`; what it does once admitted is `run_execution`
(with `model_context`, `compaction`, `titles`, `snapshots`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from agentd import ids, revert
from agentd.background import BackgroundTasks
from agentd.chat_input import check_file_parts, workspace_path
from agentd.editor import EditorInfo
from agentd.errors import (
    InvalidParams,
    RequestCancelled,
    SessionBusy,
    StorageError,
)
from agentd.model_clients import ModelClients
from agentd.protocol import types as t
from agentd.run_execution import Run, RunExecution
from agentd.run_stream import RunStream
from agentd.session import SessionManager
from agentd.storage.catalog import SessionRow
from agentd.storage.log import SessionLog

logger = logging.getLogger(__name__)

BACKGROUND_GRACE_S = 5.0


class RunManager:
    def __init__(self, sessions: SessionManager) -> None:
        self.sessions = sessions
        self.store = sessions.store
        self.config = sessions.config
        self._active: dict[str, Run] = {}
        # Sessions held by a revert or unrevert (no run may start), with its task.
        self._holds: dict[str, asyncio.Task[Any]] = {}
        self._queues: dict[str, collections.deque[Run]] = {}
        self._background = BackgroundTasks()
        self.models = ModelClients(sessions.config)
        self._execution = RunExecution(sessions, self.models, self._background)
        self._closing = False

    # --- what the session layer asks (`session.RunsView`) ------------------------------

    def status_of(self, session_id: str) -> str | None:
        run = self._active.get(session_id)
        if run is None:
            return "busy" if session_id in self._holds else None
        return run.status

    def live_messages(self, session_id: str) -> dict[str, t.Message]:
        """The message a run is writing, as the editors following it were told: deltas
        still pending are sent first."""
        run = self._active.get(session_id)
        if run is None or run.turn is None:
            return {}
        if run.stream is not None:
            run.stream.flush_deltas()
        message = run.turn.snapshot()
        return {message.id: message}

    def preload_provider(self) -> None:
        self.models.preload()

    # --- session/chat ------------------------------------------------------------------

    async def chat(
        self, p: t.SessionChatParams, row: SessionRow | None = None
    ) -> t.SessionChatResult:
        """One run of `p`. Cancelling the request ($/cancelRequest) does to this run what
        session/abort does, and the request answers -32800. `row`: the session's, when
        the caller has just read it (then nothing is awaited before the run is claimed or
        queued: a front end can hand a prompt over and know where it is)."""
        if row is None:
            row = await self.sessions.get_row(p.session_id)
        model = self.models.resolve(p.model, row.model)
        if not p.parts:
            raise InvalidParams(
                "params.parts: at least one part is needed", data={"field": "parts"}
            )
        if p.max_steps is not None and p.max_steps < 1:
            raise InvalidParams("params.maxSteps: must be at least 1", data={"field": "maxSteps"})
        check_file_parts(
            p.parts, workspace_path(row.workspace_root or self.sessions.editor.workspace_root)
        )
        if self._closing:
            raise RequestCancelled("agentd is shutting down")
        sid = p.session_id
        loop = asyncio.get_running_loop()
        run = Run(
            run_id=ids.new_id("run"),
            session_id=sid,
            params=p,
            model=model,
            ready=loop.create_future(),
            editor=self.sessions.editor,
        )
        self.sessions.link.follow(sid)
        mode = p.on_busy or "reject"
        active = self._active.get(sid)
        queue = self._queues.setdefault(sid, collections.deque())
        # Decide and claim with no await in between: two chats arriving together must
        # not both see the session idle. (Another daemon's run is caught by the lock.)
        if active is None and not queue and sid not in self._holds:
            self._active[sid] = run
            run.ready.set_result(None)
        elif mode == "reject":
            busy_run = active.run_id if active is not None else queue[0].run_id if queue else None
            raise SessionBusy("session is busy", data={"sessionId": sid, "runId": busy_run})
        elif mode == "preempt":
            queue.appendleft(run)
            if active is not None:
                self._abort_run(active)
        else:
            queue.append(run)
        try:
            await run.ready
        except asyncio.CancelledError:
            # Cancelled while it waited for its turn (or was just given it): it never starts.
            self._discard_waiting(run)
            run.dropped = True
        if run.dropped:
            if self._active.get(sid) is run:
                del self._active[sid]
                self._start_next(sid)
            raise RequestCancelled("the run was dropped: the session was aborted before it started")
        run.task = asyncio.create_task(self._execute(run), name=f"run {run.run_id}")
        try:
            message = await asyncio.shield(run.task)
        except asyncio.CancelledError:
            # Abort, and answer once the aborted run is persisted (a run that failed
            # meanwhile answers its own error).
            self._abort_run(run)
            await asyncio.wait({run.task})
            run.task.result()
            raise RequestCancelled("request cancelled; the run was aborted") from None
        return t.SessionChatResult(run_id=run.run_id, message=message)

    def _discard_waiting(self, run: Run) -> None:
        queue = self._queues.get(run.session_id)
        if queue is not None and run in queue:
            queue.remove(run)

    def _abort_run(self, run: Run) -> None:
        """Abort by cancelling the turn. Setup (lock, log, tool-context file) is never
        interrupted: an abort that arrives during it takes effect when the turn starts,
        so every run that began ends through `Store.running`, with an `aborted` message."""
        if run.abort_requested:
            return
        run.abort_requested = True
        if run.turn is not None and run.task is not None and not run.task.done():
            run.task.cancel()

    def _start_next(self, session_id: str) -> None:
        queue = self._queues.get(session_id)
        while queue:
            nxt = queue.popleft()
            if not nxt.ready.done():
                self._active[session_id] = nxt
                nxt.ready.set_result(None)
                return
        self._queues.pop(session_id, None)

    def _drop_queue(self, session_id: str) -> None:
        """Runs waiting for the session never start: their chats answer -32800."""
        for waiting in self._queues.pop(session_id, collections.deque()):
            waiting.dropped = True
            if not waiting.ready.done():
                waiting.ready.set_result(None)

    async def _execute(self, run: Run) -> t.Message:
        sid = run.session_id
        stream: RunStream | None = None
        try:
            async with self.store.running(sid, run.run_id, run.params.trace_id) as storage:
                stream = run.stream = RunStream(self.sessions.link, storage.log, sid, run.run_id)
                try:
                    message = await self._execution.run(run, storage, stream)
                finally:
                    stream.drain()
                storage.log.append(
                    {"k": "run", "run": run.run_id, "state": "end", "at": ids.now_ms()}
                )
                # Persisted before the title starts: the title begins while the run is
                # still winding down (an editor that quits on idle still gets it).
                await storage.log.flush()
                self._execution.after(run, storage, message)
                return message
        finally:
            self._active.pop(sid, None)
            if stream is not None:
                stream.status("idle")
                try:
                    await self.sessions.emit_session_by_id(sid)
                except StorageError:
                    pass
            self._start_next(sid)

    # --- session/abort -----------------------------------------------------------------

    async def abort(self, p: t.SessionIdParams) -> t.SessionAbortResult:
        await self.sessions.get_row(p.session_id)  # 1001 when unknown
        run_id = await self.abort_session(p.session_id, drop_queue=True)
        return t.SessionAbortResult(aborted=run_id is not None, run_id=run_id)

    async def abort_started_by(self, editor: EditorInfo) -> None:
        """Abort the runs that editor's chats started (and drop those it queued); returns
        once they are persisted."""
        for queue in self._queues.values():
            for waiting in [r for r in queue if r.editor is editor]:
                queue.remove(waiting)
                waiting.dropped = True
                if not waiting.ready.done():
                    waiting.ready.set_result(None)
        runs = [r for r in self._active.values() if r.editor is editor]
        for run in runs:
            if run.task is None:  # claimed but not started yet: it never will
                run.dropped = True
            else:
                self._abort_run(run)
        if runs:
            await asyncio.wait({r.task for r in runs if r.task is not None})

    def busy(self) -> bool:
        """Whether a run is active, waiting, or a revert holds a session."""
        return bool(self._active or self._holds or any(self._queues.values()))

    async def abort_session(self, session_id: str, *, drop_queue: bool) -> str | None:
        """Abort the active run (and drop queued ones); returns once it is persisted. A
        revert under way is not interrupted: this waits for it."""
        if drop_queue:
            self._drop_queue(session_id)
        hold = self._holds.get(session_id)
        if hold is not None:
            await asyncio.wait({hold})
        run = self._active.get(session_id)
        if run is None:
            return None
        if run.task is None:  # claimed but not started yet: it never will
            run.dropped = True
            return None
        self._abort_run(run)
        await asyncio.wait({run.task})
        return run.run_id

    # --- session/revert, session/unrevert ----------------------------------------------

    async def revert(self, p: t.SessionRevertParams) -> t.SessionRevertResult:
        return await self._holding(
            p.session_id, lambda log, root: revert.revert(log, root, self.config, p)
        )

    async def unrevert(self, p: t.SessionUnrevertParams) -> t.SessionRevertResult:
        return await self._holding(
            p.session_id, lambda log, root: revert.unrevert(log, root, self.config, p)
        )

    async def _holding(
        self,
        sid: str,
        job: Callable[[SessionLog, str | None], Awaitable[t.SessionRevertResult]],
    ) -> t.SessionRevertResult:
        """Run `job` holding the session: busy (1002) when a run is active or waiting, or
        another revert is under way; the session lock keeps other daemons' runs out."""
        row = await self.sessions.get_row(sid)
        active = self._active.get(sid)
        queue = self._queues.get(sid)
        if active is not None or queue or sid in self._holds:
            busy = active.run_id if active is not None else queue[0].run_id if queue else None
            raise SessionBusy("session is busy", data={"sessionId": sid, "runId": busy})
        if self._closing:
            raise RequestCancelled("agentd is shutting down")
        root = row.workspace_root or self.sessions.editor.workspace_root

        async def held() -> t.SessionRevertResult:
            async with self.store.holding(sid) as log:
                return await job(log, root)

        # Its own task: an abort or a delete of the session waits for it, and a
        # cancelled request does not stop it half way through the files.
        task = asyncio.create_task(held(), name=f"revert {sid}")
        self._holds[sid] = task
        try:
            result = await asyncio.shield(task)
        finally:
            if task.done():
                self._release_hold(sid, task)
            else:
                task.add_done_callback(lambda _: self._release_hold(sid, task))
        if not result.dry_run:
            await self.sessions.refresh_totals(sid)
        return result

    def _release_hold(self, sid: str, task: asyncio.Task[Any]) -> None:
        if self._holds.get(sid) is task:
            del self._holds[sid]
        if sid not in self._active:
            self._start_next(sid)

    # --- titles, summaries -------------------------------------------------------------

    async def summarize(self, p: t.SessionSummarizeParams) -> t.MessageResult:
        row = await self.sessions.get_row(p.session_id)
        if p.session_id in self._holds:
            raise SessionBusy("session is busy", data={"sessionId": p.session_id, "runId": None})
        if self._active.get(p.session_id) is not None:
            raise SessionBusy(
                "session is busy",
                data={"sessionId": p.session_id, "runId": self._active[p.session_id].run_id},
            )
        model = self.models.resolve(p.model, row.model)
        # The lock, as a run holds it: a run in another daemon makes this 1002 too.
        async with self.store.exclusive(p.session_id):
            message = await self._execution.compact(p.session_id, model, auto=False)
        if message.error is None:
            await self.sessions.refresh_totals(p.session_id)
        return t.MessageResult(message=message)

    # --- recovery and shutdown ---------------------------------------------------------

    async def recover(self) -> None:
        await self.store.recover()

    async def shutdown(self) -> None:
        """Abort every run and wait until each is persisted."""
        self._closing = True
        for sid in list(self._queues):
            self._drop_queue(sid)
        runs = list(self._active.values())
        for run in runs:
            self._abort_run(run)
        tasks = {r.task for r in runs if r.task is not None} | set(self._holds.values())
        if tasks:
            await asyncio.wait(tasks)
        # A title being written when the editor quits is worth a short wait: otherwise
        # a session whose first answer just ended keeps "New session" for good.
        await self._background.close(BACKGROUND_GRACE_S)
        await self.models.aclose()
        await self.sessions.mcp.shutdown()
