"""RunManager: owns every run (strong references), busy handling (reject, preempt,
queue), abort, crash recovery, titles and compaction.

A run is one `session/chat`. It holds the session's run lock (an OS file lock, so a
second daemon sees the session busy) and the tool-context file for as long as it is
active; both are released on every path.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from agentd import ids
from agentd.config import ModelConfig
from agentd.errors import (
    InvalidParams,
    ModelNotConfigured,
    ProviderError,
    RequestCancelled,
    SessionBusy,
    SessionNotFound,
    StorageError,
)
from agentd.history import chat_role, chat_size, encoded, message_to_chat
from agentd.protocol import types as t
from agentd.protocol.converter import unstructure
from agentd.run_stream import RunStream
from agentd.session import SessionManager
from agentd.storage.catalog import DEFAULT_TITLE
from agentd.storage.log import LogState, MessageState, RunLock, lock_is_free
from agentd.turn import (
    DEFAULT_SYSTEM_PROMPT,
    Turn,
    TurnInput,
    step_cost,
    usage_from_provider,
)

if TYPE_CHECKING:
    from agentd.tool_calls import Permissions

logger = logging.getLogger(__name__)

TITLE_PROMPT = (
    "You write short titles for conversations. Reply with a short title (at most 6 words) "
    "for the user's message: no quotes, no trailing punctuation."
)
SUMMARY_PROMPT = (
    "Summarize the conversation so far for a continuation: the user's goals, decisions, "
    "facts learned, files touched and open tasks. Be complete but concise."
)
KEEP_TAIL_MESSAGES = 4
BACKGROUND_GRACE_S = 5.0
CONTEXT_MARGIN = 0.1


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


class RunManager:
    def __init__(self, sessions: SessionManager) -> None:
        self.sessions = sessions
        self.config = sessions.config
        sessions.runs = self
        self._active: dict[str, Run] = {}
        self._queues: dict[str, collections.deque[Run]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._permissions: dict[str, Permissions] = {}
        self._providers: dict[str, Any] = {}
        self._closing = False

    # --- queries from the session layer ------------------------------------------------

    def status_of(self, session_id: str) -> str | None:
        run = self._active.get(session_id)
        return run.status if run is not None else None

    def owns(self, session_id: str) -> bool:
        return session_id in self._active

    def live_messages(self, session_id: str) -> dict[str, t.Message]:
        run = self._active.get(session_id)
        if run is None or run.turn is None:
            return {}
        message = run.turn.snapshot()
        return {message.id: message}

    # --- providers ---------------------------------------------------------------------

    def provider_for(self, model: ModelConfig) -> Any:
        provider = self._providers.get(model.provider)
        if provider is None:
            # Imported here, on the first turn: startup must not pay for openai.
            from agentd.provider import ChatProvider, ProviderConfig

            cfg = self.config.providers[model.provider]
            provider = ChatProvider(
                ProviderConfig(
                    base_url=cfg.base_url,
                    api_key=cfg.api_key,
                    max_attempts=cfg.max_attempts,
                    first_token_timeout_s=cfg.first_token_timeout_s,
                    stall_timeout_s=cfg.stall_timeout_s,
                    headers=dict(cfg.headers),
                )
            )
            self._providers[model.provider] = provider
        return provider

    def preload_provider(self) -> None:
        """When a model is configured, load the provider's SDK in a background thread so
        the first turn does not wait for the import. Startup itself never loads it."""
        if self.config.default_model is None and not self.config.models:
            return
        import threading

        def load() -> None:
            from agentd.provider import ChatProvider

            try:
                ChatProvider.preload()
            except Exception:  # the first turn will report it properly
                logger.debug("provider preload failed", exc_info=True)

        threading.Thread(target=load, name="agentd-preload", daemon=True).start()

    def resolve_model(self, *names: str | None) -> ModelConfig:
        name = next((n for n in names if n), None)
        model = self.config.resolve_model(name)
        if model is None:
            if name:
                raise ModelNotConfigured(f"unknown model: {name}", data={"model": name})
            raise ModelNotConfigured(
                "no model configured: set AGENTD_MODEL (and OPENAI_BASE_URL / OPENAI_API_KEY) "
                "or default_model in the configuration file"
            )
        return model

    # --- session/chat ------------------------------------------------------------------

    async def chat(self, p: t.SessionChatParams) -> t.SessionChatResult:
        """One run of `p`. Cancelling the request ($/cancelRequest) does to this run what
        session/abort does, and the request answers -32800."""
        row = await self.sessions.get_row(p.session_id)
        model = self.resolve_model(p.model, row[8])
        if not p.parts:
            raise InvalidParams(
                "params.parts: at least one part is needed", data={"field": "parts"}
            )
        if p.max_steps is not None and p.max_steps < 1:
            raise InvalidParams("params.maxSteps: must be at least 1", data={"field": "maxSteps"})
        self._check_file_parts(
            p.parts, _workspace_path(row[7] or self.sessions.editor.workspace_root)
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
        so every run that began ends through `_finish`, with an `aborted` message."""
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

    async def _execute(self, run: Run) -> t.Message:
        sessions = self.sessions
        sid = run.session_id
        lock = RunLock(sessions.session_dir(sid))
        if not await asyncio.to_thread(lock.try_acquire):
            self._active.pop(sid, None)
            self._start_next(sid)
            row = await sessions.catalog.run(sessions.catalog.get_session, sid)
            raise SessionBusy(
                "session is running in another agentd",
                data={"sessionId": sid, "runId": row[13] if row else None},
            )
        log = sessions.log_for(sid)
        stream = RunStream(sessions.link, log, sid, run.run_id)
        try:
            state = await log.read()
            if state.session is None:
                raise await sessions.forget_broken(sid, "its log has no session header")
            header = state.session
            scope_key = header["sessionScopeKey"]
            first_run = not state.messages
            now = ids.now_ms()
            # Holding the lock, any run still open in the log is one that could not end
            # (its daemon died, or its last writes failed): close it first.
            leftover = _interrupted_records(state, now)
            trace_id = run.params.trace_id or header.get("traceId") or ""
            sessions.cache_run(
                run.run_id,
                {
                    "sessionId": sid,
                    "clientSessionId": header["clientSessionId"],
                    "sessionScopeKey": scope_key,
                },
            )
            log.append(
                *leftover,
                {"k": "run", "run": run.run_id, "state": "start", "pid": os.getpid(), "at": now},
            )
            await sessions.catalog.run(
                sessions.catalog.start_run, run.run_id, sid, now, os.getpid()
            )
            await sessions.toolctx.write(
                {
                    "sessionScopeKey": scope_key,
                    "sessionId": sid,
                    "clientSessionId": header["clientSessionId"],
                    "runId": run.run_id,
                    "actorKey": header["actorKey"],
                    "projectKey": header["projectKey"],
                    "projectId": header.get("projectId"),
                    "traceId": trace_id,
                    "learningMode": "interactive",
                    "allowLearningWrite": True,
                    "workspaceRoot": header.get("workspaceRoot"),
                    "pid": os.getpid(),
                    "updatedAt": now,
                }
            )
            stream.status("busy")
            await sessions.emit_session_by_id(sid)

            # The tool machinery loads on the first chat, not at startup (initialize latency).
            from agentd.tool_calls import Permissions, ToolRunner, command_policy, tool_env

            workspace = header.get("workspaceRoot") or sessions.editor.workspace_root
            env = tool_env(
                workspace,
                sessions.session_dir(sid),
                scope_key,
                sessions.toolctx.directory,
                search_timeout_s=self.config.search_timeout_s,
                config=self.config,
            )
            commands = command_policy(
                self.config,
                await sessions.sandbox_status(),
                sessions.sandbox_mode(sid, header),
                env,
                sessions.toolctx.run_paths(scope_key, run.run_id),
            )
            user = self._user_message(run)
            stream.message(user)
            for part in user.parts:
                stream.part(user.id, part)
            state = await log.read()
            if self._needs_compaction(state, run.model):
                await self.compact(sid, run.model, auto=True, stream=stream)
                state = await log.read()
            messages = await self._chat_messages(run, state, env.workspace_root)
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
            )

            async def on_overflow() -> list[dict[str, Any]] | None:
                if not self.config.compaction:
                    return None
                summary = await self.compact(sid, run.model, auto=True, stream=stream)
                if summary.error is not None:
                    return None
                return await self._chat_messages(
                    run, await log.read(), env.workspace_root, exclude=turn.message.id
                )

            turn = Turn(
                inp,
                stream,
                self.provider_for(run.model),
                runner,
                self.config,
                on_retry=lambda notice: self._on_retry(run, stream, notice),
                on_resume=lambda: self._on_resume(run, stream),
                on_overflow=on_overflow,
            )
            run.turn = turn
            # Aborted during setup: the message ends at once, without calling the model.
            message = await turn.run(aborted=run.abort_requested)
            log.append({"k": "run", "run": run.run_id, "state": "end", "at": ids.now_ms()})
            # Persisted before the title starts: the title begins while the run is still
            # winding down (an editor that quits on idle still gets it). `_finish` closes
            # the stream again, a no-op here, because it is also the error path's close.
            await stream.close()
            if first_run and header.get("parentId") is None and not header.get("titleSet"):
                self._spawn(self._make_title(sid, run, user))
            return message
        finally:
            await self._finish(run, lock, stream)

    async def _finish(self, run: Run, lock: RunLock, stream: RunStream) -> None:
        """Every run ends here, on every path. The tool-context file, the lock and the
        session's place in `_active` are released even when storage fails; a storage
        failure is then raised (the editor gets it as the chat's error)."""
        sessions = self.sessions
        sid = run.session_id
        failure: StorageError | None = None
        try:
            try:
                await stream.close()
            except StorageError as exc:
                failure = exc
            state = await sessions.log_for(sid).read()
            # The catalog is told the run ended even when the log could not be written.
            await sessions.catalog.run(
                lambda: sessions.catalog.end_run(
                    run.run_id,
                    sid,
                    ids.now_ms(),
                    state.catalog_totals(),
                    closed_in_log=failure is None,
                )
            )
        finally:
            try:
                await sessions.toolctx.release(run.run_id)
            finally:
                lock.release()
                self._active.pop(sid, None)
                stream.status("idle")
                with contextlib.suppress(StorageError):
                    await sessions.emit_session_by_id(sid)
                self._start_next(sid)
        if failure is not None:
            raise failure

    def _user_message(self, run: Run) -> t.Message:
        now = ids.now_ms()
        parts: list[t.Part] = []
        for inp in run.params.parts:
            if isinstance(inp, t.TextInputPart):
                parts.append(
                    t.TextPart(
                        id=ids.new_id("prt"), text=inp.text, time=t.PartTime(start=now, end=now)
                    )
                )
            else:
                parts.append(
                    t.FilePart(
                        id=ids.new_id("prt"), path=inp.path, mime=inp.mime or _guess_mime(inp.path)
                    )
                )
        return t.Message(
            id=ids.new_id("msg"),
            session_id=run.session_id,
            role="user",
            time=t.MessageTime(created=now, completed=now),
            parts=parts,
            run_id=run.run_id,
        )

    async def _chat_messages(
        self, run: Run, state: LogState, root: Path, exclude: str | None = None
    ) -> list[dict[str, Any]]:
        """System prompt + history (from the latest summary on) for the model."""
        system = [self.config.system_prompt or DEFAULT_SYSTEM_PROMPT, *(run.params.system or [])]
        return [
            {"role": "system", "content": "\n\n".join(system)},
            *await self._history(state, root, exclude),
        ]

    def _needs_compaction(self, state: LogState, model: ModelConfig) -> bool:
        """The last step's tokens exceed the usable context (window - output - margin)."""
        if not self.config.compaction or not model.context_window:
            return False
        usable = (model.context_window - (model.max_output_tokens or 0)) * (1 - CONTEXT_MARGIN)
        usage = state.last_step_usage
        if usage is None:  # no step yet, or a summary since
            return False
        return usage.get("inputTokens", 0) + usage.get("outputTokens", 0) > usable

    def _check_file_parts(self, parts: list[t.InputPart], root: Path) -> None:
        """Refuse (-32602, before anything is stored) a file part whose path can never
        name a file in the workspace; what may change later (a file deleted, replaced by a
        FIFO or a symlink) is stored and read as a note instead (`attached_file_text`)."""
        # Loaded with the first chat, as the rest of the tool machinery.
        from agentd.tools.files import attachment_problem

        for index, part in enumerate(parts):
            if isinstance(part, t.FileInputPart):
                problem = attachment_problem(root, part.path)
                if problem is not None:
                    raise InvalidParams(
                        f"params.parts[{index}].path: {problem}",
                        data={
                            "field": f"parts[{index}].path",
                            "errors": [f"params.parts[{index}].path: {problem}"],
                        },
                    )

    async def _history(
        self, state: LogState, root: Path, exclude: str | None = None
    ) -> list[dict[str, Any]]:
        msgs: Iterable[MessageState] = state.messages.values()
        if state.compact_from and state.compact_from in state.messages:
            # The model sees the summary, then the tail kept verbatim, then what came after.
            order = list(state.messages)
            after = order[order.index(state.compact_from) + 1 :]
            msgs = [state.messages[state.compact_from]]
            msgs += [state.messages[i] for i in state.compact_keep if i in state.messages]
            msgs += [state.messages[i] for i in after]
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
                chat = self._chat_of(msg, wire)
            extend(chat)
        if with_files:
            read = await _with_file_text([w for _, w in with_files], root)
            # Inserted back to front, so earlier positions stay right.
            for (at, _), wire in reversed(list(zip(with_files, read, strict=True))):
                out[at:at] = message_to_chat(wire)
        return out

    @staticmethod
    def _chat_of(msg: MessageState, wire: dict[str, Any] | None = None) -> list[Any]:
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

    def _on_retry(self, run: Run, stream: RunStream, notice: Any) -> None:
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
        try:
            await self.sessions.get_row(p.session_id)
        except SessionNotFound:
            raise
        run_id = await self.abort_session(p.session_id, drop_queue=True)
        return t.SessionAbortResult(aborted=run_id is not None, run_id=run_id)

    async def abort_session(self, session_id: str, *, drop_queue: bool) -> str | None:
        """Abort the active run (and drop queued ones); returns once it is persisted."""
        if drop_queue:
            for waiting in self._queues.pop(session_id, collections.deque()):
                waiting.dropped = True
                if not waiting.ready.done():
                    waiting.ready.set_result(None)
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

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _make_title(self, sid: str, run: Run, user: t.Message) -> None:
        text = " ".join(p.text for p in user.parts if isinstance(p, t.TextPart)).strip()
        fallback = " ".join(text.split()[:8])[:80] or DEFAULT_TITLE
        title = fallback
        try:
            model = self.resolve_model(self.config.title_model, run.model.id)
            provider = self.provider_for(model)
            async with asyncio.timeout(60):
                answer, usage = await provider.complete_text(
                    model=model.upstream,
                    messages=[
                        {"role": "system", "content": TITLE_PROMPT},
                        {"role": "user", "content": text[:4000]},
                    ],
                    max_tokens=32,
                )
            self._record_usage(sid, model, usage)
            cleaned = " ".join(answer.strip().strip("\"'").split())[:80].rstrip(".!?:;")
            title = cleaned or fallback
        except Exception as exc:  # a title is never an error: fall back to the first words
            logger.info("title generation failed (%s): using the first words", exc)
        try:
            await self.sessions.set_title(sid, title, generated=True)
        except Exception:
            logger.debug("session %s gone before its title was set", sid)

    def _record_usage(self, sid: str, model: ModelConfig, usage: Any) -> None:
        if usage is None:
            return
        u = usage_from_provider(usage)
        self.sessions.log_for(sid).append(
            {
                "k": "usage",
                "usage": unstructure(u),
                "cost": str(step_cost(model, u)),
                "at": ids.now_ms(),
            }
        )

    async def summarize(self, p: t.SessionSummarizeParams) -> t.MessageResult:
        row = await self.sessions.get_row(p.session_id)
        if self._active.get(p.session_id) is not None:
            raise SessionBusy(
                "session is busy",
                data={"sessionId": p.session_id, "runId": self._active[p.session_id].run_id},
            )
        model = self.resolve_model(p.model, row[8])
        message = await self.compact(p.session_id, model, auto=False)
        return t.MessageResult(message=message)

    async def compact(
        self, sid: str, model: ModelConfig, *, auto: bool, stream: RunStream | None = None
    ) -> t.Message:
        """Summarize history into a `summary: true` message; later turns send the summary,
        then the last few messages verbatim, then what follows. Within a run, the summary
        is streamed to the editor like any message (`stream`)."""
        sessions = self.sessions
        log = sessions.log_for(sid)
        state = await log.read()
        msgs = list(state.messages.values())
        keep = msgs[-KEEP_TAIL_MESSAGES:] if len(msgs) > KEEP_TAIL_MESSAGES else []
        chat = [c for m in msgs[: len(msgs) - len(keep)] for c in self._chat_of(m)]
        chat = _fit(chat, model)
        now = ids.now_ms()
        message = t.Message(
            id=ids.new_id("msg"),
            session_id=sid,
            role="assistant",
            time=t.MessageTime(created=now),
            model=model.id,
            summary=True,
        )
        try:
            text, usage = await self.provider_for(model).complete_text(
                model=model.upstream,
                messages=[
                    {"role": "system", "content": SUMMARY_PROMPT},
                    *chat,
                    {"role": "user", "content": "Summarize the conversation above."},
                ],
                max_tokens=model.max_output_tokens,
            )
        except ProviderError as exc:
            message.error = t.ErrorInfo(**exc.to_wire())
            message.finish_reason = "error"
            message.time.completed = ids.now_ms()
            return message
        message.usage = usage_from_provider(usage)
        message.cost = float(step_cost(model, message.usage))
        message.finish_reason = "stop"
        message.parts = [
            t.CompactionPart(id=ids.new_id("prt"), auto=auto),
            t.TextPart(
                id=ids.new_id("prt"), text=text, time=t.PartTime(start=now, end=ids.now_ms())
            ),
        ]
        message.time.completed = ids.now_ms()
        if stream is not None:
            stream.message(message)
            for part in message.parts:
                stream.part(message.id, part)
        else:
            data = unstructure(message)
            parts = data.pop("parts")
            log.append(
                {"k": "message", "message": data, "at": now},
                *({"k": "part", "m": message.id, "part": part} for part in parts),
            )
        log.append(
            {"k": "compact", "from": message.id, "keep": [m.meta["id"] for m in keep], "at": now}
        )
        await log.flush()
        if stream is None:
            await self._update_totals(sid)
        return message

    async def _update_totals(self, sid: str) -> None:
        state = await self.sessions.log_for(sid).read()
        await self.sessions.catalog.run(
            self.sessions.catalog.update_session,
            sid,
            {**state.catalog_totals(), "updated": ids.now_ms()},
        )
        await self.sessions.emit_session_by_id(sid)

    # --- recovery and shutdown ---------------------------------------------------------

    async def recover(self) -> None:
        """Close runs of daemons that died: `interrupted`, idle, no tool-context file."""
        sessions = self.sessions
        rows = await sessions.catalog.run(sessions.catalog.busy_sessions)
        for row in rows:
            sid = row[0]
            if not await asyncio.to_thread(lock_is_free, sessions.session_dir(sid)):
                continue  # a live daemon is running it
            await self._close_interrupted(sid, row[9])

    async def _close_interrupted(self, sid: str, scope_key: str) -> None:
        sessions = self.sessions
        lock = RunLock(sessions.session_dir(sid))
        if not await asyncio.to_thread(lock.try_acquire):
            return
        try:
            log = sessions.log_for(sid)
            state = await log.read()
            now = ids.now_ms()
            records = _interrupted_records(state, now)
            if records:
                log.append(*records)
                await log.flush()
            state = await log.read()
            await sessions.catalog.run(
                sessions.catalog.end_run, "", sid, now, state.catalog_totals()
            )
            if scope_key:
                await sessions.toolctx.discard_stale(scope_key)
        finally:
            lock.release()

    async def shutdown(self) -> None:
        """Abort every run and wait until each is persisted."""
        self._closing = True
        for sid in list(self._queues):
            for waiting in self._queues.pop(sid):
                waiting.dropped = True
                if not waiting.ready.done():
                    waiting.ready.set_result(None)
        runs = list(self._active.values())
        for run in runs:
            self._abort_run(run)
        tasks = {r.task for r in runs if r.task is not None}
        if tasks:
            await asyncio.wait(tasks)
        # A title being written when the editor quits is worth a short wait: otherwise
        # a session whose first answer just ended keeps "New session" for good.
        if self._background:
            await asyncio.wait(set(self._background), timeout=BACKGROUND_GRACE_S)
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.wait(set(self._background))
        for provider in self._providers.values():
            try:
                await provider.aclose()
            except Exception:
                logger.debug("provider close failed", exc_info=True)
        self._providers.clear()
        await self.sessions.mcp.shutdown()


