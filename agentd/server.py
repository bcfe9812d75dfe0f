"""The JSON-RPC server: pygls's JsonRPCServer, hardened for a non-LSP daemon.

Stock pygls 2.1 drops requests whose params fail to structure (and requests without
params), gives no -32700 for non-JSON frames, skips LF-only headers, drops batches,
hands unknown methods namedtuples, reads stdin through its shared thread pool, writes
stdout with a blocking write on the event loop, and puts tracebacks on the wire. Each
is fixed through pygls's own extension points:

- pygls's own read loop (`pygls.io_.run_async`) is not used: `StdinReader` reads stdin
  (any kind: pipe, socket, terminal, regular file, /dev/null) into the sans-I/O
  `agentd.framing.FrameParser` (lenient headers, size limit, resynchronisation after
  any junk), and `AgentdServer` hands the parsed messages to the protocol, with flow
  control (see `AgentdServer`);
- `AgentdProtocol` subclasses `JsonRPCProtocol`: the method table types every params
  object (invalid params are -32602 naming the field), errors are mapped without
  tracebacks, the not-initialized gate, a second `initialize` refused, batches,
  `$/cancelRequest`;
- `PipeWriter` is set with `protocol.set_writer`: non-blocking writes, with a congestion
  signal the run stream uses to coalesce deltas and a high-water mark past which agentd
  stops taking new input (back-pressure).

Only this module imports pygls.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import logging
import os
import selectors
import signal
import sys
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import orjson
from pygls.protocol import JsonRPCProtocol, default_converter
from pygls.server import JsonRPCServer

from agentd import __version__, redaction
from agentd.config import Config
from agentd.errors import AgentdError, StorageError
from agentd.framing import FrameParser, FramingError
from agentd.protocol import (
    METHODS,
    PROTOCOL_VERSION,
    describe_error,
    secret_values,
    unstructure,
)
from agentd.protocol import types as t
from agentd.protocol.converter import structure_params
from agentd.protocol.encoding import encoding_problems
from agentd.protocol.methods import agentd_notifications, editor_requests
from agentd.runs import RunManager
from agentd.session import SessionManager

logger = logging.getLogger(__name__)

# Output waiting in memory beyond WRITE_HIGH_WATER (the editor is not reading): agentd
# stops dispatching new input until it is back under WRITE_LOW_WATER. Streaming runs keep
# going, merging their deltas while the output waits (run_stream.py).
WRITE_HIGH_WATER = 256 * 1024
WRITE_LOW_WATER = 64 * 1024
# Input read but not dispatched yet: past this, agentd stops reading stdin (the editor's
# writes then block, or queue on its side).
INBOX_HIGH_WATER = 1024 * 1024
INBOX_ENTRY_BYTES = 256
# Requests being handled at once, those in _UNCOUNTED aside: past this, new input waits.
# An answer's size is known only once it is written, so this is what bounds the output
# a burst of requests can pile up before WRITE_HIGH_WATER is seen.
MAX_REQUESTS_IN_FLIGHT = 32
# Requests that can wait on a run, the model or the editor (a tool/execute answer) for as
# long as they like: counting them could hold back the input that would let them finish.
# Their answers are one message each.
_UNCOUNTED = frozenset(
    {"session/chat", "session/summarize", "session/abort", "session/delete", "shutdown"}
)
READ_CHUNK = 256 * 1024
# At end of input, how long requests still being handled get to answer.
REQUESTS_AT_EXIT_S = 5.0


def _pollable(fd: int, events: int) -> bool:
    """Whether the event loop can watch `fd` (epoll refuses regular files, /dev/null...)."""
    with selectors.DefaultSelector() as selector:
        try:
            selector.register(fd, events)
        except (OSError, ValueError):
            return False
    return True


class StdinReader:
    """Reads stdin without blocking the loop, handing each chunk to `on_data` (and b""
    once, at end of input). `pause`/`resume` stop and restart reading: back-pressure.

    A stdin the loop can watch (pipe, socket, terminal) is read from the loop; anything
    else (a regular file, /dev/null, another device) by a dedicated thread, one chunk at
    a time and only while not paused. A read error (EIO from a terminal whose other side
    closed) is end of input."""

    def __init__(self, on_data: Callable[[bytes], None]) -> None:
        self._on_data = on_data
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd: int | None = None
        self._was_blocking = True
        self._watching = False
        self._paused = False
        self._ended = False
        # Thread mode: set while the loop wants another chunk.
        self._want: threading.Event | None = None

    def start(self, loop: asyncio.AbstractEventLoop, fd: int | None) -> None:
        self._loop = loop
        if fd is None:
            loop.call_soon(self._deliver, b"")
            return
        if _pollable(fd, selectors.EVENT_READ):
            self._fd = fd
            self._was_blocking = os.get_blocking(fd)
            os.set_blocking(fd, False)
            self.resume()
            return
        self._want = threading.Event()
        self._want.set()
        threading.Thread(
            target=self._read_in_thread, args=(fd, self._want), name="agentd-stdin", daemon=True
        ).start()

    def pause(self) -> None:
        self._paused = True
        if self._watching and self._loop is not None and self._fd is not None:
            self._loop.remove_reader(self._fd)
            self._watching = False

    def resume(self) -> None:
        self._paused = False
        if self._ended:
            return
        if self._want is not None:
            self._want.set()
        elif not self._watching and self._loop is not None and self._fd is not None:
            self._loop.add_reader(self._fd, self._read_ready)
            self._watching = True

    def close(self) -> None:
        self.pause()
        self._ended = True
        if self._fd is not None:
            # Leave stdin as we found it: a terminal's blocking mode is the shell's too.
            with contextlib.suppress(OSError):
                os.set_blocking(self._fd, self._was_blocking)
            self._fd = None

    def _read_ready(self) -> None:
        assert self._fd is not None
        try:
            data = os.read(self._fd, READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            logger.debug("stdin read failed (%s): end of input", exc)
            data = b""
        self._deliver(data)

    def _deliver(self, data: bytes) -> None:
        if self._ended:
            return
        if not data:
            self.pause()
            self._ended = True
        self._on_data(data)
        if self._want is not None and not self._paused and not self._ended:
            self._want.set()

    def _read_in_thread(self, fd: int, want: threading.Event) -> None:
        loop = self._loop
        assert loop is not None
        while True:
            want.wait()
            want.clear()
            try:
                data = os.read(fd, READ_CHUNK)
            except OSError as exc:
                logger.debug("stdin read failed (%s): end of input", exc)
                data = b""
            try:
                loop.call_soon_threadsafe(self._deliver, data)
            except RuntimeError:
                return  # the loop is gone: the daemon is exiting
            if not data:
                return


class PipeWriter:
    """Writes frames to stdout without blocking the loop.

    A stdout the loop can watch (pipe, socket, terminal) is non-blocking: what the editor
    has not taken yet waits in memory and is written when the loop says it can be. Past
    WRITE_HIGH_WATER the writer is `paused` (new input waits, see AgentdServer) until it
    is back under WRITE_LOW_WATER; `congested` (anything waiting) makes runs merge their
    deltas. Anything else (a regular file, /dev/null) gets plain writes, which do not
    block for long. A broken pipe closes the writer: output is dropped from then on."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd: int | None = None
        self._sync = False
        self._was_blocking = True
        # What the editor has not taken yet (deleting from a bytearray's front is cheap).
        self._pending = bytearray()
        self._drained: list[Callable[[], None]] = []
        self.paused = False
        self.closed = False
        # Called when the writer leaves `paused` (or closes).
        self.on_resume: Callable[[], None] = lambda: None

    def attach(self, loop: asyncio.AbstractEventLoop, fd: int | None) -> None:
        self._loop = loop
        if fd is None:
            self.closed = True
            return
        self._fd = fd
        if _pollable(fd, selectors.EVENT_WRITE):
            self._was_blocking = os.get_blocking(fd)
            os.set_blocking(fd, False)
        else:
            self._sync = True

    @property
    def buffered(self) -> int:
        """Bytes written by agentd that the editor has not taken yet."""
        return len(self._pending)

    def write(self, data: bytes) -> None:
        if self.closed or self._fd is None:
            return
        if self._sync:
            self._write_blocking(data)
            return
        if not self._pending:
            try:
                n = os.write(self._fd, data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as exc:
                self._lost(exc)
                return
            if n == len(data):
                return
            data = data[n:]
            assert self._loop is not None
            self._loop.add_writer(self._fd, self._write_ready)
        self._pending += data
        if len(self._pending) > WRITE_HIGH_WATER:
            self.paused = True

    def _write_blocking(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            self._lost(exc)

    def _write_ready(self) -> None:
        assert self._fd is not None and self._loop is not None
        try:
            n = os.write(self._fd, self._pending)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(exc)
            return
        del self._pending[:n]
        if not self._pending:
            self._loop.remove_writer(self._fd)
        if self.paused and len(self._pending) <= WRITE_LOW_WATER:
            self.paused = False
            self.on_resume()
        if not self._pending:
            self._run_drained()

    def _lost(self, exc: Exception) -> None:
        logger.debug("stdout closed (%s): output is dropped from now on", exc)
        self.closed = True
        self._pending.clear()
        if self._loop is not None and self._fd is not None and not self._sync:
            self._loop.remove_writer(self._fd)
        self.paused = False
        self.on_resume()
        self._run_drained()

    def congested(self) -> bool:
        return bool(self._pending)

    def when_drained(self, callback: Callable[[], None]) -> None:
        """Call `callback` once nothing waits to be written (at once if nothing does)."""
        if not self._pending or self.closed:
            callback()
            return
        self._drained.append(callback)

    def _run_drained(self) -> None:
        callbacks, self._drained = self._drained, []
        for cb in callbacks:
            cb()

    def close(self) -> None:
        """Stop writing; give stdout back in the blocking mode it had."""
        if self._fd is not None and not self._sync:
            if self._loop is not None and self._pending:
                self._loop.remove_writer(self._fd)
            with contextlib.suppress(OSError):
                os.set_blocking(self._fd, self._was_blocking)
        self.closed = True


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
        # Requests being handled that count against MAX_REQUESTS_IN_FLIGHT.
        self.in_flight: set[Any] = set()

    # Parsing happens in handle_message, where errors can be answered. (pygls's own read
    # loops use this as a json object_hook; agentd's reader does not call it.)
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
        logger.debug("received %s (id %r)", method, msg_id)  # never params: secrets
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
        if method == "initialize" and self.initialized:
            # The capabilities and workspace root stay those of the first one.
            self._reply_error(msg_id, -32600, "already initialized")
            return
        if spec.params is not None:
            # Before anything reads them, invalid params included: from here on a log
            # line, a traceback or an error message cannot show these in clear.
            redaction.register(*secret_values(spec.params, raw))
        params = self._structure_params(msg_id, spec.params, raw)
        if params is _INVALID:
            return
        if method == "initialize":
            # Requests the editor pipelines right behind `initialize` are served: the
            # gate opens when it is dispatched, not when its (async) handler finishes.
            self.initialized = True
        elif method == "shutdown":
            # Likewise, an `exit` pipelined right behind `shutdown` ends with code 0.
            self.shutdown_requested = True
        self._handle_request(msg_id, method, params)
        if method not in _UNCOUNTED and msg_id in self._request_futures:
            self.in_flight.add(msg_id)

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
        if msg_id in self.in_flight:
            self.in_flight.discard(msg_id)
            self._server.request_done()
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
    # An id agentd could not write back (a lone surrogate, an integer beyond 64 bits)
    # is no id: the answer goes to id null.
    if isinstance(value, str):
        return not encoding_problems(value)
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**64


class AgentdServer(JsonRPCServer):
    """pygls's JSON-RPC server on agentd's transport: `StdinReader` → `FrameParser` →
    the inbox → `AgentdProtocol`, and `PipeWriter` back.

    Flow control: input is parsed as it arrives. Answers to agentd's own requests
    (tool/execute, permission/request) are handled at once, so a run waiting on one never
    waits on the input queued ahead of it. Everything else waits in the inbox, in order,
    while the editor is not taking agentd's output (`PipeWriter.paused`) or
    MAX_REQUESTS_IN_FLIGHT requests are being handled; past INBOX_HIGH_WATER bytes in the
    inbox agentd stops reading stdin."""

    protocol: AgentdProtocol

    def __init__(self, config: Config) -> None:
        super().__init__(AgentdProtocol, default_converter)  # type: ignore[arg-type]
        self.config = config
        self.writer = PipeWriter()
        self.exit_code: int | None = None
        self._parser = FrameParser(config.max_frame_bytes)
        self._reader = StdinReader(self._on_input)
        self._inbox: collections.deque[tuple[Any, int]] = collections.deque()
        self._inbox_bytes = 0
        self._input_ended = False
        self._pump_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._finished: asyncio.Future[None] | None = None
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

    # --- input -------------------------------------------------------------------------

    def _on_input(self, data: bytes) -> None:
        if data:
            events = self._parser.feed(data)
        else:
            events = self._parser.feed_eof()
            self._input_ended = True
        for event in events:
            if isinstance(event, FramingError):
                self._hold(event, 0)
            elif isinstance(event.message, list) and event.message:
                # A batch: each member as if it had come alone.
                share = event.size // len(event.message)
                for item in event.message:
                    self._accept(item, share)
            else:
                self._accept(event.message, event.size)
        self._pump()

    def _accept(self, message: Any, size: int) -> None:
        msg_id = message.get("id") if isinstance(message, dict) else None
        if (
            isinstance(msg_id, str)
            and msg_id in self.protocol._outgoing
            and "method" not in message
            and ("result" in message or "error" in message)
        ):
            self.protocol.handle_message(message)  # an answer to agentd: never held back
            return
        self._hold(message, size)

    def _hold(self, item: Any, size: int) -> None:
        # Each entry counts for its bytes plus what holding it and its answer cost, so
        # that a flood of tiny frames or junk errors is bounded too.
        size += INBOX_ENTRY_BYTES
        self._inbox.append((item, size))
        self._inbox_bytes += size

    def _held(self) -> bool:
        return self.writer.paused or len(self.protocol.in_flight) >= MAX_REQUESTS_IN_FLIGHT

    def _pump(self) -> None:
        """Dispatch the inbox in order while nothing holds it back; steer reading."""
        self._pump_scheduled = False
        proto = self.protocol
        while self._inbox and not self._stop.is_set() and not self._held():
            item, size = self._inbox.popleft()
            self._inbox_bytes -= size
            if isinstance(item, FramingError):
                proto._reply_error(None, item.code, item.message)
            else:
                proto.handle_message(item)
        if self._stop.is_set() or (self._input_ended and not self._inbox):
            self._finish()
        elif self._inbox_bytes > INBOX_HIGH_WATER:
            self._reader.pause()
        else:
            self._reader.resume()

    def _schedule_pump(self) -> None:
        if not self._pump_scheduled and self._loop is not None and self._inbox:
            self._pump_scheduled = True
            self._loop.call_soon(self._pump)

    def request_done(self) -> None:
        """A counted request was answered: held input may go on."""
        self._schedule_pump()

    def _finish(self) -> None:
        self._reader.close()
        if self._finished is not None and not self._finished.done():
            self._finished.set_result(None)

    # --- running -----------------------------------------------------------------------

    def exit(self, code: int) -> None:
        self.exit_code = code
        self._stop.set()
        self._finish()

    async def serve(self, stdin_fd: int | None, stdout_fd: int | None) -> int:
        """Serve until `exit` or the end of input (and every request read before it has
        been dispatched). None for a closed stdin or stdout."""
        self._loop = loop = asyncio.get_running_loop()
        self._finished = loop.create_future()
        self.writer.attach(loop, stdout_fd)
        self.writer.on_resume = self._schedule_pump
        self.protocol.set_writer(self.writer)  # type: ignore[arg-type]
        if self._stop.is_set():
            self._finish()
        else:
            self._reader.start(loop, stdin_fd)
        await self._finished
        return self.exit_code if self.exit_code is not None else 0

    async def finish_requests(self) -> None:
        """Wait for the editor's requests being handled to answer."""
        proto = self.protocol
        pending: list[asyncio.Future[Any]] = []
        for msg_id, future in proto._request_futures.items():
            # (agentd's own requests to the editor are concurrent futures: not these)
            if isinstance(future, asyncio.Future) and msg_id not in proto._outgoing:
                pending.append(future)
        if pending:
            await asyncio.wait(pending)

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
        self.writer.close()


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
        "session/fork": manager.fork,
        "session/export": manager.export,
        "session/import": manager.import_,
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


def _fileno(stream: Any) -> int | None:
    """The descriptor behind sys.stdin / sys.stdout; None when it was closed at start."""
    try:
        return int(stream.fileno())
    except (AttributeError, ValueError, OSError):
        return None


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
            code = await server.serve(_fileno(sys.stdin), _fileno(sys.stdout))
        finally:
            if server.startup is not None:
                with contextlib.suppress(Exception):
                    await server.startup
            # End of input acts as shutdown then exit: requests read before it are
            # answered (runs first aborted, so that chats answer too).
            await manager.runs.shutdown()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REQUESTS_AT_EXIT_S):
                    await server.finish_requests()
            await manager.close()
            await server.flush_output()
        return code

    return asyncio.run(main())
