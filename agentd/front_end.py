"""What both front ends (agentd's native protocol, `agentd.server`, and the Agent Client
Protocol, `agentd.acp.server`) stand on: the session core (`SessionCore`: the session
and run managers, storage start-up), and for a front end with one connection on
stdin/stdout for the life of the process (ACP's), that process's life (`FrontEnd`:
signals, the end of input). The native front end serves one connection or many over
one core: `agentd.daemon`. Each front end registers its own method table's handlers."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
import sys
from typing import Any

from agentd.config import Config
from agentd.editor import EditorLink
from agentd.errors import StorageError
from agentd.jsonrpc import Connection, Handler
from agentd.runs import RunManager
from agentd.session import SessionManager
from agentd.stdio import fileno

logger = logging.getLogger(__name__)

# At end of input, how long requests still being handled get to answer, and then how
# long the editor gets to take what agentd wrote.
REQUESTS_AT_EXIT_S = 5.0
OUTPUT_AT_EXIT_S = 2.0


class SessionCore:
    """The session layer one process serves, behind one connection or many: the session
    and run managers, and storage start-up."""

    def __init__(self, config: Config, link: EditorLink) -> None:
        self.sessions = SessionManager(config, link)
        self.runs = RunManager(self.sessions)
        # The session layer asks the run layer what runs (a session's status, the message
        # a run is writing for session/messages, aborting the run of a session deleted):
        # without it, each answers as if nothing ran.
        self.sessions.runs = self.runs
        # Storage start-up, begun with the first request (see `ready`).
        self.startup: asyncio.Future[None] | None = None

    def ready(self) -> asyncio.Future[None]:
        """Storage opens (catalog, recovery, tool-context sweep) while the editor's first
        request is read and `initialize` answered: every other handler waits for it."""

        async def start_storage() -> None:
            await asyncio.to_thread(self.sessions.open)
            await self.runs.recover()

        if self.startup is None:
            self.startup = asyncio.ensure_future(start_storage())
        return self.startup

    def after_startup(self, handler: Handler) -> Handler:
        async def run(params: Any) -> Any:
            try:
                await asyncio.shield(self.ready())
            except Exception as exc:
                logger.exception("storage unavailable")
                raise StorageError(f"storage unavailable: {exc}") from exc
            result = handler(params)
            return await result if inspect.isawaitable(result) else result

        return run

    async def close(self) -> None:
        """Every run aborted and persisted, then storage closed."""
        if self.startup is not None:
            with contextlib.suppress(Exception):
                await self.startup
        await self.runs.shutdown()
        await self.sessions.close()


class FrontEnd(SessionCore):
    """A connection and the session layer behind it, for the life of the process."""

    def __init__(self, config: Config, connection: Connection, link: EditorLink) -> None:
        super().__init__(config, link)
        self.connection = connection
        self.exit_code: int | None = None

    # --- running -----------------------------------------------------------------------

    def exit(self, code: int) -> None:
        self.exit_code = code
        self.connection.stop()

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


def serve_stdio(front_end: FrontEnd) -> int:
    """Run a front end on stdin/stdout until it exits or input ends; the exit code."""

    async def main() -> int:
        loop = asyncio.get_running_loop()
        # SIGTERM / SIGINT end the daemon the way `exit` after end of input does: runs are
        # aborted and persisted, tool-context files released.
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, front_end.exit, 0)
        return await front_end.serve(fileno(sys.stdin), fileno(sys.stdout))

    return asyncio.run(main())
