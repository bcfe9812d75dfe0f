"""`agentd acp`: the Agent Client Protocol front end (ACP v1, NDJSON on stdio) over the
same session core as the native one. Handlers are thin: each turns ACP params into the
native call of `SessionManager` / `RunManager` and the native answer into ACP
(`agentd.acp.updates`); the stream of a run becomes `session/update` notifications in
`agentd.acp.link`. The mapping, decision by decision: `protocol/README.md`, "Agent
Client Protocol".
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any

import attrs

from agentd import __version__, keys, ndjson
from agentd.acp import types as a
from agentd.acp import updates as u
from agentd.acp.link import AcpFiles, AcpLink, AcpTerminal
from agentd.acp.methods import ACP, EXT_METHODS
from agentd.config import DEFAULT_MAX_FRAME_BYTES, Config
from agentd.errors import AgentdError, InvalidParams, RequestCancelled
from agentd.front_end import FrontEnd, serve_stdio
from agentd.jsonrpc import Connection, Handler
from agentd.protocol import types as t
from agentd.protocol.converter import unstructure

logger = logging.getLogger(__name__)

LIST_PAGE = 50
# session/load reads the history this many messages at a time.
REPLAY_PAGE = 500


class AcpServer(FrontEnd):
    """The ACP connection and the session layer behind it."""

    def __init__(self, config: Config) -> None:
        # Lines up to 50 MiB, as the ACP SDKs send them, unless --max-frame-bytes says.
        limit = config.max_frame_bytes
        if limit == DEFAULT_MAX_FRAME_BYTES:
            limit = ndjson.DEFAULT_MAX_LINE_BYTES
        connection = Connection(limit, ACP)
        self.link = AcpLink(connection)
        super().__init__(config, connection, self.link)
        self.link.context_window = self._context_window
        # The prompts read but not yet handed to the run manager, per session: a
        # session/cancel read after them cancels them there (the run manager's abort
        # ends the prompts it holds, running or queued, with their message).
        self._prompts: dict[str, set[asyncio.Task[Any]]] = {}
        self._register()

    def _register(self) -> None:
        sessions, runs = self.sessions, self.runs
        handlers: dict[str, Handler] = {
            "session/new": self._new,
            "session/load": self._load,
            "session/resume": self._resume,
            "session/list": self._list,
            "session/prompt": self._prompt,
            "session/delete": self._delete,
            "session/close": self._close,
            "session/set_config_option": self._set_config_option,
            "_agentd/session/messages": sessions.messages,
            "_agentd/session/get": sessions.get,
            "_agentd/session/update": sessions.update,
            "_agentd/session/summarize": runs.summarize,
            "_agentd/models/list": lambda _: sessions.models(),
            "_agentd/run/resolve": sessions.resolve_run,
            "_agentd/toolContext/get": sessions.tool_context,
            "_agentd/session/resolve": self._resolve_thread,
        }
        assert set(EXT_METHODS) <= set(handlers)
        rpc = self.connection
        rpc.add_request_handler("initialize", self._initialize)
        for name, handler in handlers.items():
            rpc.add_request_handler(name, self.after_startup(handler))
        rpc.add_notification_handler("session/cancel", self._cancel)

    # --- lifecycle -----------------------------------------------------------------------

    async def _initialize(self, p: a.InitializeParams) -> dict[str, Any]:
        editor = self.sessions.editor
        caps = p.client_capabilities or a.ClientCapabilities()
        ours = caps.meta.agentd if caps.meta is not None and caps.meta.agentd else None
        # Every ACP client answers session/request_permission (it is baseline).
        editor.permission_requests = True
        editor.client_tools = bool(ours and ours.client_tools)
        self.link.ext_notifications = bool(ours and ours.notifications)
        fs = caps.fs or a.FsCapabilities()
        if fs.read_text_file or fs.write_text_file:
            # The editor's buffers, unsaved edits included, are the files the tools see.
            rpc, reads, writes = self.connection, fs.read_text_file, fs.write_text_file
            editor.files = lambda sid: AcpFiles(rpc, sid, reads=reads, writes=writes)
        if caps.terminal:
            # Commands show live in the editor's terminal (asked first, every time).
            editor.terminal = lambda sid: AcpTerminal(self.link, sid)
        self.ready()
        await asyncio.to_thread(self.sessions.toolctx.prepare_dir)
        return u.initialize_result(str(self.sessions.toolctx.directory), __version__)

    # --- sessions ------------------------------------------------------------------------

    async def _new(self, p: a.NewSessionParams) -> dict[str, Any]:
        root = _absolute_cwd(p.cwd)
        meta = p.meta or a.SessionMeta()
        ours = meta.agentd or t.SessionCreateParams()
        # session/create's own fields from _meta.agentd; the root and servers are ACP's.
        created = await self.sessions.create(
            attrs.evolve(
                ours,
                trace_id=ours.trace_id or _trace_id(meta.traceparent),
                workspace_root=root,
                mcp_servers=_mcp_servers(p.mcp_servers),
            )
        )
        session = created.session
        self.link.open(session)
        # After the answer, which tells the client the session's id.
        asyncio.get_running_loop().call_soon(self._commands, session.id)
        return {
            "sessionId": session.id,
            "configOptions": self._config_options(session),
            "_meta": u.meta(session=unstructure(session), created=created.created),
        }

    async def _load(self, p: a.LoadSessionParams) -> dict[str, Any]:
        session = await self._attach(p)
        root = u.session_root(session)
        async for message in self._history(session.id):
            for update in u.replay([message], root):
                self.link.update(session.id, update)
        self.link.update(session.id, u.commands_update())
        # `{}` exactly (acp-v1.md): the model option comes with new and resume.
        return {}

    async def _resume(self, p: a.LoadSessionParams) -> dict[str, Any]:
        session = await self._attach(p)
        asyncio.get_running_loop().call_soon(self._commands, session.id)
        return {"configOptions": self._config_options(session)}

    async def _attach(self, p: a.LoadSessionParams) -> t.Session:
        """The session of load/resume, live on this connection, with the servers given."""
        _absolute_cwd(p.cwd)
        session = await self.sessions.get_session_obj(p.session_id)
        servers = _mcp_servers(p.mcp_servers)
        if servers:
            await self.sessions.update(t.SessionUpdateParams(p.session_id, mcp_servers=servers))
        self.link.open(session)
        return session

    async def _history(self, session_id: str) -> Any:
        """Every message of the session, oldest first (read newest page first)."""
        pages: list[list[t.Message]] = []
        before: str | None = None
        while True:
            page = await self.sessions.messages(
                t.SessionMessagesParams(session_id, limit=REPLAY_PAGE, before=before)
            )
            pages.append(page.messages)
            before = page.next_before
            if before is None:
                break
        for page_messages in reversed(pages):
            for message in page_messages:
                yield message

    async def _list(self, p: a.ListSessionsParams) -> dict[str, Any]:
        ours = (p.meta.agentd if p.meta else None) or t.SessionListParams()
        listed = await self.sessions.list(
            attrs.evolve(
                ours,
                limit=ours.limit or LIST_PAGE,
                cursor=p.cursor,
                workspace_root=_absolute_cwd(p.cwd) if p.cwd is not None else None,
            )
        )
        result: dict[str, Any] = {"sessions": [u.session_info(s) for s in listed.sessions]}
        if listed.next_cursor is not None:
            result["nextCursor"] = listed.next_cursor
        return result

    async def _delete(self, p: a.SessionParams) -> dict[str, Any]:
        await self.sessions.delete(t.SessionIdParams(p.session_id))
        self.link.close(p.session_id)
        return {}

    async def _close(self, p: a.SessionParams) -> dict[str, Any]:
        await self.sessions.get_row(p.session_id)
        await self.runs.abort_session(p.session_id, drop_queue=True)
        self.link.close(p.session_id)
        return {}

    async def _set_config_option(self, p: a.SetConfigOptionParams) -> dict[str, Any]:
        await self.sessions.get_row(p.session_id)
        if p.config_id != "model":
            raise InvalidParams(
                f"params.configId: unknown option {p.config_id!r} (agentd has: model)",
                data={"field": "configId"},
            )
        if not isinstance(p.value, str):
            raise InvalidParams("params.value: a model id is expected", data={"field": "value"})
        # The session's model from now on, for every process and front end (1003 when
        # it is not configured).
        await self.sessions.update(t.SessionUpdateParams(p.session_id, model=p.value))
        session = await self.sessions.get_session_obj(p.session_id)
        return {"configOptions": self._config_options(session)}

    async def _resolve_thread(self, p: a.ResolveThreadParams) -> dict[str, Any] | None:
        row = await self.sessions.store.catalog.find_by_client(
            keys.actor_key(p.user_id), keys.project_key(p.project_id), p.client_session_id
        )
        return None if row is None else {"sessionId": row.id}

    # --- prompts -------------------------------------------------------------------------

    async def _prompt(self, p: a.PromptParams) -> dict[str, Any]:
        # Before any await: a cancel read right behind this prompt must find it.
        task = asyncio.current_task()
        assert task is not None
        prompts = self._prompts.setdefault(p.session_id, set())
        prompts.add(task)
        try:
            return await self._run_prompt(p, lambda: prompts.discard(task))
        except (RequestCancelled, asyncio.CancelledError):
            # session/cancel, $/cancel_request, or the end of input: a result, not an error.
            return {"stopReason": "cancelled"}
        finally:
            prompts.discard(task)
            if not prompts:
                self._prompts.pop(p.session_id, None)

    async def _run_prompt(
        self, p: a.PromptParams, handed_over: Callable[[], None]
    ) -> dict[str, Any]:
        row = await self.sessions.get_row(p.session_id)
        session = self.sessions.session_of(row)
        self.link.open(session)
        meta = p.meta or a.PromptMeta()
        ours = meta.agentd or a.PromptOptions()
        if u.compact_request(p.prompt):
            summary = (await self.runs.summarize(t.SessionSummarizeParams(p.session_id))).message
            # session/summarize does not stream: its text goes out as it would replay.
            if summary.error is None:
                for update in u.replay([summary], u.session_root(session)):
                    self.link.update(p.session_id, update)
            return _answer(summary, summary.run_id)
        parts = u.prompt_parts(p.prompt, u.session_root(session))
        chat = t.SessionChatParams(
            session_id=p.session_id,
            parts=parts,
            model=ours.model,
            system=ours.system,
            # All built-ins: write_file, edit_file and bash ask first (baseline).
            tools=ours.tools if ours.tools is not None else ["*"],
            client_tools=ours.client_tools,
            on_busy=ours.on_busy or "queue",
            max_steps=ours.max_steps,
            trace_id=ours.trace_id or _trace_id(meta.traceparent),
        )
        handed_over()  # no await from here to the run manager's claim or queue
        result = await self.runs.chat(chat, row)
        return _answer(result.message, result.run_id)

    def _cancel(self, raw: Any) -> None:
        session_id = raw.get("sessionId") if isinstance(raw, dict) else None
        if not isinstance(session_id, str):
            return
        # On the next turn of the loop: a prompt read just before this cancel has then
        # taken its first step (and registered itself).
        asyncio.get_running_loop().call_soon(self._cancel_prompts, session_id)

    def _cancel_prompts(self, session_id: str) -> None:
        # A cancelled prompt aborts its run (as $/cancel_request does) and answers
        # "cancelled"; the abort also ends a run this connection did not start.
        for task in self._prompts.get(session_id, ()):
            task.cancel()
        task = asyncio.ensure_future(self.runs.abort_session(session_id, drop_queue=True))
        task.add_done_callback(_log_failure)

    # --- helpers -------------------------------------------------------------------------

    def _commands(self, session_id: str) -> None:
        self.link.update(session_id, u.commands_update())

    def _config_options(self, session: t.Session) -> list[dict[str, Any]]:
        return u.config_options(self.sessions.models(), session.model)

    def _context_window(self, model: str) -> int | None:
        models = self.sessions.models().models
        chosen = next((m for m in models if m.id == model), None)
        chosen = chosen or next((m for m in models if m.default), None)
        return chosen.context_window if chosen is not None else None


def _answer(message: t.Message, run_id: str | None) -> dict[str, Any]:
    """The PromptResponse of a run's assistant message; a provider failure is the
    prompt's error (ACP has no error stop reason)."""
    details = u.meta(
        runId=run_id,
        messageId=message.id,
        finishReason=message.finish_reason,
        usage=unstructure(message.usage) if message.usage is not None else None,
        cost=message.cost,
        model=message.model,
    )
    if message.finish_reason == "error":
        error = message.error or t.ErrorInfo("ProviderError", "the run failed")
        raise AgentdError(
            error.message,
            code=-32603,
            data={
                "name": error.name,
                "message": error.message,
                "runId": run_id,
                "messageId": message.id,
            },
        )
    stop = u.STOP_REASONS.get(message.finish_reason or "stop", "end_turn")
    return {"stopReason": stop, "_meta": details}


