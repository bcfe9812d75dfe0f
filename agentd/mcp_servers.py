"""MCP servers as tool sources, through the official `mcp` SDK.

A server starts on first need (a run that may call its tools, or `mcp/list` with
`connect`) and stays up for the daemon's life. Each server is one `McpConnection`
whose lifecycle task owns the SDK's transport and client session: the SDK's anyio task
groups must be entered and left by the same task, so calls from runs only send
requests through the session. A server that exits after it was ready is restarted
with backoff; one that fails to start stays `failed` until it is needed again (no
sooner than its backoff allows). Every state change is an `mcp/status` notification.
Shutdown stops them all: a stdio server's stdin is closed, then SIGTERM, then SIGKILL,
and on Linux every process it started goes with it (agentd/mcp_stdio.py).

What a server sends is bounded: one message (a stdio line, an HTTP body, an SSE event)
is read up to MAX_MESSAGE_BYTES and dropped past it, ending the call it answers as a
tool error; `tools/list_changed` storms are coalesced into one relisting at a time.

The SDK costs about a second to import: it is imported on a server's first start,
never at daemon startup.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import json
import logging
import os
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import attrs

from agentd import __version__, redaction
from agentd.config import McpServerSpec
from agentd.mcp_names import BUILTIN_TOOL_NAMES, ToolName, assign_names, qualified_name
from agentd.mcp_stdio import OversizedLine, StdioServerProcess
from agentd.protocol import types as t
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
# `wait_ready` waits at most the startup timeout and this (the SDK's import, a busy loop).
WAIT_MARGIN_S = 30.0
STDERR_TAIL_LINES = 5
STDERR_LINE_MAX = 2000
# The largest message agentd reads from a server: a stdio line, an HTTP response body,
# one SSE event. A tool result is cut to 50 KB for the model anyway (the full text is
# saved); past this the message is dropped unread and its call is a tool error.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# A line at least this long is parsed in a thread, off the event loop.
PARSE_IN_THREAD_BYTES = 256 * 1024
# After a message at least this large, once its copies are gone (a few seconds), freed
# memory is handed back to the OS: glibc keeps it in the arena of each thread that
# parsed or saved such a result, and RSS would stay up to ~100 MiB higher.
RELEASE_AFTER_BYTES = 4 * 1024 * 1024
RELEASE_DELAY_S = 3.0
# `tools/list_changed` relists one at a time, at most one more queued, and starts a
# relisting at most this often.
RELIST_MIN_INTERVAL_S = 0.5
# Requests remembered as waiting for an answer (to end them when their answer is too
# large); a server that leaves more than this unanswered forgets the oldest.
PENDING_MAX = 10_000


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
        # Tool names the server listed more than once (the first one is used).
        self.duplicates: list[str] = []
        self.session: Any = None
        self._task: asyncio.Task[None] | None = None
        self._settled = asyncio.Event()
        self._settled.set()
        self._stopping = asyncio.Event()
        self._crashes = 0
        self._next_start = 0.0  # monotonic time before which a failed server is not retried
        # What a start is waiting for, named in a timeout's error.
        self._phase = "start"
        self._failure_reported = False
        self._stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._stderr_done = asyncio.Event()
        self._was_ready = False
        self._ready_at = 0.0
        # Set when the connection is gone: its read stream ended (a stdio server exited)
        # or a call failed at the transport (an HTTP server went away).
        self._lost = asyncio.Event()
        self._relisting = False
        self._relist_queued = False
        # The collisions last reported in mcp/status (reported again when they change).
        self.reported_collisions: list[str] | None = None

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
        """Start if needed and wait until the server is ready or has failed. A start is
        bounded by its startup timeout and reports `failed` when it runs out, so this
        ends with a final state (the margin only guards against a bug there). True when
        the server is ready."""
        self.start()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.spec.startup_timeout_s + WAIT_MARGIN_S):
                await self._settled.wait()
        return self.state == "ready"

    async def stop(self) -> None:
        self._stopping.set()
        task = self._task
        if task is not None and not task.done():
            if self.state == "starting":
                # Nothing to wind down politely; the process's teardown runs in a task
                # of its own that this cancellation does not reach.
                task.cancel()
            await asyncio.wait({task}, timeout=SHUTDOWN_GRACE_S)
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
        if self.state != "stopped":
            self._set_state("stopped")

    # --- the lifecycle task ------------------------------------------------------------

    async def _lifecycle(self) -> None:
        self._set_state("starting")
        # The SDK's first import takes about a second: not on the event loop, where it
        # would stall every other session's stream. agentd's own cost, not the server's:
        # outside its startup timeout.
        try:
            await asyncio.to_thread(import_sdk)
        except asyncio.CancelledError:
            self._set_state("stopped")
            raise
        except Exception as exc:
            self._set_state("failed", f"cannot load the MCP SDK: {exc}")
            return
        while True:
            if self.state != "starting":
                self._set_state("starting")
            self._was_ready = False
            self._failure_reported = False
            self._phase = "start"
            self._stderr_tail.clear()
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
                if not self._failure_reported:
                    self._set_state("failed", error)
                    self._log_start_failure()
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
        """Start the process (or HTTP client), then initialize and list tools within
        the startup timeout, then hold the connection until it ends or the server is
        stopped. Sets `_was_ready` once ready (a transport may still raise on the way
        out)."""
        lost = self._lost = asyncio.Event()
        async with contextlib.AsyncExitStack() as stack:
            try:
                read, write = await self._open_transport(stack, lost)
                # From here on the time is the server's (forking and the SDK's import
                # are agentd's, and a loaded machine must not fail a server for them).
                self._phase = "initialize"
                async with asyncio.timeout(self.spec.startup_timeout_s):
                    session = await self._open_session(stack, read, write)
                    await session.initialize()
                    self._phase = "tools/list"
                    await self._list_tools(session)
            except Exception as exc:
                # Reported before the teardown: stopping a server that ignores its
                # stdin takes seconds more, and `mcp/list {connect}` waits for this.
                await self._report_start_failure(exc)
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

    async def _open_transport(
        self, stack: contextlib.AsyncExitStack, lost: asyncio.Event
    ) -> tuple[Any, Any]:
        """The read and write streams the SDK's session talks through, on `stack`: a
        started stdio server's, or a streamable-HTTP client's."""
        spec = self.spec
        read: Any
        write: Any
        if spec.command:
            from mcp.client.stdio import get_default_environment

            errlog = await stack.enter_async_context(self._stderr_to_log())
            proc = await StdioServerProcess.start(
                spec.command,
                list(spec.args),
                env={**get_default_environment(), **spec.env, **self._hub.server_env},
                cwd=spec.cwd,
                stderr=errlog.fileno(),
                max_message_bytes=MAX_MESSAGE_BYTES,
            )
            stack.push_async_callback(self._hub.stop_process, proc)
            read = _StdioReadStream(proc, lost, self.spec.name, self._hub.release_memory_soon)
            write = _StdioWriteStream(proc, lost, read.pending)
        else:
            from mcp.client.streamable_http import streamable_http_client

            client = await stack.enter_async_context(_http_client(spec.headers))
            assert spec.url is not None
            read, write = await stack.enter_async_context(
                streamable_http_client(
                    spec.url, http_client=client, max_sse_event_size=MAX_MESSAGE_BYTES
                )
            )
            read = _EndSignallingStream(read, lost)
        return read, write

    async def _open_session(self, stack: contextlib.AsyncExitStack, read: Any, write: Any) -> Any:
        from mcp.client.session import ClientSession
        from mcp_types import Implementation

        return await stack.enter_async_context(
            ClientSession(
                read,
                write,
                message_handler=self._on_message,
                client_info=Implementation(name="agentd", version=__version__),
            )
        )

    async def _report_start_failure(self, exc: BaseException) -> None:
        if self.spec.command and not isinstance(exc, TimeoutError):
            # A server that exits at once usually says why on stderr; its last lines
            # are part of the error.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await self._stderr_done.wait()
        self._failure_reported = True
        self._set_state("failed", self._describe(exc))
        # Logged as it is reported: whoever sees the state (mcp/list) may stop agentd
        # before this task ends.
        self._log_start_failure()

    def _log_start_failure(self) -> None:
        logger.warning("MCP server %s failed to start: %s", self.spec.name, self.error)

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
        seen: set[str] = set()
        unique = []
        duplicates = []
        for tool in tools:
            if tool.name in seen:
                duplicates.append(tool.name)
            else:
                seen.add(tool.name)
                unique.append(tool)
        self.tools = unique
        self.duplicates = sorted(set(duplicates))
        self._hub.tools_changed()

    async def _on_message(self, message: Any) -> None:
        if getattr(message, "method", None) == "notifications/tools/list_changed":
            # Coalesced: one relisting at a time and at most one queued, however many
            # notifications arrive. Not inline: the SDK awaits this handler in its read
            # loop, and the listing needs that loop to receive its answer.
            if self._relisting:
                self._relist_queued = True
            else:
                self._relisting = True
                self._hub.spawn(self._refresh_tools())
        elif isinstance(message, Exception):
            logger.debug("MCP server %s transport: %s", self.spec.name, message)

    async def _refresh_tools(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                self._relist_queued = False
                started = loop.time()
                session = self.session
                if session is None:
                    return
                before = self.tools
                try:
                    await self._list_tools(session)
                except Exception as exc:
                    logger.warning("MCP server %s: relisting tools failed: %s", self.spec.name, exc)
                    return
                if self.session is session and self.tools != before:
                    self._notify()
                if not self._relist_queued:
                    return
                await asyncio.sleep(max(0.0, started + RELIST_MIN_INTERVAL_S - loop.time()))
        finally:
            self._relisting = False

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

            if _is_too_large(exc.message):
                raise McpCallError(
                    f"{self.spec.name}: the result of {tool} is too large: over the "
                    f"{MAX_MESSAGE_BYTES // (1024 * 1024)} MiB agentd reads from a server; "
                    "it was dropped"
                ) from None
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
        if state in ("failed", "stopped") and self.tools:
            self.tools = []
            self.duplicates = []
            self._hub.tools_changed()
        if state == "starting":
            self._settled.clear()
        else:
            self._settled.set()
        self._notify()

    def _notify(self) -> None:
        self._hub.notify_status(self)

    def info(self, names: dict[tuple[str, str], ToolName]) -> t.McpServerInfo:
        tools = []
        for tool in self.tools:
            named = names.get((self.spec.name, tool.name))
            tools.append(
                t.McpToolInfo(
                    name=tool.name,
                    qualified_name=named.name
                    if named
                    else qualified_name(self.spec.name, tool.name),
                    description=tool.description,
                    allowed=self.allows(tool.name),
                    collides_with=list(named.collides_with)
                    if named and named.collides_with
                    else None,
                )
            )
        return t.McpServerInfo(
            name=self.spec.name,
            state=self.state,  # type: ignore[arg-type]
            error=self.error,
            session_id=self.spec.session_id,
            transport=self.transport,  # type: ignore[arg-type]
            trust=self.spec.trust,  # type: ignore[arg-type]
            enabled=self.spec.enabled,
            tools=tools,
            collisions=self.collisions(names) or None,
        )

    def collisions(self, names: dict[tuple[str, str], ToolName]) -> list[str]:
        """One line for each of this server's tools that lost its plain name, and for
        each tool name it listed twice."""
        lines = []
        for tool in self.tools:
            named = names.get((self.spec.name, tool.name))
            if named is not None and named.renamed:
                lines.append(
                    f"{tool.name} is offered as {named.name}: "
                    f"{qualified_name(self.spec.name, tool.name)} is "
                    f"{' and '.join(named.collides_with)}'s"
                )
        lines += [f"{name} is listed twice; the first is used" for name in self.duplicates]
        return lines

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
        if isinstance(exc, TimeoutError) and self._phase != "start":
            return f"no answer to {self._phase} within {self.spec.startup_timeout_s:g} s"
        # Sent to the editor (mcp/status) and, for a call, to the model and the session
        # log: a transport error may quote what the server sent back, secrets included.
        text = redaction.redact(str(exc)) or type(exc).__name__
        if _is_too_large(text):
            text = f"its answer to {self._phase} is over the {MAX_MESSAGE_BYTES} bytes agentd reads"
        if self._stderr_tail:
            text += f"; its last output: {' | '.join(self._stderr_tail)}"
        return text

    @contextlib.asynccontextmanager
    async def _stderr_to_log(self) -> AsyncIterator[Any]:
        """A pipe for the server's stderr, read into agentd's log (never stdout)."""
        read_fd, write_fd = os.pipe()
        writer = os.fdopen(write_fd, "w")
        self._stderr_done = asyncio.Event()
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
        # Cut lines are marked "…" where they are cut, so that redaction also masks the
        # part of a secret the cut leaves (agentd.redaction).
        continued = False
        try:
            while True:
                try:
                    raw = await reader.readline()
                    head, continued = ("…" if continued else ""), False
                except ValueError:  # a line longer than the limit (its start is dropped)
                    raw = await reader.read(1 << 20)
                    head, continued = "…", True
                if not raw:
                    return
                line = raw.decode("utf-8", "replace").rstrip()
                if len(line) > STDERR_LINE_MAX or continued:
                    line = line[:STDERR_LINE_MAX] + "…"
                line = head + line if line else ""
                if line:
                    # The tail reaches the editor, the model and the session log too.
                    self._stderr_tail.append(redaction.redact(line))
                    logger.info("[%s] %s", name, line)
        finally:
            self._stderr_done.set()
            transport.close()


# The marks of an answer too large, in the errors the transports give: agentd's own
# (stdio lines, HTTP bodies) and the SDK's SSE parser's.
_TOO_LARGE = "over agentd's limit of"
_SSE_TOO_LARGE = re.compile(r"Server-sent event exceeded the \d+ byte limit")


def _is_too_large(message: str) -> bool:
    return _TOO_LARGE in message or _SSE_TOO_LARGE.search(message) is not None


def _too_large_text(size: int, complete: bool) -> str:
    return (
        f"the answer ({size} bytes{'' if complete else ' and more'}) is "
        f"{_TOO_LARGE} {MAX_MESSAGE_BYTES} bytes; it was dropped"
    )


# A JSON-RPC id at the start of a message (first member, or second after "jsonrpc") or at
# its end (last member, or last but "jsonrpc"): where the SDKs put it. Only a top-level
# member can sit there in well-formed JSON.
_JSONRPC = rb'"jsonrpc"\s*:\s*"2\.0"\s*'
_ID_VALUE = rb'(-?\d+|"(?:[^"\\]|\\.)*")'
_HEAD_ID = re.compile(rb"^\s*\{\s*(?:" + _JSONRPC + rb',\s*)?"id"\s*:\s*' + _ID_VALUE)
_TAIL_ID = re.compile(rb',\s*"id"\s*:\s*' + _ID_VALUE + rb"\s*(?:,\s*" + _JSONRPC + rb")?\}\s*$")
_HEAD_METHOD = re.compile(rb"^\s*\{\s*(?:" + _JSONRPC + rb',\s*)?"method"\s*:')


def _message_id(line: OversizedLine) -> str | None:
    """The id of an oversized message, as its JSON text, when it can be found."""
    match = _HEAD_ID.match(line.head)
    if match is None and line.complete:
        match = _TAIL_ID.search(line.tail)
    if match is None:
        return None
    try:
        return json.dumps(json.loads(match.group(1)))
    except ValueError:
        return None


class _StdioReadStream:
    """What the SDK's session reads from a stdio server: parsed messages, with an error
    answer in place of an oversized one. Sets `lost` when the server's output ends."""

    def __init__(
        self,
        proc: StdioServerProcess,
        lost: asyncio.Event,
        name: str,
        on_large: Callable[[], None],
    ) -> None:
        self._proc = proc
        self._lost = lost
        self._name = name
        self._on_large = on_large
        # Requests sent and not answered yet: id as JSON text → the id.
        self.pending: dict[str, Any] = {}
        self._answers: deque[Any] = deque()  # error answers standing in for dropped ones
        self._answered: OversizedLine | None = None

    async def receive(self) -> Any:
        import anyio
        from mcp.shared.message import SessionMessage
        from mcp_types import JSONRPCError, JSONRPCResponse, jsonrpc_message_adapter

        while not self._answers:
            try:
                item = await self._proc.read()
            except (OSError, ValueError) as exc:
                logger.debug("MCP server %s: reading failed: %s", self._name, exc)
                item = None
            if item is None:
                self._lost.set()
                raise anyio.EndOfStream
            if isinstance(item, OversizedLine):
                self._oversized(item)
                continue
            try:
                if len(item) >= RELEASE_AFTER_BYTES:
                    self._on_large()
                if len(item) >= PARSE_IN_THREAD_BYTES:
                    message = await asyncio.to_thread(
                        jsonrpc_message_adapter.validate_json, item, by_name=False
                    )
                else:
                    message = jsonrpc_message_adapter.validate_json(item, by_name=False)
            except ValueError as exc:
                return exc  # the SDK hands it to the message handler, which logs it
            if isinstance(message, JSONRPCResponse | JSONRPCError):
                self.pending.pop(json.dumps(message.id), None)
            return SessionMessage(message)
        return self._answers.popleft()

    def _oversized(self, line: OversizedLine) -> None:
        """Answer the request an oversized message answers with an error, as soon as
        its id is known; when it cannot be found, every waiting request (a message
        that is a request or notification of the server's own is just dropped)."""
        from mcp.shared.message import SessionMessage
        from mcp_types import INTERNAL_ERROR, ErrorData, JSONRPCError

        if line is self._answered:
            return
        key = _message_id(line)
        if key is not None:
            targets = [key] if key in self.pending else []
        elif _HEAD_METHOD.match(line.head) is not None:
            targets = []  # a request or notification of the server's own
        elif not line.complete:
            return  # decided at its end, where the id may be
        else:
            targets = list(self.pending)
        logger.warning(
            "MCP server %s: a message of %d bytes%s is over the %d byte limit: dropped%s",
            self._name,
            line.size,
            "" if line.complete else " and more",
            MAX_MESSAGE_BYTES,
            f" (it answers {len(targets)} request(s))" if targets else "",
        )
        self._answered = line
        for target in targets:
            request_id = self.pending.pop(target)
            error = ErrorData(
                code=INTERNAL_ERROR, message=_too_large_text(line.size, line.complete)
            )
            self._answers.append(
                SessionMessage(JSONRPCError(jsonrpc="2.0", id=request_id, error=error))
            )

    async def aclose(self) -> None:
        self._lost.set()

    def __aiter__(self) -> _StdioReadStream:
        return self

    async def __anext__(self) -> Any:
        import anyio

        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> _StdioReadStream:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


