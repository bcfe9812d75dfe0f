"""RunManager: admission of runs (reject, preempt, queue), abort, and the setup of each
run's turn; every run it started is aborted and persisted at shutdown.

A run is one `session/chat`. Its storage lifetime (lock, records, catalog row,
tool-context file) is `Store.running`; what the model is sent is `model_context`;
summaries are `compaction`; titles `titles`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import TYPE_CHECKING, Any

import attrs

from agentd import compaction, ids, instructions, model_context
from agentd.background import BackgroundTasks
from agentd.chat_input import check_file_parts, user_message, workspace_path
from agentd.config import ModelConfig
from agentd.errors import (
    InvalidParams,
    RequestCancelled,
    SessionBusy,
    StorageError,
)
from agentd.model_clients import ModelClients
from agentd.model_events import RetryNotice
from agentd.protocol import types as t
from agentd.run_stream import RunStream
from agentd.session import SessionManager
from agentd.storage.store import RunStorage
from agentd.titles import write_title
from agentd.turn import (
    DEFAULT_SYSTEM_PROMPT,
    Turn,
    TurnInput,
)

if TYPE_CHECKING:
    from agentd.tool_calls import Permissions

logger = logging.getLogger(__name__)

BACKGROUND_GRACE_S = 5.0


@attrs.define(eq=False)
class Run:
    run_id: str
    session_id: str
    params: t.SessionChatParams
    model: ModelConfig
    # Resolved when it is this run's turn (queue / preempt).
    ready: asyncio.Future[None]
    task: asyncio.Task[t.Message] | None = None
    turn: Turn | None = None
    status: str = "busy"
    abort_requested: bool = False
    # Never started (the session was aborted while it waited): nothing of it is stored.
    dropped: bool = False
    user_message: t.Message | None = None


class RunManager:
    def __init__(self, sessions: SessionManager) -> None:
        self.sessions = sessions
        self.store = sessions.store
        self.config = sessions.config
        self._active: dict[str, Run] = {}
        self._queues: dict[str, collections.deque[Run]] = {}
        self._background = BackgroundTasks()
        self._permissions: dict[str, Permissions] = {}
        self.models = ModelClients(sessions.config)
        self._closing = False

    # --- what the session layer asks (`session.RunsView`) ------------------------------

    def status_of(self, session_id: str) -> str | None:
        run = self._active.get(session_id)
        return run.status if run is not None else None

    def live_messages(self, session_id: str) -> dict[str, t.Message]:
        run = self._active.get(session_id)
        if run is None or run.turn is None:
            return {}
        message = run.turn.snapshot()
        return {message.id: message}

    def preload_provider(self) -> None:
        self.models.preload()

    # --- session/chat ------------------------------------------------------------------

    async def chat(self, p: t.SessionChatParams) -> t.SessionChatResult:
        """One run of `p`. Cancelling the request ($/cancelRequest) does to this run what
        session/abort does, and the request answers -32800."""
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
        )
        mode = p.on_busy or "reject"
        active = self._active.get(sid)
        queue = self._queues.setdefault(sid, collections.deque())
        # Decide and claim with no await in between: two chats arriving together must
        # not both see the session idle. (Another daemon's run is caught by the lock.)
        if active is None and not queue:
            self._active[sid] = run
            run.ready.set_result(None)
        elif mode == "reject":
            busy_run = active.run_id if active is not None else queue[0].run_id
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
                stream = RunStream(self.sessions.link, storage.log, sid, run.run_id)
                try:
                    message = await self._run_turn(run, storage, stream)
                finally:
                    stream.drain()
                storage.log.append(
                    {"k": "run", "run": run.run_id, "state": "end", "at": ids.now_ms()}
                )
                # Persisted before the title starts: the title begins while the run is
                # still winding down (an editor that quits on idle still gets it).
                await storage.log.flush()
                header = storage.header
                user = run.user_message
                if storage.first_run and header.get("parentId") is None and user is not None:
                    if not header.get("titleSet"):
                        failed = message.error is not None
                        self._background.spawn(
                            write_title(
                                self.sessions, self.models, sid, run.model, user, run_failed=failed
                            )
                        )
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

    async def _run_turn(self, run: Run, storage: RunStorage, stream: RunStream) -> t.Message:
        sessions = self.sessions
        sid = run.session_id
        header = storage.header
        scope_key = header["sessionScopeKey"]
        sessions.cache_run(
            run.run_id,
            {
                "sessionId": sid,
                "clientSessionId": header["clientSessionId"],
                "sessionScopeKey": scope_key,
            },
        )
        stream.status("busy")
        await sessions.emit_session_by_id(sid)

        # The tool machinery loads on the first chat, not at startup (initialize latency).
        from agentd.tool_calls import Permissions, ToolRunner, command_policy, tool_env

        env = tool_env(
            header.get("workspaceRoot") or sessions.editor.workspace_root,
            self.store.session_dir(sid),
            scope_key,
            self.store.toolctx.directory,
            search_timeout_s=self.config.search_timeout_s,
            config=self.config,
        )
        commands = command_policy(
            self.config,
            await sessions.sandbox_status(),
            sessions.sandbox_mode(sid, header),
            env,
            self.store.toolctx.run_paths(scope_key, run.run_id),
        )
        user = user_message(run.params, run.run_id)
        run.user_message = user
        stream.message(user)
        for part in user.parts:
            stream.part(user.id, part)
        log = storage.log
        if self.config.compaction and compaction.needs_compaction(await log.read(), run.model):
            await self._compact(sid, run.model, auto=True, stream=stream)
        # Read again at every run (an edit applies from the next one), off the loop.
        found = await asyncio.to_thread(instructions.gather, env.workspace_root, self.config)
        system = "\n\n".join(
            [
                self.config.system_prompt or DEFAULT_SYSTEM_PROMPT,
                *([found.text] if found.text else []),
                *(run.params.system or []),
            ]
        )
        messages = await model_context.model_messages(system, await log.read(), env.workspace_root)
        runner = ToolRunner(
            config=self.config,
            link=sessions.link,
            editor=sessions.editor,
            session_id=sid,
            run_id=run.run_id,
            scope_key=scope_key,
            tools=run.params.tools,
            client_tools=run.params.client_tools or [],
            mcp=sessions.mcp,
            env=env,
            permissions=self._permissions.setdefault(sid, Permissions()),
            commands=commands,
        )
        inp = TurnInput(
            session_id=sid,
            run_id=run.run_id,
            params=run.params,
            model=run.model,
            history=messages,
            user_message=user,
            instructions=found.files or None,
        )

        async def on_overflow() -> list[dict[str, Any]] | None:
            if not self.config.compaction:
                return None
            summary = await self._compact(sid, run.model, auto=True, stream=stream)
            if summary.error is not None:
                return None
            return await model_context.model_messages(
                system, await log.read(), env.workspace_root, exclude=turn.message.id
            )

        turn = Turn(
            inp,
            stream,
            self.models.client(run.model),
            runner,
            self.config,
            on_retry=lambda notice: self._on_retry(run, stream, notice),
            on_resume=lambda: self._on_resume(run, stream),
            on_overflow=on_overflow,
        )
        run.turn = turn
        # Aborted during setup: the message ends at once, without calling the model.
        return await turn.run(aborted=run.abort_requested)

    def _on_retry(self, run: Run, stream: RunStream, notice: RetryNotice) -> None:
        run.status = "retry"
        stream.status(
            "retry",
            attempt=notice.attempt,
            nextRetryAt=notice.next_retry_at_ms,
            message=notice.error.message,
        )

    def _on_resume(self, run: Run, stream: RunStream) -> None:
        run.status = "busy"
        stream.status("busy")

    # --- session/abort -----------------------------------------------------------------

    async def abort(self, p: t.SessionIdParams) -> t.SessionAbortResult:
        await self.sessions.get_row(p.session_id)  # 1001 when unknown
        run_id = await self.abort_session(p.session_id, drop_queue=True)
        return t.SessionAbortResult(aborted=run_id is not None, run_id=run_id)

    async def abort_session(self, session_id: str, *, drop_queue: bool) -> str | None:
        """Abort the active run (and drop queued ones); returns once it is persisted."""
        if drop_queue:
            self._drop_queue(session_id)
        run = self._active.get(session_id)
        if run is None:
            return None
        if run.task is None:  # claimed but not started yet: it never will
            run.dropped = True
            return None
        self._abort_run(run)
        await asyncio.wait({run.task})
        return run.run_id

    # --- titles, summaries -------------------------------------------------------------

    async def summarize(self, p: t.SessionSummarizeParams) -> t.MessageResult:
        row = await self.sessions.get_row(p.session_id)
        if self._active.get(p.session_id) is not None:
            raise SessionBusy(
                "session is busy",
                data={"sessionId": p.session_id, "runId": self._active[p.session_id].run_id},
            )
        model = self.models.resolve(p.model, row.model)
        # The lock, as a run holds it: a run in another daemon makes this 1002 too.
        async with self.store.exclusive(p.session_id):
            message = await self._compact(p.session_id, model, auto=False)
        if message.error is None:
            await self.sessions.refresh_totals(p.session_id)
        return t.MessageResult(message=message)

    async def _compact(
        self, sid: str, model: ModelConfig, *, auto: bool, stream: RunStream | None = None
    ) -> t.Message:
        return await compaction.compact(
            self.store.log_for(sid), self.models.client(model), model, auto=auto, stream=stream
        )

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
        tasks = {r.task for r in runs if r.task is not None}
        if tasks:
            await asyncio.wait(tasks)
        # A title being written when the editor quits is worth a short wait: otherwise
        # a session whose first answer just ended keeps "New session" for good.
        await self._background.close(BACKGROUND_GRACE_S)
        await self.models.aclose()
        await self.sessions.mcp.shutdown()
