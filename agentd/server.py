"""The daemon's native front end: agentd's own protocol (`protocol-v1.md`) wired to the
session layer. The process's life around it is `agentd.front_end`'s.

Handlers are thin: each calls one method of the session or run manager. Everything
about JSON-RPC (checking messages, pygls, answers, flow control) is `agentd.jsonrpc`;
reading and writing the pipes is `agentd.stdio`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from lsprotocol.types import EXIT, INITIALIZE, INITIALIZED, SHUTDOWN

from agentd import __version__
from agentd.config import Config
from agentd.front_end import FrontEnd, serve_stdio
from agentd.jsonrpc import Connection, Handler
from agentd.protocol import PROTOCOL_VERSION
from agentd.protocol import types as t
from agentd.protocol.methods import agentd_notifications, editor_requests

logger = logging.getLogger(__name__)


class AgentdServer(FrontEnd):
    """The editor's connection in agentd's own protocol, and the session layer behind it."""

    def __init__(self, config: Config) -> None:
        connection = Connection(config.max_frame_bytes)
        super().__init__(config, connection, connection)
        self._register()

    def _register(self) -> None:
        sessions, runs = self.sessions, self.runs
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
        rpc.add_request_handler(INITIALIZE, self._initialize)
        for name, handler in handlers.items():
            rpc.add_request_handler(name, self.after_startup(handler))
        rpc.add_notification_handler(INITIALIZED, self._initialized)
        rpc.add_notification_handler(EXIT, lambda _: self.exit(0 if rpc.shutdown_requested else 1))

    # --- lifecycle handlers ------------------------------------------------------------

    async def _initialize(self, params: t.InitializeParams) -> t.InitializeResult:
        sessions = self.sessions
        caps = dict(params.initialization_options or {})
        caps.update(params.capabilities or {})
        sessions.editor.client_tools = caps.get("clientTools") is True
        sessions.editor.permission_requests = caps.get("permissionRequests") is True
        sessions.editor.workspace_root = _workspace_root(params)
        self.ready()
        await asyncio.to_thread(sessions.toolctx.prepare_dir)
        return t.InitializeResult(
            protocol_version=PROTOCOL_VERSION,
            server_info=t.ServerInfo(name="agentd", version=__version__),
            capabilities=t.ServerCapabilities(
                requests=editor_requests(), notifications=agentd_notifications()
            ),
            tool_context_dir=str(sessions.toolctx.directory),
            sandbox=await sessions.sandbox_info(),
            tool_context_error=sessions.toolctx.unavailable,
        )

    def _initialized(self, _: Any) -> None:
        self.runs.preload_provider()
        self.sessions.mcp.preload()

    async def _shutdown(self, _: None) -> None:
        await self.runs.shutdown()


def _workspace_root(params: t.InitializeParams) -> str | None:
    if params.workspace_root:
        return params.workspace_root
    uri = params.root_uri or (params.workspace_folders[0].uri if params.workspace_folders else None)
    if uri and uri.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return unquote(urlparse(uri).path)
    return params.root_path or None


def serve_native(config: Config) -> int:
    """Run the daemon on stdin/stdout until `exit` or end of input. Returns the exit code."""
    return serve_stdio(AgentdServer(config))
