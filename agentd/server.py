"""The daemon: the editor's JSON-RPC connection wired to the session layer, and the
process's life on stdin/stdout (startup, signals, the end of input).

Handlers are thin: each calls one method of the session or run manager. Everything
about JSON-RPC (checking messages, pygls, answers, flow control) is `agentd.jsonrpc`;
reading and writing the pipes is `agentd.stdio`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
import sys
from typing import Any

from lsprotocol.types import EXIT, INITIALIZE, INITIALIZED, SHUTDOWN

from agentd import __version__
from agentd.config import Config
from agentd.errors import StorageError
from agentd.jsonrpc import Connection, Handler
from agentd.protocol import PROTOCOL_VERSION
from agentd.protocol import types as t
from agentd.protocol.methods import agentd_notifications, editor_requests
from agentd.runs import RunManager
from agentd.session import SessionManager
from agentd.stdio import fileno

logger = logging.getLogger(__name__)

# At end of input, how long requests still being handled get to answer, and then how
# long the editor gets to take what agentd wrote.
REQUESTS_AT_EXIT_S = 5.0
OUTPUT_AT_EXIT_S = 2.0


class AgentdServer:
    """The editor's connection and the session layer behind it."""

    def __init__(self, config: Config) -> None:
        self.connection = Connection(config.max_frame_bytes)
        self.sessions = SessionManager(config, self.connection)
        self.runs = RunManager(self.sessions)
        self.exit_code: int | None = None
        # Storage start-up, begun with the first request (see `_ready`).
        self.startup: asyncio.Future[None] | None = None
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
            rpc.add_request_handler(name, self._after_startup(handler))
        rpc.add_notification_handler(INITIALIZED, self._initialized)
        rpc.add_notification_handler(EXIT, lambda _: self.exit(0 if rpc.shutdown_requested else 1))

    # --- storage start-up --------------------------------------------------------------

    def _ready(self) -> asyncio.Future[None]:
        """Storage opens (catalog, recovery, tool-context sweep) while the editor's first
        request is read and `initialize` answered: every other handler waits for it."""

        async def start_storage() -> None:
            await asyncio.to_thread(self.sessions.open)
            await self.runs.recover()

        if self.startup is None:
            self.startup = asyncio.ensure_future(start_storage())
        return self.startup

    def _after_startup(self, handler: Handler) -> Handler:
        async def run(params: Any) -> Any:
            try:
                await asyncio.shield(self._ready())
            except Exception as exc:
                logger.exception("storage unavailable")
                raise StorageError(f"storage unavailable: {exc}") from exc
            result = handler(params)
            return await result if inspect.isawaitable(result) else result

        return run

    # --- lifecycle handlers ------------------------------------------------------------

    async def _initialize(self, params: t.InitializeParams) -> t.InitializeResult:
        sessions = self.sessions
        caps = dict(params.initialization_options or {})
        caps.update(params.capabilities or {})
        sessions.editor.client_tools = caps.get("clientTools") is True
        sessions.editor.permission_requests = caps.get("permissionRequests") is True
        sessions.editor.workspace_root = _workspace_root(params)
        self._ready()
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

    def exit(self, code: int) -> None:
        self.exit_code = code
        self.connection.stop()

    # --- running -----------------------------------------------------------------------

    async def serve(self, stdin_fd: int | None, stdout_fd: int | None) -> int:
        """Serve until `exit` or the end of input; returns the exit code. End of input
        acts as `shutdown` then `exit`: requests read before it are answered (runs are
        first aborted, so that chats answer too)."""
        rpc = self.connection
        try:
            await rpc.serve(stdin_fd, stdout_fd)
        finally:
            if self.startup is not None:
                with contextlib.suppress(Exception):
                    await self.startup
            await self.runs.shutdown()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REQUESTS_AT_EXIT_S):
                    await rpc.finish_requests()
            await self.sessions.close()
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


def serve_stdio(config: Config) -> int:
    """Run the daemon on stdin/stdout until `exit` or end of input. Returns the exit code."""
    server = AgentdServer(config)

    async def main() -> int:
        loop = asyncio.get_running_loop()
        # SIGTERM / SIGINT end the daemon the way `exit` after end of input does: runs are
        # aborted and persisted, tool-context files released.
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, server.exit, 0)
        return await server.serve(fileno(sys.stdin), fileno(sys.stdout))

    return asyncio.run(main())
