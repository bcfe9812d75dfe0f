"""The JSON-RPC server: pygls's JsonRPCServer, hardened for a non-LSP daemon.

Stock pygls 2.1 drops requests whose params fail to structure (and requests without
params), gives no -32700 for non-JSON frames, skips LF-only headers, drops batches,
hands unknown methods namedtuples, reads stdin through its shared thread pool, writes
stdout with a blocking write on the event loop, and puts tracebacks on the wire. Each
is fixed through pygls's own extension points:

- `FrameReader` is the reader `pygls.io_.run_async` reads from: it parses frames
  leniently from an asyncio pipe (any header case, LF or CRLF, a size limit, resync
  after garbage) and hands run_async canonical frames;
- `AgentdProtocol` subclasses `JsonRPCProtocol`: the method table types every params
  object (invalid params are -32602 naming the field), errors are mapped without
  tracebacks, the not-initialized gate, batches, `$/cancelRequest`;
- `PipeWriter` is set with `protocol.set_writer`: non-blocking asyncio pipe writes,
  with a congestion signal the run stream uses to coalesce deltas (backpressure).

Only this module imports pygls.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import re
import signal
import sys
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import orjson
from pygls.io_ import run_async
from pygls.protocol import JsonRPCProtocol, default_converter
from pygls.server import JsonRPCServer

from agentd import __version__
from agentd.config import Config
from agentd.errors import AgentdError, StorageError
from agentd.protocol import METHODS, PROTOCOL_VERSION, describe_error, unstructure
from agentd.protocol import types as t
from agentd.protocol.converter import structure_params
from agentd.protocol.methods import agentd_notifications, editor_requests
from agentd.runs import RunManager
from agentd.session import SessionManager

logger = logging.getLogger(__name__)

_HEADER_RE = re.compile(rb"^\s*content-length\s*:\s*(\S*)\s*$", re.IGNORECASE)
# A body that is never valid JSON: run_async's json.loads fails on it and calls our
# error handler, which then reports the reader's recorded framing error.
_BAD_FRAME = b"\x00"
# Writes beyond this are buffered in memory and signal congestion to producers.
WRITE_HIGH_WATER = 256 * 1024


class FrameReader:
    """Reads LSP-framed messages from an asyncio StreamReader for `run_async`.

    run_async expects header lines then a body of exactly Content-Length bytes; this
    class does the lenient parsing and presents each frame canonically. Framing errors
    become a frame with an invalid body plus a recorded error (see `take_error`).
    """

    def __init__(self, stream: asyncio.StreamReader, max_frame_bytes: int) -> None:
        self._stream = stream
        self._max = max_frame_bytes
        self._pushback = b""
        self._pending: list[bytes] = []
        self._body: bytes | None = None
        self._error: tuple[int, str] | None = None
        self.last_body = b""
        self._eof = False
        # Bytes of an oversized frame still to discard.
        self._discard = 0

    def take_error(self) -> tuple[int, str] | None:
        err, self._error = self._error, None
        return err

    def push_back(self, data: bytes) -> None:
        self._pushback = data + self._pushback

    def close(self) -> None:
        self._eof = True

    async def _raw_line(self) -> bytes:
        if self._pushback:
            idx = self._pushback.find(b"\n")
            if idx >= 0:
                line, self._pushback = self._pushback[: idx + 1], self._pushback[idx + 1 :]
                return line
            rest, self._pushback = self._pushback, b""
            return rest + await self._stream_line()
        return await self._stream_line()

    async def _stream_line(self) -> bytes:
        try:
            return await self._stream.readline()
        except ValueError:
            # A line over the stream's limit: garbage. Discard what is buffered.
            return b"\n"

    async def _chunk(self, limit: int) -> bytes:
        """Up to `limit` bytes: the pushback first, else what the pipe has (b"" at EOF)."""
        if self._pushback:
            chunk, self._pushback = self._pushback[:limit], self._pushback[limit:]
            return chunk
        return await self._stream.read(limit)

    async def _read_body(self, n: int, *, keep: bool) -> bytes | None:
        """Read an announced body of `n` bytes (discarding it unless `keep`). A body
        shorter than announced runs into the next frame's header. A `Content-Length`
        header inside the bytes read can only belong to a JSON body when it sits in a
        string, and JSON strings hold no raw newline: so a header at the start, after a
        raw newline, or right after a complete JSON value starts the next frame (for a
        discarded body, any header does). The rest is pushed back. None at end of input."""
        buf = bytearray()
        seen = 0
        while seen < n:
            chunk = await self._chunk(min(n - seen, 1 << 16))
            if not chunk:
                return None
            start = max(0, len(buf) - 16)
            buf += chunk
            seen += len(chunk)
            for match in _HEADER_SEARCH.finditer(buf, start):
                at = match.start()
                head = bytes(buf[:at])
                if not keep or at == 0 or buf[at - 1] in b"\r\n" or _is_json(head):
                    self.push_back(bytes(buf[match.start() :]))
                    return head if keep else b""
            if not keep:
                del buf[: max(0, len(buf) - 16)]
        return bytes(buf) if keep else b""

    async def _next_frame(self) -> bool:
        """Parse the next frame into `_pending` (header lines) and `_body`."""
        length: int | None = None
        bad_header: str | None = None
        seen_header = False
        while True:
            if self._eof:
                return False
            line = await self._raw_line()
            if not line:
                return False
            stripped = line.strip()
            if not stripped:
                if not seen_header:
                    continue  # stray blank lines between frames
                break
            match = _HEADER_RE.match(line)
            if match:
                seen_header = True
                value = match.group(1)
                if value.isdigit():
                    length = int(value)
                    bad_header = None
                else:
                    bad_header = f"invalid Content-Length header: {value[:40]!r}"
            elif b":" in stripped and seen_header:
                continue  # another header (Content-Type): accepted and ignored
            # Anything else before a Content-Length header is garbage: skip it.
        if length is None:
            self._set_bad(-32700, bad_header or "missing Content-Length header")
            return True
        if length > self._max:
            self._set_bad(-32600, f"frame of {length} bytes exceeds the limit of {self._max}")
            # Answered now; the body is discarded as it arrives (or up to the next header).
            self._discard = length
            return True
        body = await self._read_body(length, keep=True)
        if body is None:
            return False
        self._pending = [b"Content-Length: %d\r\n" % len(body), b"\r\n"]
        self._body = body
        return True

    def _set_bad(self, code: int, message: str) -> None:
        self._error = (code, message)
        self._pending = [b"Content-Length: %d\r\n" % len(_BAD_FRAME), b"\r\n"]
        self._body = _BAD_FRAME

    async def readline(self) -> bytes:
        if self._discard and not self._pending:
            n, self._discard = self._discard, 0
            if await self._read_body(n, keep=False) is None:
                return b""
        if not self._pending and not await self._next_frame():
            return b""
        return self._pending.pop(0)

    async def readexactly(self, n: int) -> bytes:
        body, self._body = self._body or b"", None
        self.last_body = body
        return body


class PipeWriter:
    """Writes frames to an asyncio write transport without blocking the loop."""

    def __init__(self) -> None:
        self.transport: asyncio.WriteTransport | None = None
        self._drained: list[Callable[[], None]] = []
        self._paused = False
        self._sync_fd: int | None = None
        self.closed = False

    def protocol_factory(self) -> asyncio.BaseProtocol:
        writer = self

        class _Protocol(asyncio.Protocol):
            def pause_writing(self) -> None:
                writer._paused = True

            def resume_writing(self) -> None:
                writer._paused = False
                writer._run_drained()

            def connection_lost(self, exc: Exception | None) -> None:
                writer.closed = True
                writer._run_drained()

        return _Protocol()

    def use_fd(self, fd: int) -> None:
        """Fallback when stdout is a regular file: plain writes (they do not block long)."""
        self._sync_fd = fd

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        if self._sync_fd is not None:
            view = memoryview(data)
            while view:
                view = view[os.write(self._sync_fd, view) :]
            return
        assert self.transport is not None
        self.transport.write(data)

    def congested(self) -> bool:
        return self._paused or (
            self.transport is not None and self.transport.get_write_buffer_size() > 0
        )

    def when_drained(self, callback: Callable[[], None]) -> None:
        """Call `callback` once the buffer has room (at once if it has)."""
        if not self.congested() or self.closed:
            callback()
            return
        self._drained.append(callback)
        if not self._paused:
            # Below the high-water mark asyncio sends no resume: poll on the next turns.
            asyncio.get_running_loop().call_later(0.001, self._poll)

    def _poll(self) -> None:
        if self._drained and not self._paused:
            if self.congested():
                asyncio.get_running_loop().call_later(0.001, self._poll)
            else:
                self._run_drained()

    def _run_drained(self) -> None:
        callbacks, self._drained = self._drained, []
        for cb in callbacks:
            cb()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class AgentdProtocol(JsonRPCProtocol):
    """JSON-RPC for agentd: typed params from the method table, mapped errors."""

    _server: AgentdServer

    def __init__(self, server: AgentdServer, converter: Any) -> None:
        super().__init__(server, converter)
        self.initialized = False
        self.shutdown_requested = False
        self._outgoing: set[str] = set()
        # Request ids of session/chat calls, so $/cancelRequest can abort the run.
        self.cancel_hooks: dict[Any, Callable[[], None]] = {}

    # Parsing happens in handle_message, where errors can be answered; as run_async's
    # object_hook this must not raise.
    def structure_message(self, data: dict[str, Any]) -> Any:
        return data

    def handle_message(self, message: Any) -> None:
        if isinstance(message, list):
            if not message:
                self._reply_error(None, -32600, "empty batch")
            for item in message:
                self.handle_message(item)
            return
        try:
            self._dispatch(message)
        except Exception:
            logger.exception("unexpected error while handling a message")
            msg_id = message.get("id") if isinstance(message, dict) else None
            if isinstance(message, dict) and "method" in message and msg_id is not None:
                self._reply_error(msg_id, -32603, "internal error")

    def _dispatch(self, msg: Any) -> None:
        if not isinstance(msg, dict):
            self._reply_error(None, -32600, "a message must be a JSON object")
            return
        msg_id = msg.get("id")
        has_id = "id" in msg
        if msg.get("jsonrpc") != "2.0":
            self._reply_error(
                msg_id if _valid_id(msg_id) else None, -32600, 'jsonrpc must be "2.0"'
            )
            return
        if has_id and not _valid_id(msg_id):
            self._reply_error(None, -32600, "id must be a string or an integer")
            return
        method = msg.get("method")
        if method is None:
            if has_id and ("result" in msg or "error" in msg):
                self._on_response(msg_id, msg)
            else:
                self._reply_error(msg_id, -32600, "not a request, notification or response")
            return
        if not isinstance(method, str):
            self._reply_error(msg_id, -32600, "method must be a string")
            return
        if has_id:
            self._on_request(msg_id, method, msg.get("params"))
        else:
            self._on_notification(method, msg.get("params"))

    def _on_request(self, msg_id: Any, method: str, raw: Any) -> None:
        if msg_id in self._request_futures:
            self._reply_error(msg_id, -32600, f"request id {msg_id!r} is already in use")
            return
        if self.shutdown_requested:
            self._reply_error(msg_id, -32600, "server is shutting down")
            return
        spec = METHODS.get(method)
        if spec is None or spec.sender != "editor" or spec.kind != "request":
            if not self.initialized and method != "initialize":
                self._reply_error(msg_id, -32002, "server not initialized")
                return
            self._reply_error(msg_id, -32601, f"method not found: {method}")
            return
        if not self.initialized and method != "initialize":
            self._reply_error(msg_id, -32002, "server not initialized")
            return
        params = self._structure_params(msg_id, spec.params, raw)
        if params is _INVALID:
            return
        if method == "initialize":
            # Requests the editor pipelines right behind `initialize` are served: the
            # gate opens when it is dispatched, not when its (async) handler finishes.
            self.initialized = True
        self._handle_request(msg_id, method, params)

    def _structure_params(self, msg_id: Any, cls: type | None, raw: Any) -> Any:
        if cls is None:
            return None
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            self._reply_error(msg_id, -32602, "params must be an object", {"field": "params"})
            return _INVALID
        try:
            return structure_params(raw, cls)
        except Exception as exc:
            problems = describe_error(exc)
            self._reply_error(
                msg_id, -32602, "invalid params: " + "; ".join(problems), {"errors": problems}
            )
            return _INVALID

    def _on_notification(self, method: str, raw: Any) -> None:
        if method == "$/cancelRequest":
            if isinstance(raw, dict) and _valid_id(raw.get("id")):
                self._cancel(raw["id"])
            return
        if method == "exit":
            self._server.exit(0 if self.shutdown_requested else 1)
            return
        spec = METHODS.get(method)
        if spec is None or spec.sender != "editor" or spec.kind != "notification":
            return  # unknown notifications (textDocument/didOpen, $/setTrace...) are ignored
        if not self.initialized:
            return
        if method == "initialized":
            self._server.on_initialized()

    def _cancel(self, msg_id: Any) -> None:
        hook = self.cancel_hooks.pop(msg_id, None)
        if hook is not None:
            hook()  # session/chat: abort the run; it answers -32800 when persisted
            return
        future = self._request_futures.get(msg_id)
        if future is not None:
            future.cancel()

    def _on_response(self, msg_id: Any, msg: dict[str, Any]) -> None:
        if msg_id not in self._outgoing:
            logger.debug("ignoring a response to an id agentd never sent")
            return
        self._outgoing.discard(msg_id)
        future = self._request_futures.pop(msg_id, None)
        if future is None or future.done():
            return
        error = msg.get("error")
        if error is not None:
            err = error if isinstance(error, dict) else {}
            future.set_exception(
                EditorError(
                    err.get("code", -32603), str(err.get("message", "error")), err.get("data")
                )
            )
        else:
            future.set_result(msg.get("result"))

    # --- results and errors ------------------------------------------------------------

    def _send_handler_result(self, future: Future[Any], *, msg_id: Any) -> None:
        self._request_futures.pop(msg_id, None)
        self.cancel_hooks.pop(msg_id, None)
        if future.cancelled():
            self._reply_error(msg_id, -32800, "request cancelled")
            return
        exc = future.exception()
        if exc is None:
            result = future.result()
            self._write(
                {
                    "jsonrpc": "2.0",
                    "id": msg_id,
                    "result": None if result is None else unstructure(result),
                }
            )
        elif isinstance(exc, AgentdError):
            self._reply_error(msg_id, exc.code, exc.message, exc.data)
        else:
            logger.error("handler failed for request %r", msg_id, exc_info=exc)
            self._reply_error(msg_id, -32603, f"internal error: {type(exc).__name__}")

    def _reply_error(self, msg_id: Any, code: int, message: str, data: Any = None) -> None:
        error: dict[str, Any] = {"code": code, "message": message}
        if data is not None:
            error["data"] = data
        self._write({"jsonrpc": "2.0", "id": msg_id, "error": error})

    def _write(self, message: dict[str, Any]) -> None:
        if self.writer is None:
            return
        try:
            body = orjson.dumps(message)
        except TypeError:
            logger.exception("unserialisable message")
            return
        self.writer.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # type: ignore[union-attr]

    def notify(self, method: str, params: Any | None = None) -> None:
        self._write({"jsonrpc": "2.0", "method": method, "params": params})

    def send_request(
        self, method: str, params: Any | None = None, callback: Any = None, msg_id: Any = None
    ) -> Future[Any]:
        msg_id = msg_id or f"agentd-{uuid.uuid4().hex[:16]}"
        future: Future[Any] = Future()
        future.agentd_msg_id = msg_id  # type: ignore[attr-defined]
        self._request_futures[msg_id] = future
        self._outgoing.add(msg_id)
        self._write({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        return future

    def forget_request(self, msg_id: Any) -> None:
        """Give up on an outgoing request: tell the editor, drop the bookkeeping."""
        if msg_id in self._outgoing:
            self._outgoing.discard(msg_id)
            self._request_futures.pop(msg_id, None)
            self.notify("$/cancelRequest", {"id": msg_id})


class EditorError(Exception):
    """The editor answered one of agentd's requests with an error."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