class _StdioWriteStream:
    """What the SDK's session writes to a stdio server: one JSON line per message. Keeps
    the read stream's table of requests waiting for an answer."""

    def __init__(
        self, proc: StdioServerProcess, lost: asyncio.Event, pending: dict[str, Any]
    ) -> None:
        self._proc = proc
        self._lost = lost
        self._pending = pending
        self._closed = False

    async def send(self, item: Any) -> None:
        import anyio
        from mcp_types import JSONRPCNotification, JSONRPCRequest

        if self._closed:
            raise anyio.ClosedResourceError
        message = item.message
        if isinstance(message, JSONRPCRequest):
            self._pending[json.dumps(message.id)] = message.id
            if len(self._pending) > PENDING_MAX:
                del self._pending[next(iter(self._pending))]
        elif isinstance(message, JSONRPCNotification) and message.method == (
            "notifications/cancelled"
        ):
            request_id = (message.params or {}).get("requestId")
            self._pending.pop(json.dumps(request_id), None)
        data = message.model_dump_json(by_alias=True, exclude_unset=True).encode() + b"\n"
        try:
            await self._proc.write(data)
        except (OSError, RuntimeError) as exc:  # the server closed its stdin or exited
            self._lost.set()
            raise anyio.BrokenResourceError from exc

    async def aclose(self) -> None:
        self._closed = True

    async def __aenter__(self) -> _StdioWriteStream:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