def _interrupted_records(state: LogState, now: int) -> list[dict[str, Any]]:
    """Log records that close every run left open in `state` (its daemon died, or the
    log could not be written at the run's end): the message ends `interrupted`,
    unfinished parts are closed, unfinished tool calls become errors."""
    records: list[dict[str, Any]] = []
    for run_id in list(state.open_runs):
        for msg in state.messages.values():
            meta = msg.meta
            if meta.get("runId") != run_id or meta.get("role") != "assistant":
                continue
            if meta.get("time", {}).get("completed"):
                continue
            for part in msg.parts.values():
                closed = _close_part(part, now)
                if closed is not None:
                    records.append({"k": "part", "m": meta["id"], "part": closed})
            done = {**meta.get("time", {}), "completed": now}
            records.append(
                {
                    "k": "message",
                    "at": now,
                    "message": {**meta, "finishReason": "interrupted", "time": done},
                }
            )
        records.append({"k": "run", "run": run_id, "state": "end", "at": now})
    return records


def _close_part(part: dict[str, Any], now: int) -> dict[str, Any] | None:
    kind = part.get("type")
    if kind in ("text", "reasoning") and not (part.get("time") or {}).get("end"):
        return {**part, "time": {**part.get("time", {}), "end": now}}
    if kind == "tool":
        state = part.get("state") or {}
        if state.get("status") in ("pending", "running"):
            start = (state.get("time") or {}).get("start", now)
            return {
                **part,
                "state": {
                    "status": "error",
                    "input": state.get("input", {}),
                    "error": "interrupted: agentd stopped during the run",
                    "time": {"start": start, "end": now},
                },
            }
    return None