_INVALID = object()


def _valid_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


class AgentdServer(JsonRPCServer):
    protocol: AgentdProtocol

    def __init__(self, config: Config) -> None:
        super().__init__(AgentdProtocol, default_converter)  # type: ignore[arg-type]
        self.config = config
        self.writer = PipeWriter()
        self.exit_code: int | None = None
        self._reader: FrameReader | None = None
        self._stop = threading.Event()
        # Storage start-up, begun with the first request (see create_server).
        self.startup: asyncio.Future[None] | None = None
        # Called when the editor sends `initialized` (set by create_server).
        self.on_initialized: Callable[[], None] = lambda: None

    # --- the EditorLink the session layer uses -----------------------------------------

    def notify(self, method: str, params: dict[str, Any]) -> None:
        self.protocol.notify(method, params)

    def request(self, method: str, params: dict[str, Any]) -> asyncio.Future[Any]:
        future = self.protocol.send_request(method, params)
        msg_id = future.agentd_msg_id  # type: ignore[attr-defined]
        wrapped = asyncio.wrap_future(future)

        def on_done(f: asyncio.Future[Any]) -> None:
            if f.cancelled():
                self.protocol.forget_request(msg_id)

        wrapped.add_done_callback(on_done)
        return wrapped

    def congested(self) -> bool:
        return self.writer.congested()

    def when_drained(self, callback: Callable[[], None]) -> None:
        self.writer.when_drained(callback)

    # --- running -----------------------------------------------------------------------

    def exit(self, code: int) -> None:
        self.exit_code = code
        self._stop.set()
        if self._reader is not None:
            self._reader.close()
            self._stream_reader.feed_eof()

    async def serve(self, stdin: Any, stdout: Any) -> int:
        loop = asyncio.get_running_loop()
        self._stream_reader = stream = asyncio.StreamReader(limit=1 << 16)
        try:
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stream), stdin)
        except ValueError:
            # Not a pipe (a regular file): feed it from a dedicated thread, never pygls's pool.
            _feed_from_thread(loop, stream, stdin)
        try:
            transport, _ = await loop.connect_write_pipe(self.writer.protocol_factory, stdout)
            transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)  # type: ignore[attr-defined]
            self.writer.transport = transport  # type: ignore[assignment]
        except ValueError:
            self.writer.use_fd(stdout.fileno())
        self.protocol.set_writer(self.writer)  # type: ignore[arg-type]
        self._reader = reader = FrameReader(stream, self.config.max_frame_bytes)

        def on_error(exc: Exception, _: Any) -> None:
            framing = reader.take_error()
            if framing is not None:
                self.protocol._reply_error(None, *framing)
                return
            self.protocol._reply_error(None, -32700, "parse error: the frame is not JSON")
            # A body shorter than announced swallowed the start of the next frame:
            # resynchronise on the Content-Length header inside it.
            idx = _find_header(reader.last_body)
            if idx > 0:
                reader.push_back(reader.last_body[idx:])

        await run_async(self._stop, reader, self.protocol, logger, on_error)  # type: ignore[arg-type]
        return self.exit_code if self.exit_code is not None else 0

    async def flush_output(self) -> None:
        done = asyncio.get_running_loop().create_future()

        def drained() -> None:
            if not done.done():
                done.set_result(None)

        self.writer.when_drained(drained)
        try:
            async with asyncio.timeout(2):
                await done
        except TimeoutError:
            pass