@functools.cache
def _capped_body_type() -> type:
    import httpx2

    class CappedBody(httpx2.AsyncByteStream):
        """A response body read up to MAX_MESSAGE_BYTES. Its error is a StreamError,
        which the SDK turns into an error answer for the request (anything else
        would end the whole connection)."""

        def __init__(self, inner: Any, encoding: str) -> None:
            self._inner = inner
            self._encoding = encoding

        async def __aiter__(self) -> AsyncIterator[bytes]:
            if self._encoding not in ("", "identity"):
                # Decompressed bytes are not counted here: a small gzip body can hold
                # gigabytes. agentd asks for none.
                raise httpx2.StreamError(
                    f"the answer is compressed ({self._encoding}) though agentd asked for "
                    "none, so its size cannot be bounded; it was dropped"
                )
            size = 0
            async for chunk in self._inner:
                size += len(chunk)
                if size > MAX_MESSAGE_BYTES:
                    raise httpx2.StreamError(_too_large_text(size, False))
                yield chunk

        async def aclose(self) -> None:
            await self._inner.aclose()

    return CappedBody


def _http_client(headers: dict[str, str]) -> Any:
    """The HTTP client of a streamable-HTTP server: uncompressed answers, each body
    bounded (SSE events are bounded by the SDK, given MAX_MESSAGE_BYTES)."""
    import httpx2

    body_type = _capped_body_type()

    async def cap_body(response: Any) -> None:
        content_type = response.headers.get("content-type", "").lower()
        if not content_type.startswith("text/event-stream"):
            encoding = response.headers.get("content-encoding", "").strip().lower()
            response.stream = body_type(response.stream, encoding)

    return httpx2.AsyncClient(
        headers={"accept-encoding": "identity", **headers},
        timeout=httpx2.Timeout(30.0, read=300.0),
        event_hooks={"response": [cap_body]},
    )


