"""The daemon's native front end: one editor's connection in agentd's own protocol
(`protocol-v1.md`) wired to the session layer. The process around it, serving one
connection or many, is `agentd.daemon`.

Handlers are thin: each calls one method of the session or run manager. Everything
about JSON-RPC (checking messages, pygls, answers, flow control) is `agentd.jsonrpc`;
reading and writing the pipes is `agentd.stdio`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from lsprotocol.types import EXIT, INITIALIZE, INITIALIZED, SHUTDOWN

from agentd import __version__
from agentd.editor import EditorProcess
from agentd.editors import CURRENT, EditorConnection, Editors
from agentd.front_end import OUTPUT_AT_EXIT_S, REQUESTS_AT_EXIT_S, SessionCore
from agentd.jsonrpc import Connection, Handler
from agentd.protocol import PROTOCOL_VERSION
from agentd.protocol import types as t
from agentd.protocol.methods import agentd_notifications, editor_requests

logger = logging.getLogger(__name__)

# Requests that last as long as a run.
RUN_REQUESTS = frozenset({"session/chat"})


class NativeConnection:
    """One editor's connection in agentd's own protocol, over the daemon's session core.
    What belongs to the connection stays here: what its `initialize` said, its
    `shutdown` and `exit`, the runs it started when it ends (see `serve`)."""

    def __init__(
        self,
        core: SessionCore,
        editors: Editors,
        *,
        keep_runs: Callable[[], bool],
        shared: bool = False,
        cwd: str | None = None,
        process: EditorProcess | None = None,
    ) -> None:
        self.core = core
        # The connections of the daemon, this one's among them once it is initialized.
        self.editors = editors
        self.connection = Connection(core.sessions.config.max_frame_bytes)
        self.editor = EditorConnection(self.connection)
        self.editor.info.process = process
        # Whether the runs this editor started go on when its connection ends (any way:
        # end of input, `shutdown`, `exit`, its forwarder killed): an editor reloading
        # finds them streaming. Else they are aborted and persisted, and its chats answer
        # before the connection closes.
        self.keep_runs = keep_runs
        self._shared = shared
        # Where the editor runs: the workspace root when `initialize` names none.
        self._cwd = cwd
        self.exit_code: int | None = None
        self._register()

    def _register(self) -> None:
        sessions, runs = self.core.sessions, self.core.runs
        handlers: dict[str, Handler] = {
            SHUTDOWN: self._shutdown,
            "session/create": sessions.create,
            "session/chat": runs.chat,
            "session/abort": runs.abort,
            "session/list": sessions.list,
            "session/get": sessions.get,
            "session/messages": sessions.messages,
            "session/update": sessions.update,
            "session/delete": sessions.delete,
            "session/summarize": runs.summarize,
            "session/fork": sessions.fork,
            "session/export": sessions.export,
            "session/import": sessions.import_,
            "session/revert": runs.revert,
            "session/unrevert": runs.unrevert,
            "run/resolve": sessions.resolve_run,
            "toolContext/get": sessions.tool_context,
            "models/list": lambda _: sessions.models(),
            "mcp/list": sessions.mcp_list,
        }
        rpc = self.connection
        rpc.add_request_handler(INITIALIZE, self._as_editor(self._initialize))
        for name, handler in handlers.items():
            rpc.add_request_handler(name, self._as_editor(self.core.after_startup(handler)))
        rpc.add_notification_handler(INITIALIZED, self._initialized)
        rpc.add_notification_handler(EXIT, lambda _: self.exit(0 if rpc.shutdown_requested else 1))

    def _as_editor(self, handler: Handler) -> Handler:
        """The request, and every task it starts (a run), is this editor's."""

        def handled(params: Any) -> Any:
            CURRENT.set(self.editor)  # (each request runs in a task of its own context)
            return handler(params)

        return handled

    # --- lifecycle handlers ------------------------------------------------------------

    async def _initialize(self, params: t.InitializeParams) -> t.InitializeResult:
        sessions = self.core.sessions
        caps = dict(params.initialization_options or {})
        caps.update(params.capabilities or {})
        editor = self.editor.info
        editor.client_tools = caps.get("clientTools") is True
        editor.permission_requests = caps.get("permissionRequests") is True
        editor.workspace_root = _workspace_root(params) or self._cwd
        self.core.ready()
        await asyncio.to_thread(sessions.toolctx.prepare_dir)
        sandbox = await sessions.sandbox_info()
        # From here the editor hears what others do (session/updated): never before its
        # initialize is answered, which the answer written right after this ensures.
        self.editors.attach(self.editor)
        return t.InitializeResult(
            protocol_version=PROTOCOL_VERSION,
            server_info=t.ServerInfo(name="agentd", version=__version__),
            capabilities=t.ServerCapabilities(
                requests=editor_requests(), notifications=agentd_notifications()
            ),
            tool_context_dir=str(sessions.toolctx.directory),
            sandbox=sandbox,
            tool_context_error=sessions.toolctx.unavailable,
            daemon=t.DaemonInfo(
                shared=self._shared,
                pid=os.getpid(),
                on_disconnect="continue" if self.keep_runs() else "abort",
                connections=len(self.editors.connections),
            ),
        )

    def _initialized(self, _: Any) -> None:
        self.core.runs.preload_provider()
        self.core.sessions.mcp.preload()

    async def _shutdown(self, _: None) -> None:
        if not self.keep_runs():
            await self.core.runs.abort_started_by(self.editor.info)

    def exit(self, code: int) -> None:
        self.exit_code = code
        self.connection.stop()

    # --- serving -----------------------------------------------------------------------

    async def serve(
        self,
        stdin_fd: int | None,
        stdout_fd: int | None,
        *,
        then: Callable[[], Awaitable[None]] | None = None,
    ) -> int:
        """Serve until `exit` or the end of input; the exit code. At the end, the runs
        this editor started go on or are aborted (`keep_runs`). `then` runs before the
        output is flushed for the last time."""
        rpc, editors = self.connection, self.editors
        try:
            await rpc.serve(stdin_fd, stdout_fd)
        finally:
            if self.core.startup is not None:
                with contextlib.suppress(Exception):
                    await self.core.startup
            # Requests read before the end are answered; a chat whose run goes on is not
            # waited for (the editor that reconnects reads its answer from the session).
            keep = self.keep_runs()
            if not keep:
                await self.core.runs.abort_started_by(self.editor.info)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REQUESTS_AT_EXIT_S):
                    await rpc.finish_requests(but=RUN_REQUESTS if keep else frozenset())
            editors.detach(self.editor)
            rpc.abandon_requests()
            if then is not None:
                await then()
            await rpc.flush_output(OUTPUT_AT_EXIT_S)
        return self.exit_code if self.exit_code is not None else 0


def _workspace_root(params: t.InitializeParams) -> str | None:
    if params.workspace_root:
        return params.workspace_root
    uri = params.root_uri or (params.workspace_folders[0].uri if params.workspace_folders else None)
    if uri and uri.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return unquote(urlparse(uri).path)
    return params.root_path or None