def _trace_id(traceparent: str | None) -> str | None:
    """The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<flags>`)."""
    fields = traceparent.split("-") if isinstance(traceparent, str) else []
    if len(fields) == 4 and len(fields[1]) == 32:
        return fields[1]
    return None


def _absolute_cwd(cwd: str) -> str:
    if "\0" in cwd:
        raise InvalidParams("params.cwd: a path cannot hold a NUL byte", data={"field": "cwd"})
    if not os.path.isabs(cwd):
        raise InvalidParams(
            f"params.cwd: must be an absolute path, got {cwd!r}", data={"field": "cwd"}
        )
    return os.path.normpath(cwd)


def _mcp_servers(servers: list[a.McpServer]) -> list[t.McpServer] | None:
    """ACP's MCP server descriptions as session/create's (None: none given)."""
    if not servers:
        return None
    out = []
    for i, server in enumerate(servers):
        kind = server.type or ("http" if server.url else "stdio")
        if kind == "sse":
            raise InvalidParams(
                f"params.mcpServers[{i}]: {server.name!r} is an SSE server; agentd "
                "connects to stdio and HTTP servers (mcpCapabilities.sse is false)",
                data={"field": f"mcpServers[{i}]"},
            )
        pairs = server.headers if kind == "http" else server.env
        table = {pair.name: pair.value for pair in pairs or []}
        out.append(
            t.McpServer(
                name=server.name,
                command=server.command if kind == "stdio" else None,
                args=server.args if kind == "stdio" else None,
                env=table if kind == "stdio" else None,
                url=server.url if kind == "http" else None,
                headers=table if kind == "http" else None,
            )
        )
    return out


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("session/cancel failed: %s", task.exception())


def serve_acp(config: Config) -> int:
    """`agentd acp`: serve ACP on stdin/stdout until the end of input; the exit code."""
    return serve_stdio(AcpServer(config))