class _EndSignallingStream:
    """The SDK's read stream, passed through; sets `lost` when it ends. The SDK has no
    hook for "the server went away" (its session just fails later requests), and a
    restart needs one."""

    def __init__(self, inner: Any, lost: asyncio.Event) -> None:
        self._inner = inner
        self._lost = lost

    async def receive(self) -> Any:
        return await self._watched(self._inner.receive())

    async def aclose(self) -> None:
        self._lost.set()
        await self._inner.aclose()

    def __aiter__(self) -> _EndSignallingStream:
        return self

    async def __anext__(self) -> Any:
        return await self._watched(self._inner.__anext__())

    async def _watched(self, awaitable: Awaitable[Any]) -> Any:
        """What the inner stream gives; its end or failure signals the loss."""
        try:
            return await awaitable
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
        notify: Callable[[str, t.McpStatusParams], None],
        tool_context_dir: Path,
    ) -> None:
        self._config = {spec.name: spec for spec in specs}
        self._notify = notify
        # What every stdio server agentd starts finds in its environment.
        self.server_env = {ENV_DIR: str(tool_context_dir)}
        self._session_specs: dict[str, dict[str, McpServerSpec]] = {}
        self._connections: dict[tuple[str | None, str], McpConnection] = {}
        self._background: set[asyncio.Task[Any]] = set()
        # Server processes being stopped: shutdown waits for them.
        self._process_stops: set[asyncio.Task[None]] = set()
        # Tool names by namespace (None: the configured servers; else a session id),
        # computed again after any tool list changes.
        self._names: dict[str | None, dict[tuple[str, str], ToolName]] = {}
        self._release: asyncio.TimerHandle | None = None
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
        self._names.pop(session_id, None)

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

    # --- tool names --------------------------------------------------------------------

    def tool_names(self, session_id: str | None) -> dict[tuple[str, str], ToolName]:
        """The model-visible names of the listed tools a session's runs may see, by
        (server, tool) (agentd/mcp_names.py). The configured servers' tools are named
        among themselves, so their names are the same in every session; a session's own
        servers' tools are named around them."""
        names = self._names.get(session_id)
        if names is not None:
            return names
        if session_id is None or session_id not in self._session_specs:
            names = self._names.get(None)
            if names is None:
                names = self._names[None] = assign_names(
                    self._listed(None, self._config), BUILTIN_TOOL_NAMES
                )
        else:
            own = self._session_specs[session_id]
            config = self.tool_names(None)
            fixed = {pair: name for pair, name in config.items() if pair[0] not in own}
            names = {
                **fixed,
                **assign_names(self._listed(session_id, own), BUILTIN_TOOL_NAMES, fixed),
            }
        self._names[session_id] = names
        return names

    def _listed(
        self, session_id: str | None, specs: dict[str, McpServerSpec]
    ) -> list[tuple[str, str]]:
        pairs = []
        for name in specs:
            conn = self._connections.get((session_id, name))
            if conn is not None:
                pairs += [(name, tool.name) for tool in conn.tools]
        return pairs

    def tools_changed(self) -> None:
        """A server's tool list changed: names are computed again, and a ready server
        whose collisions changed with it is reported (mcp/status)."""
        self._names.clear()
        for conn in list(self._connections.values()):
            if conn.state == "ready" and conn.reported_collisions is not None:
                if self._collisions(conn) != conn.reported_collisions:
                    self.notify_status(conn)

    def _collisions(self, conn: McpConnection) -> list[str]:
        return conn.collisions(self.tool_names(conn.spec.session_id))

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
        names = self.tool_names(session_id)
        tools: list[McpTool] = []
        for conn in conns:
            if conn.state != "ready":
                continue
            for tool in conn.tools:
                named = names.get((conn.spec.name, tool.name))
                if named is None or not conn.allows(tool.name):
                    continue
                tools.append(
                    McpTool(
                        qualified_name=named.name,
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
        names = self.tool_names(p.session_id)
        servers = []
        for spec in specs:
            conn = self._connections.get((spec.session_id, spec.name))
            if conn is None:
                conn = McpConnection(spec, self)  # never started: "stopped", no tools
            servers.append(conn.info(names))
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
        ready = conn.state == "ready"
        collisions = self._collisions(conn) if ready else None
        conn.reported_collisions = collisions
        status = t.McpStatusServer(
            name=conn.spec.name,
            state=conn.state,  # type: ignore[arg-type]
            error=conn.error,
            session_id=conn.spec.session_id,
            tool_count=len(conn.tools) if ready else None,
            collisions=collisions or None,
        )
        self._notify("mcp/status", t.McpStatusParams(server=status))

    def release_memory_soon(self) -> None:
        """A large message arrived: in RELEASE_DELAY_S, when it has been handled, give
        the memory its copies took back to the OS."""
        if self._release is None:
            loop = asyncio.get_running_loop()
            self._release = loop.call_later(RELEASE_DELAY_S, self._release_now)

    def _release_now(self) -> None:
        self._release = None
        self.spawn(asyncio.to_thread(_malloc_trim))

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def stop_process(self, proc: StdioServerProcess) -> None:
        """Stop a server's process in a task of its own: a second cancellation of the
        connection (shutdown's) must not cut the escalation short, which would leave
        the process, or on Linux its children, running."""
        task = asyncio.ensure_future(proc.stop())
        self._process_stops.add(task)
        task.add_done_callback(self._process_stops.discard)
        await asyncio.shield(task)

    def _retire(self, key: tuple[str | None, str]) -> None:
        conn = self._connections.pop(key, None)
        if conn is not None:
            self.spawn(conn.stop())
            self.tools_changed()

    async def shutdown(self) -> None:
        self.closing = True
        if self._release is not None:
            self._release.cancel()
        conns = list(self._connections.values())
        stops = [conn.stop() for conn in conns]
        if stops:
            await asyncio.gather(*stops, return_exceptions=True)
        if self._process_stops:
            await asyncio.wait(set(self._process_stops), timeout=SHUTDOWN_GRACE_S)
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.wait(set(self._background), timeout=SHUTDOWN_GRACE_S)


SDK_MODULES = (
    "anyio",
    "httpx2",
    "mcp_types",
    "mcp.client.session",
    "mcp.client.stdio",
    "mcp.client.streamable_http",
    "mcp.shared.exceptions",
    "mcp.shared.message",
)


def import_sdk() -> None:
    """Import the parts of the SDK agentd uses (run in a thread)."""
    for module in SDK_MODULES:
        importlib.import_module(module)


def _malloc_trim() -> None:
    """glibc's malloc_trim(0): free pages of every arena back to the OS (elsewhere, a
    no-op)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


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