def _fit(chat: list[dict[str, Any]], model: ModelConfig) -> list[dict[str, Any]]:
    """Drop the oldest messages so a summary request fits the model's context (about
    three characters a token), keeping tool results with their calls."""
    if not model.context_window:
        return chat
    budget = int((model.context_window - (model.max_output_tokens or 0)) * 0.8 * 3)
    total = 0
    start = len(chat)
    while start > 0:
        size = chat_size(chat[start - 1])
        if total + size > budget:
            break
        total += size
        start -= 1
    while start < len(chat) and chat_role(chat[start]) == "tool":
        start += 1
    return chat[start:]


def _workspace_path(root: str | None) -> Path:
    """The workspace a session's tools and attached files see (as `tool_env` makes it)."""
    return Path(root or ".").absolute()


async def _with_file_text(messages: list[dict[str, Any]], root: Path) -> list[dict[str, Any]]:
    """User messages' file parts with the text the model reads (`content`). Every file is
    read again on every run, off the event loop; a file that cannot be attached any more
    (or a path an older agentd stored unchecked) becomes a note, never an error."""
    from agentd.tools.files import attached_file_text

    paths = [
        part.get("path")
        for msg in messages
        if msg.get("role") == "user"
        for part in msg.get("parts") or []
        if part.get("type") == "file"
    ]
    if not paths:
        return messages
    texts = iter(await asyncio.to_thread(lambda: [attached_file_text(root, p) for p in paths]))
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


def _has_files(wire: dict[str, Any]) -> bool:
    return wire.get("role") == "user" and any(p.get("type") == "file" for p in wire["parts"])


def _guess_mime(path: str) -> str:
    import mimetypes

    return mimetypes.guess_type(path)[0] or "application/octet-stream"