_HEADER_SEARCH = re.compile(rb"content-length\s*:", re.IGNORECASE)


def _is_json(data: bytes) -> bool:
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return True


def _find_header(body: bytes) -> int:
    match = _HEADER_SEARCH.search(body)
    return match.start() if match else -1


def _feed_from_thread(
    loop: asyncio.AbstractEventLoop, stream: asyncio.StreamReader, source: Any
) -> None:
    def pump() -> None:
        fd = source.fileno()
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                loop.call_soon_threadsafe(stream.feed_eof)
                return
            loop.call_soon_threadsafe(stream.feed_data, chunk)

    threading.Thread(target=pump, name="agentd-stdin", daemon=True).start()


# --- handlers: thin, each calls the session manager ------------------------------------


def create_server(config: Config) -> tuple[AgentdServer, SessionManager]:
    """Build the server and its session manager; returns both."""
    server = AgentdServer(config)
    manager = SessionManager(config, server)
    runs = RunManager(manager)
    proto = server.protocol

    # Storage opens (catalog, recovery, tool-context sweep) while the editor's first
    # request is read and `initialize` answered: every other handler waits for it.
    async def start_storage() -> None:
        await asyncio.to_thread(manager.open)
        await runs.recover()

    def ready() -> asyncio.Future[None]:
        if server.startup is None:
            server.startup = asyncio.ensure_future(start_storage())
        return server.startup

    def gated(handler: Callable[..., Any]) -> Callable[..., Any]:
        async def run(params: Any) -> Any:
            try:
                await asyncio.shield(ready())
            except Exception as exc:
                logger.exception("storage unavailable")
                raise StorageError(f"storage unavailable: {exc}") from exc
            result = handler(params)
            return await result if inspect.isawaitable(result) else result

        return run

    async def initialize(params: t.InitializeParams) -> t.InitializeResult:
        caps = dict(params.initialization_options or {})
        caps.update(params.capabilities or {})
        manager.editor.client_tools = caps.get("clientTools") is True
        manager.editor.permission_requests = caps.get("permissionRequests") is True
        manager.editor.workspace_root = _workspace_root(params)
        ready()
        await asyncio.to_thread(manager.toolctx.prepare_dir)
        return t.InitializeResult(
            protocol_version=PROTOCOL_VERSION,
            server_info=t.ServerInfo(name="agentd", version=__version__),
            capabilities=t.ServerCapabilities(
                requests=editor_requests(), notifications=agentd_notifications()
            ),
            tool_context_dir=str(manager.toolctx.directory),
            sandbox=await manager.sandbox_info(),
            tool_context_error=manager.toolctx.unavailable,
        )

    async def shutdown(_: None) -> None:
        proto.shutdown_requested = True
        await runs.shutdown()
        return None

    async def chat(params: t.SessionChatParams) -> t.SessionChatResult:
        msg_id = proto.msg_id
        return await runs.chat(params, lambda hook: proto.cancel_hooks.__setitem__(msg_id, hook))

    handlers: dict[str, Callable[..., Any]] = {
        "initialize": initialize,
        "shutdown": shutdown,
        "session/create": manager.create,
        "session/chat": chat,
        "session/abort": runs.abort,
        "session/list": manager.list,
        "session/get": manager.get,
        "session/messages": manager.messages,
        "session/update": manager.update,
        "session/delete": manager.delete,
        "session/summarize": runs.summarize,
        "run/resolve": manager.resolve_run,
        "toolContext/get": manager.tool_context,
        "models/list": lambda _: manager.models(),
        "mcp/list": manager.mcp_list,
    }
    for name, handler in handlers.items():
        proto.fm.features[name] = handler if name == "initialize" else gated(handler)

    def on_initialized() -> None:
        runs.preload_provider()
        manager.mcp.preload()

    server.on_initialized = on_initialized
    return server, manager


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
    server, manager = create_server(config)

    async def main() -> int:
        loop = asyncio.get_running_loop()
        # SIGTERM / SIGINT end the daemon the way `exit` after end of input does: runs are
        # aborted and persisted, tool-context files released.
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, server.exit, 0)
        try:
            code = await server.serve(sys.stdin.buffer, sys.stdout.buffer)
        finally:
            if server.startup is not None:
                with contextlib.suppress(Exception):
                    await server.startup
            # End of input acts as shutdown then exit.
            await manager.runs.shutdown()
            await manager.close()
            await server.flush_output()
        return code

    return asyncio.run(main())
