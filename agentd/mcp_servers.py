"""MCP servers as tool sources, through the official `mcp` SDK.

A server starts on first need (a run that may call its tools, or `mcp/list` with
`connect`) and stays up for the daemon's life. Each server is one `McpConnection`
whose lifecycle task owns the SDK's transport and client session: the SDK's anyio task
groups must be entered and left by the same task, so calls from runs only send
requests through the session. A server that exits after it was ready is restarted
with backoff; one that fails to start stays `failed` until it is needed again (no
sooner than its backoff allows). Every state change is an `mcp/status` notification.
Shutdown stops them all: the SDK closes a stdio server's stdin, waits, then kills its
process group.

The SDK costs about a second to import: it is imported on a server's first start,
never at daemon startup.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import logging
import os
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import attrs

from agentd import __version__
from agentd.config import McpServerSpec
from agentd.protocol import types as t
from agentd.protocol.converter import unstructure
from agentd.toolctx import ENV_DIR

logger = logging.getLogger(__name__)

# A server that crashed is restarted after 1, 2, 4 ... 30 s; after this many crashes in
# a row it stays failed until a run needs it again.
MAX_RESTARTS = 5
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
# A server up this long before it exits starts its crash count afresh.
STABLE_AFTER_S = 60.0
# How long shutdown gives all servers together to stop (the SDK's own escalation,
# stdin close → SIGTERM → SIGKILL, takes at most about 4 s).
SHUTDOWN_GRACE_S = 6.0
STDERR_TAIL_LINES = 5
STDERR_LINE_MAX = 2000

_INVALID_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]")
NAME_MAX = 64


def qualified_name(server: str, tool: str) -> str:
    """`<server>_<tool>` as the model sees it: characters outside `[A-Za-z0-9_-]`
    become `_`; past 64 characters it is cut and ends with a hash of the full name, so
    two long names stay distinct."""
    name = _INVALID_NAME_CHARS.sub("_", f"{server}_{tool}")
    if len(name) <= NAME_MAX:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: NAME_MAX - 9]}_{digest}"


@attrs.frozen
class McpTool:
    """One MCP tool as offered to the model."""

    qualified_name: str
    name: str
    description: str
    parameters: dict[str, Any]
    connection: McpConnection


class McpCallError(Exception):
    """A call that could not produce a result (the model reads the message)."""


class McpConnection:
    """One server: its state, its tools, and the task that keeps it connected."""

    def __init__(self, spec: McpServerSpec, hub: McpServers) -> None:
        self.spec = spec
        self._hub = hub
        self.state = "stopped"
        self.error: str | None = None
        self.tools: list[Any] = []  # mcp_types.Tool, as the server listed them
        self.session: Any = None
        self._task: asyncio.Task[None] | None = None
        self._settled = asyncio.Event()
        self._settled.set()
        self._stopping = asyncio.Event()
        self._crashes = 0
        self._next_start = 0.0  # monotonic time before which a failed server is not retried
        self._stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._was_ready = False
        self._ready_at = 0.0
        # Set when the connection is gone: its read stream ended (a stdio server exited)
        # or a call failed at the transport (an HTTP server went away).
        self._lost = asyncio.Event()

    @property
    def transport(self) -> str:
        return "stdio" if self.spec.command else "http"

    # --- start / stop ------------------------------------------------------------------

    def start(self) -> None:
        """Start the server unless it is running, starting, or in its failure backoff."""
        if self._task is not None and not self._task.done():
            return
        if self._hub.closing or time.monotonic() < self._next_start:
            return
        self._stopping.clear()
        self._settled.clear()
        self._task = asyncio.create_task(self._lifecycle(), name=f"mcp:{self.spec.name}")

    async def wait_ready(self) -> bool:
        """Start if needed and wait until the server is ready or has failed (bounded by
        its startup timeout). True when it is ready."""
        self.start()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.spec.startup_timeout_s + 1):
                await self._settled.wait()
        return self.state == "ready"

    async def stop(self) -> None:
        self._stopping.set()
        task = self._task
        if task is not None and not task.done():
            if self.state == "starting":
                # Nothing to wind down politely; the SDK's teardown of the process is
                # shielded from the cancellation and bounded.
                task.cancel()
            await asyncio.wait({task}, timeout=SHUTDOWN_GRACE_S)
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
        if self.state != "stopped":
            self._set_state("stopped")

    # --- the lifecycle task ------------------------------------------------------------

    async def _lifecycle(self) -> None:
        # The SDK's first import takes about a second: not on the event loop, where it
        # would stall every other session's stream.
        await asyncio.to_thread(import_sdk)
        while True:
            self._set_state("starting")
            self._was_ready = False
            try:
                await self._connect_and_serve()
                error = None if self._stopping.is_set() else self._exit_message()
            except asyncio.CancelledError:
                self._set_state("stopped")
                raise
            except Exception as exc:  # anyio task groups raise ExceptionGroups
                error = self._describe(exc)
                logger.debug("MCP server %s failed", self.spec.name, exc_info=True)
            finally:
                self.session = None
            if self._stopping.is_set() or self._hub.closing:
                self._set_state("stopped")
                return
            if not self._was_ready:
                # Never became ready: no automatic restart; the next need may retry it.
                self._crashes += 1
                self._next_start = time.monotonic() + self._backoff()
                self._set_state("failed", error)
                logger.warning("MCP server %s failed to start: %s", self.spec.name, error)
                return
            if time.monotonic() - self._ready_at > STABLE_AFTER_S:
                self._crashes = 0
            self._crashes += 1
            self._set_state("failed", error)
            logger.warning("MCP server %s stopped: %s", self.spec.name, error)
            if self._crashes > MAX_RESTARTS:
                self._next_start = time.monotonic() + BACKOFF_MAX_S
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._backoff()):
                    await self._stopping.wait()
            if self._stopping.is_set() or self._hub.closing:
                self._set_state("stopped")
                return

    def _backoff(self) -> float:
        return min(BACKOFF_FIRST_S * 2 ** max(self._crashes - 1, 0), BACKOFF_MAX_S)

    async def _connect_and_serve(self) -> None:
        """Connect, initialize, list tools, then hold the connection until it ends or
        the server is stopped. Sets `_was_ready` once ready (a transport may still raise
        on the way out)."""
        from mcp.client.session import ClientSession
        from mcp_types import Implementation

        spec = self.spec
        lost = self._lost = asyncio.Event()
        async with contextlib.AsyncExitStack() as stack:
            if spec.command:
                from mcp.client.stdio import StdioServerParameters, stdio_client

                errlog = await stack.enter_async_context(self._stderr_to_log())
                params = StdioServerParameters(
                    command=spec.command,
                    args=list(spec.args),
                    env={**spec.env, **self._hub.server_env},
                    cwd=spec.cwd,
                )
                read, write = await stack.enter_async_context(stdio_client(params, errlog=errlog))
            else:
                import httpx2
                from mcp.client.streamable_http import streamable_http_client

                client = await stack.enter_async_context(
                    httpx2.AsyncClient(
                        headers=spec.headers, timeout=httpx2.Timeout(30.0, read=300.0)
                    )
                )
                assert spec.url is not None
                read, write = await stack.enter_async_context(
                    streamable_http_client(spec.url, http_client=client)
                )
            session = await stack.enter_async_context(
                ClientSession(
                    _EndSignallingStream(read, lost),
                    write,
                    message_handler=self._on_message,
                    client_info=Implementation(name="agentd", version=__version__),
                )
            )
            try:
                async with asyncio.timeout(spec.startup_timeout_s):
                    await session.initialize()
                    await self._list_tools(session)
            except TimeoutError:
                # Reported now: stopping a server that ignores its stdin takes seconds more.
                self._set_state("failed", self._describe(TimeoutError()))
                raise
            self.session = session
            self._ready_at = time.monotonic()
            self._was_ready = True
            self._set_state("ready")
            stop = asyncio.ensure_future(self._stopping.wait())
            end = asyncio.ensure_future(lost.wait())
            try:
                await asyncio.wait({stop, end}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop.cancel()
                end.cancel()
            self.session = None

    async def _list_tools(self, session: Any) -> None:
        tools: list[Any] = []
        cursor = None
        from mcp_types import PaginatedRequestParams

        for _ in range(100):  # a server that paginates forever cannot hang us
            page = await session.list_tools(
                params=PaginatedRequestParams(cursor=cursor) if cursor else None
            )
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        self.tools = tools

    async def _on_message(self, message: Any) -> None:
        if getattr(message, "method", None) == "notifications/tools/list_changed":
            # Not inline: the SDK awaits this handler in its read loop, and the listing
            # needs that loop to receive its answer.
            self._hub.spawn(self._refresh_tools())
        elif isinstance(message, Exception):
            logger.debug("MCP server %s transport: %s", self.spec.name, message)

    async def _refresh_tools(self) -> None:
        session = self.session
        if session is None:
            return
        try:
            await self._list_tools(session)
        except Exception as exc:
            logger.warning("MCP server %s: relisting tools failed: %s", self.spec.name, exc)
            return
        if self.session is session:
            self._notify()

    # --- calls -------------------------------------------------------------------------

    async def call(
        self,
        tool: str,
        arguments: dict[str, Any],
        meta: dict[str, Any],
        on_progress: Callable[[float, float | None, str | None], None] | None = None,
    ) -> Any:
        """Call a tool; returns the SDK's CallToolResult. Raises McpCallError.
        `on_progress` receives the server's progress notifications for the call.
        Cancellation (an abort) propagates: the SDK sends `notifications/cancelled`
        and does not wait for the server to honour it."""
        from mcp.shared.exceptions import MCPError

        if self.state != "ready" or self.session is None:
            await self.wait_ready()
        session = self.session
        if session is None:
            raise McpCallError(
                f"MCP server {self.spec.name!r} is not available ({self.error or self.state})"
            )

        async def progress(done: float, total: float | None, message: str | None) -> None:
            assert on_progress is not None
            on_progress(done, total, message)

        try:
            return await session.call_tool(
                tool,
                arguments,
                read_timeout_seconds=self.spec.timeout_s,
                meta=meta,
                progress_callback=progress if on_progress is not None else None,
            )
        except MCPError as exc:
            from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT

            if exc.code == REQUEST_TIMEOUT:
                raise McpCallError(
                    f"{self.spec.name}: {tool} did not answer within {self.spec.timeout_s:g} s"
                ) from None
            if exc.code == CONNECTION_CLOSED:
                self._lost.set()
                raise McpCallError(
                    f"MCP server {self.spec.name!r}: {self._exit_message()} during the call"
                ) from None
            raise McpCallError(f"{self.spec.name}: {exc.message}") from None
        except Exception as exc:
            if isinstance(exc, OSError | ConnectionError) or "httpx" in type(exc).__module__:
                self._lost.set()  # the transport failed, not the tool: reconnect
            raise McpCallError(f"{self.spec.name}: {self._describe(exc)}") from None

    # --- reporting ---------------------------------------------------------------------

    def _set_state(self, state: str, error: str | None = None) -> None:
        if (state, error) == (self.state, self.error) and state == "failed":
            return  # already reported
        self.state = state
        self.error = error
        if state in ("failed", "stopped"):
            self.tools = []
        if state == "starting":
            self._settled.clear()
        else:
            self._settled.set()
        self._notify()

    def _notify(self) -> None:
        self._hub.notify_status(self)

    def info(self) -> t.McpServerInfo:
        return t.McpServerInfo(
            name=self.spec.name,
            state=self.state,  # type: ignore[arg-type]
            error=self.error,
            session_id=self.spec.session_id,
            transport=self.transport,  # type: ignore[arg-type]
            trust=self.spec.trust,  # type: ignore[arg-type]
            enabled=self.spec.enabled,
            tools=[
                t.McpToolInfo(
                    name=tool.name,
                    qualified_name=qualified_name(self.spec.name, tool.name),
                    description=tool.description,
                    allowed=self.allows(tool.name),
                )
                for tool in self.tools
            ],
        )

    def allows(self, tool: str) -> bool:
        return self.spec.tools is None or tool in self.spec.tools

    def _exit_message(self) -> str:
        if self.transport == "http":
            return "the connection was lost"
        tail = " | ".join(self._stderr_tail)
        return f"the server exited (its last output: {tail})" if tail else "the server exited"

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, ExceptionGroup) and exc.exceptions:
            return self._describe(exc.exceptions[0])
        if isinstance(exc, FileNotFoundError):
            if self.spec.cwd and exc.filename == self.spec.cwd:
                return f"cannot start {self.spec.command!r}: no directory {self.spec.cwd!r}"
            return f"cannot start {self.spec.command!r}: command not found"
        if isinstance(exc, TimeoutError):
            return f"no answer to initialize within {self.spec.startup_timeout_s:g} s"
        text = str(exc) or type(exc).__name__
        if self._stderr_tail:
            text += f"; its last output: {' | '.join(self._stderr_tail)}"
        return text

    @contextlib.asynccontextmanager
    async def _stderr_to_log(self) -> AsyncIterator[Any]:
        """A pipe for the server's stderr, read into agentd's log (never stdout)."""
        read_fd, write_fd = os.pipe()
        writer = os.fdopen(write_fd, "w")
        pump = asyncio.create_task(self._pump_stderr(read_fd))
        try:
            yield writer
        finally:
            writer.close()
            # The server is gone; a child of it could still hold the pipe open.
            await asyncio.wait({pump}, timeout=1.0)
            pump.cancel()

    async def _pump_stderr(self, fd: int) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 20)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb")
        )
        name = self.spec.name
        try:
            while True:
                try:
                    raw = await reader.readline()
                except ValueError:  # a line longer than the limit
                    raw = await reader.read(1 << 20)
                if not raw:
                    return
                line = raw.decode("utf-8", "replace").rstrip()[:STDERR_LINE_MAX]
                if line:
                    self._stderr_tail.append(line)
                    logger.info("[%s] %s", name, line)
        finally:
            transport.close()


class _EndSignallingStream:
    """The SDK's read stream, passed through; sets `lost` when it ends. The SDK has no
    hook for "the server went away" (its session just fails later requests), and a
    restart needs one."""

    def __init__(self, inner: Any, lost: asyncio.Event) -> None:
        self._inner = inner
        self._lost = lost

    async def receive(self) -> Any:
        try:
            return await self._inner.receive()
        except BaseException:
            self._lost.set()
            raise

    async def aclose(self) -> None:
        self._lost.set()
        await self._inner.aclose()

    def __aiter__(self) -> _EndSignallingStream:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self._inner.__anext__()
        except BaseException:
            self._lost.set()
            raise

    async def __aenter__(self) -> _EndSignallingStream:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> bool | None:
        self._lost.set()
        return await self._inner.__aexit__(*exc)


class McpServers:
    """Every MCP server of the daemon: those of the configuration file (shared by all
    sessions) and those a session brought (`session/create`'s `mcpServers`, kept in
    memory only: their `env` and `headers` may hold secrets)."""

    def __init__(
        self,
        specs: Iterable[McpServerSpec],
        notify: Callable[[str, dict[str, Any]], None],
        tool_context_dir: Path,
    ) -> None:
        self._config = {spec.name: spec for spec in specs}
        self._notify = notify
        # What every stdio server agentd starts finds in its environment.
        self.server_env = {ENV_DIR: str(tool_context_dir)}
        self._session_specs: dict[str, dict[str, McpServerSpec]] = {}
        self._connections: dict[tuple[str | None, str], McpConnection] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self.closing = False

    # --- which servers a session has ---------------------------------------------------

    def set_session_servers(self, session_id: str, specs: list[McpServerSpec]) -> None:
        """Replace a session's own servers. A server whose definition changed is
        stopped; it starts again, as defined now, when next needed."""
        new = {spec.name: attrs.evolve(spec, session_id=session_id) for spec in specs}
        for name, old in self._session_specs.get(session_id, {}).items():
            if new.get(name) != old:
                self._retire((session_id, name))
        if new:
            self._session_specs[session_id] = new
        else:
            self._session_specs.pop(session_id, None)

    def drop_session(self, session_id: str) -> None:
        self.set_session_servers(session_id, [])

    def specs_for(self, session_id: str | None) -> list[McpServerSpec]:
        """The servers a session's runs may use: the configuration's, with the
        session's own added (a session server replaces a configured one of its name)."""
        merged = dict(self._config)
        if session_id is not None:
            merged.update(self._session_specs.get(session_id, {}))
        return list(merged.values())

    def connection(self, spec: McpServerSpec) -> McpConnection:
        key = (spec.session_id, spec.name)
        conn = self._connections.get(key)
        if conn is None:
            conn = self._connections[key] = McpConnection(spec, self)
        return conn

    # --- tools for a run ---------------------------------------------------------------

    async def tools_for(self, session_id: str, patterns: list[str] | None) -> list[McpTool]:
        """Start the enabled servers whose tools the run may call, wait for them (each
        bounded by its startup timeout), and return the tools their allow-lists let
        through. `patterns` is `session/chat`'s `tools` (None: every MCP tool): only
        which servers are needed is decided from it; the caller picks the tools."""
        wanted = [
            spec
            for spec in self.specs_for(session_id)
            if spec.enabled and _may_match(patterns, qualified_name(spec.name, ""))
        ]
        conns = [self.connection(spec) for spec in wanted]
        if conns:
            await asyncio.gather(*(conn.wait_ready() for conn in conns))
        tools: list[McpTool] = []
        for conn in conns:
            if conn.state != "ready":
                continue
            for tool in conn.tools:
                name = qualified_name(conn.spec.name, tool.name)
                if not conn.allows(tool.name):
                    continue
                tools.append(
                    McpTool(
                        qualified_name=name,
                        name=tool.name,
                        description=tool.description or tool.title or tool.name,
                        parameters=dict(tool.input_schema or {"type": "object"}),
                        connection=conn,
                    )
                )
        return tools

    # --- mcp/list ----------------------------------------------------------------------

    async def list(self, p: t.McpListParams) -> t.McpListResult:
        specs = self.specs_for(p.session_id)
        if p.connect:
            await asyncio.gather(*(self.connection(s).wait_ready() for s in specs if s.enabled))
        servers = []
        for spec in specs:
            conn = self._connections.get((spec.session_id, spec.name))
            if conn is None:
                conn = McpConnection(spec, self)  # never started: "stopped", no tools
            servers.append(conn.info())
        return t.McpListResult(servers=servers)

    # --- notifications, background work, shutdown --------------------------------------

    def preload(self) -> None:
        """When servers are configured, import the SDK in the background (after
        `initialized`), so a first run that needs a server does not wait for it."""
        if any(spec.enabled for spec in self._config.values()):
            self.spawn(asyncio.to_thread(import_sdk))

    def notify_status(self, conn: McpConnection) -> None:
        if (conn.spec.session_id, conn.spec.name) not in self._connections:
            return  # a retired connection winding down
        status = t.McpStatusServer(
            name=conn.spec.name,
            state=conn.state,  # type: ignore[arg-type]
            error=conn.error,
            session_id=conn.spec.session_id,
            tool_count=len(conn.tools) if conn.state == "ready" else None,
        )
        self._notify("mcp/status", unstructure(t.McpStatusParams(server=status)))

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _retire(self, key: tuple[str | None, str]) -> None:
        conn = self._connections.pop(key, None)
        if conn is not None:
            self.spawn(conn.stop())

    async def shutdown(self) -> None:
        self.closing = True
        conns = list(self._connections.values())
        stops = [conn.stop() for conn in conns]
        if stops:
            await asyncio.gather(*stops, return_exceptions=True)
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.wait(set(self._background), timeout=SHUTDOWN_GRACE_S)


