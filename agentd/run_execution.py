"""What one run does once admitted: its turn set up (the user message, compaction when
due, what the model is sent, the tools and their sandbox, snapshots around steps that
may change files) and run; afterwards, a first run's title. Admission, queues and
abort are `runs.RunManager`'s."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import attrs

from agentd import compaction, instructions, model_context, revert
from agentd.background import BackgroundTasks
from agentd.chat_input import user_message
from agentd.config import ModelConfig
from agentd.editor import EditorInfo
from agentd.model_clients import ModelClients
from agentd.model_events import RetryNotice
from agentd.protocol import types as t
from agentd.run_stream import RunStream
from agentd.session import SessionManager
from agentd.snapshots import StepSnapshots
from agentd.storage.log import SessionLog
from agentd.storage.store import RunStorage
from agentd.titles import write_title
from agentd.turn import DEFAULT_SYSTEM_PROMPT, Turn, TurnInput

if TYPE_CHECKING:
    from agentd.tool_calls import Permissions
    from agentd.tools.spec import EditorTerminal


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
    # The editor whose chat started it (its connection may leave before the run ends).
    editor: EditorInfo | None = None
    stream: RunStream | None = None


class RunExecution:
    def __init__(
        self, sessions: SessionManager, models: ModelClients, background: BackgroundTasks
    ) -> None:
        self.sessions = sessions
        self.store = sessions.store
        self.config = sessions.config
        self.models = models
        self._background = background
        # Per session: what the user allowed or refused "always".
        self._permissions: dict[str, Permissions] = {}

    async def run(self, run: Run, storage: RunStorage, stream: RunStream) -> t.Message:
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
            editor_files=sessions.editor.files(sid) if sessions.editor.files else None,
            editor_terminal=self._terminal(sid),
            process=sessions.editor.process,
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
            await self.compact(sid, run.model, auto=True, stream=stream)
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
        snapshots: StepSnapshots | None = None
        if any(runner.may_change_files(name) for name in runner.builtin):
            snapshots = StepSnapshots(
                revert.workspace_store(self.config, env.workspace_root),
                lambda rec: _record(log, rec),
            )
            if self.config.snapshots.enabled:
                self._background.spawn(snapshots.warm(), name=f"snapshot {sid}")
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
            summary = await self.compact(sid, run.model, auto=True, stream=stream)
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
            snapshots=snapshots,
        )
        run.turn = turn
        # Aborted during setup: the message ends at once, without calling the model.
        return await turn.run(aborted=run.abort_requested)

    def _terminal(self, session_id: str) -> EditorTerminal | None:
        """The editor's terminal for the run's commands, unless the configuration
        refuses unconfined commands (they then run in agentd's sandbox)."""
        make = self.sessions.editor.terminal
        if make is None or self.config.sandbox.unconfined == "refuse":
            return None
        return make(session_id)

    def _on_retry(self, run: Run, stream: RunStream, notice: RetryNotice) -> None:
        run.status = "retry"
        stream.status(
            "retry",
            attempt=notice.attempt,
            next_retry_at=notice.next_retry_at_ms,
            message=notice.error.message,
        )

    def _on_resume(self, run: Run, stream: RunStream) -> None:
        run.status = "busy"
        stream.status("busy")

    def after(self, run: Run, storage: RunStorage, message: t.Message) -> None:
        """Once the run is persisted: a session's first run gets its title (in the
        background: it begins while the run winds down)."""
        sid = run.session_id
        header = storage.header
        user = run.user_message
        if storage.first_run and header.get("parentId") is None and user is not None:
            if not header.get("titleSet"):
                failed = message.error is not None
                self._background.spawn(
                    write_title(self.sessions, self.models, sid, run.model, user, run_failed=failed)
                )

    async def compact(
        self, sid: str, model: ModelConfig, *, auto: bool, stream: RunStream | None = None
    ) -> t.Message:
        return await compaction.compact(
            self.store.log_for(sid), self.models.client(model), model, auto=auto, stream=stream
        )


async def _record(log: SessionLog, rec: dict[str, Any]) -> None:
    """A snapshot record, written before the step's tools may run."""
    log.append(rec)
    await log.flush()