SDK_MODULES = (
    "mcp_types",
    "mcp.client.session",
    "mcp.client.stdio",
    "mcp.client.streamable_http",
    "mcp.shared.exceptions",
)


def import_sdk() -> None:
    """Import the parts of the SDK agentd uses (run in a thread)."""
    for module in SDK_MODULES:
        importlib.import_module(module)


def _may_match(patterns: list[str] | None, prefix: str) -> bool:
    """Whether any `tools` pattern can name a tool starting with `prefix` (so the
    server is needed). Compares up to the pattern's first wildcard."""
    if patterns is None:
        return True
    for pattern in patterns:
        literal = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
        wild = len(literal) < len(pattern)
        if pattern.startswith(prefix) or (wild and prefix.startswith(literal)):
            return True
    return False


def call_meta(session_scope_key: str, session_id: str, run_id: str) -> dict[str, Any]:
    return {"sessionScopeKey": session_scope_key, "sessionId": session_id, "runId": run_id}


def result_text(result: Any) -> tuple[str, bool]:
    """A CallToolResult as the tool part's output: text as it is, a short note for
    content agentd cannot show, structured content when there is nothing else."""
    pieces: list[str] = []
    for block in result.content or []:
        kind = getattr(block, "type", "")
        if kind == "text":
            pieces.append(block.text)
        elif kind in ("image", "audio"):
            size = len(block.data) * 3 // 4
            pieces.append(f"[{kind} ({block.mime_type}, about {size} bytes) not shown]")
        elif kind == "resource_link":
            pieces.append(f"[resource link: {block.name} {block.uri}]")
        elif kind == "resource":
            res = block.resource
            text = getattr(res, "text", None)
            if isinstance(text, str):
                pieces.append(f"[resource {res.uri}]\n{text}")
            else:
                pieces.append(
                    f"[binary resource {res.uri} ({res.mime_type or 'unknown type'}) not shown]"
                )
        else:
            pieces.append(f"[{kind or 'unknown'} content not shown]")
    if not pieces and result.structured_content is not None:
        import json

        pieces.append(json.dumps(result.structured_content, ensure_ascii=False, indent=2))
    return "\n".join(pieces), bool(result.is_error)
