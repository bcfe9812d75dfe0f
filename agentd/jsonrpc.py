"""JSON-RPC 2.0 over agentd's stdio, served by pygls.

Bytes from stdin are framed and parsed by `agentd.framing.FrameParser` (every hardening
is there), checked here as JSON-RPC, and each request is handed to pygls through its
public dispatch, `JsonRPCProtocol.handle_message`. pygls is the server: it holds the
handlers (`JsonRPCServer.feature`), runs each request in a task, keeps that task by
request id and cancels it on `$/cancelRequest`. Only this module imports pygls, and
it uses none of pygls's private names.

What pygls's public surface cannot express stays here, in front of it:

- Checking messages. pygls's dispatch takes messages already structured: one that is not
  JSON-RPC is logged and dropped (no -32600), params are structured without naming the
  field at fault, and nothing is refused before `initialize`. So the envelope, the
  lifecycle (-32002 before `initialize`, a second `initialize`, nothing after
  `shutdown`), the method table and agentd's strict params converter are checked here;
  pygls receives only what it will serve.
- Duplicate ids. pygls keeps one task per id, and a second request with an id in use
  would replace the first in its table: refused here, -32600.
- Writing answers. pygls writes an answer with the standard library's json (spaces after
  separators, `\\u` escapes): other bytes than agentd's, and far slower than orjson
  (measured: a 50-session `session/list` page 0.36 ms instead of 0.03 ms, a 2.5 MB one
  32 ms instead of 0.2 ms). So each handler's wrapper (`add_request_handler`) writes
  the answer, result or typed error, with orjson through agentd's writer, and hands
  pygls nothing to answer with: the `null` answer pygls then writes goes to
  `_PyglsAnswers`, which drops it.
- Requests in flight. pygls does not say how many it runs nor when one ends; the wrapper
  does, for back-pressure and for answering them before exit.
- `$/cancelRequest` reaches pygls one loop iteration after it was read: a task cancelled
  before its first step never runs its wrapper, which is what answers (-32800).
- agentd's requests to the editor (tool/execute, permission/request). pygls cannot give
  one up: a late answer to a request agentd cancelled raises InvalidStateError inside
  its dispatch, and one never answered stays in its table. Their bookkeeping is here;
  their answers skip the queued input.

Flow control: input is parsed as it arrives. Answers to agentd's own requests are
handled at once, so a run waiting on one never waits on the input queued ahead of it.
Everything else waits in the inbox, in order, while the editor is not taking agentd's
output (`PipeWriter.paused`) or MAX_REQUESTS_IN_FLIGHT requests are being handled; past
INBOX_HIGH_WATER bytes in the inbox agentd stops reading stdin.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import attrs
import cattrs
import orjson
from lsprotocol.types import CANCEL_REQUEST, EXIT, INITIALIZE, SHUTDOWN, CancelParams
from pygls.protocol import JsonRPCNotification, JsonRPCProtocol, JsonRPCRequestMessage
from pygls.server import JsonRPCServer

from agentd import redaction
from agentd.errors import (
    AgentdError,
    EditorError,
    InternalError,
    InvalidParams,
    InvalidRequest,
    MethodNotFound,
    NotInitialized,
    RequestCancelled,
)
from agentd.framing import Event, Frame, FrameParser, FramingError, encode
from agentd.protocol import METHODS, Method, describe_error, secret_values, unstructure
from agentd.protocol import types as t
from agentd.protocol.converter import params_to_wire, structure_params
from agentd.protocol.encoding import encoding_problems
from agentd.stdio import PipeWriter, StdinReader

logger = logging.getLogger(__name__)

MsgId = int | str
# A handler takes the structured params and returns a result (attrs or None), or an
# awaitable of one; it raises AgentdError for an error answer.
Handler = Callable[[Any], Any]

# Input read but not dispatched yet: past this, agentd stops reading stdin (the editor's
# writes then block, or queue on its side).
INBOX_HIGH_WATER = 1024 * 1024
INBOX_ENTRY_BYTES = 256
# Requests being handled at once, the dialect's uncounted aside: past this, new input waits.
# An answer's size is known only once it is written, so this is what bounds the output
# a burst of requests can pile up before the writer's high-water mark is seen.
MAX_REQUESTS_IN_FLIGHT = 32


class Parser(Protocol):
    def feed(self, data: bytes) -> list[Event]: ...

    def feed_eof(self) -> list[Event]: ...


@attrs.frozen
class Dialect:
    """What differs between agentd's two front ends on one JSON-RPC core: the framing,
    the method table, the lifecycle and the error codes. NATIVE is agentd's own protocol;
    the Agent Client Protocol's is `agentd.acp.methods.ACP`."""

    methods: Mapping[str, Method]
    parser: Callable[[int], Parser]
    encode: Callable[[bytes], bytes]
    # The cancel notification, and the key of the request id in its params.
    cancel_method: str = CANCEL_REQUEST
    cancel_key: str = "id"
    # LSP's `shutdown` request and `exit` notification (ACP ends at end of input only).
    lsp_lifecycle: bool = True
    # Requests that may wait on a run, the model or the editor for as long as they like:
    # counting them could hold back the input that would let them finish.
    uncounted: frozenset[str] = frozenset()
    # An error as this protocol numbers it.
    error: Callable[[AgentdError], AgentdError] = lambda exc: exc


NATIVE = Dialect(
    methods=METHODS,
    parser=FrameParser,
    encode=encode,
    uncounted=frozenset(
        {"session/chat", "session/summarize", "session/abort", "session/delete", SHUTDOWN}
    ),
)


@attrs.frozen
class Call:
    """One request as pygls hands it to a handler's wrapper (pygls passes params on as
    they are): its id, to answer it, and its structured params."""

    id: MsgId
    params: Any


class _PyglsAnswers:
    """pygls's writer. The wrappers answer every request themselves; what pygls writes
    after them (`result: null`) is dropped."""

    def write(self, data: bytes) -> None:
        if b'"error"' in data:  # pygls answered on its own: a wrapper never ran
            logger.warning("pygls's own answer to a request, dropped: %.300s", data)

    def close(self) -> None:
        pass


def _valid_id(value: Any) -> bool:
    # An id agentd could not write back (a lone surrogate, an integer beyond 64 bits)
    # is no id: the answer goes to id null.
    if isinstance(value, str):
        return not encoding_problems(value)
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**64


class Connection:
    """The editor's JSON-RPC connection on stdin/stdout (see the module's docstring)."""

    def __init__(self, max_frame_bytes: int, dialect: Dialect = NATIVE) -> None:
        self.dialect = dialect
        self.writer = PipeWriter()
        self.reader = StdinReader(self._on_input)
        self._parser = dialect.parser(max_frame_bytes)
        self._pygls = JsonRPCServer(JsonRPCProtocol, cattrs.Converter)
        self._pygls.protocol.set_writer(_PyglsAnswers(), include_headers=False)
        self._served: set[str] = set()
        self.initialized = False
        self.shutdown_requested = False
        # Requests handed to pygls and not answered yet; the value: whether it counts
        # against MAX_REQUESTS_IN_FLIGHT.
        self._running: dict[MsgId, bool] = {}
        self._methods: dict[MsgId, str] = {}
        # Requests `finish_requests` does not wait for.
        self._not_awaited: set[MsgId] = set()
        self._in_flight = 0
        self._all_answered: asyncio.Event | None = None
        self._outgoing: dict[str, asyncio.Future[Any]] = {}
        # part/delta text held while the editor is not taking the output (`send_delta`).
        self._merged: dict[tuple[str, str, str, str], list[str]] = {}
        self._waiting_for_drain = False
        self._inbox: collections.deque[tuple[Any, int]] = collections.deque()
        self._inbox_bytes = 0
        self._input_ended = False
        self._stopped = False
        self._pump_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._finished: asyncio.Future[None] | None = None

    # --- handlers ----------------------------------------------------------------------

    def add_request_handler(self, method: str, handler: Handler) -> None:
        """Serve `method` (a request of the method table) with `handler`."""

        async def served(call: Call) -> None:
            try:
                result = handler(call.params)
                if inspect.isawaitable(result):
                    result = await result
            except asyncio.CancelledError:
                self._send_error(call.id, RequestCancelled("request cancelled"))
            except AgentdError as exc:
                self._send_error(call.id, exc)
            except Exception as exc:
                logger.error("handler failed for request %r", call.id, exc_info=exc)
                self._send_error(call.id, InternalError(f"internal error: {type(exc).__name__}"))
            else:
                answer = None if result is None else unstructure(result)
                self._send({"jsonrpc": "2.0", "id": call.id, "result": answer})
            finally:
                self._answered(call.id)

        self._pygls.feature(method)(served)
        self._served.add(method)

    def add_notification_handler(self, method: str, handler: Callable[[Any], None]) -> None:
        """Call `handler` (with the raw params) for each `method` notification."""

        def notified(params: Any) -> None:  # (pygls marks what it registers: a new function)
            handler(params)

        self._pygls.feature(method)(notified)
        self._served.add(method)

    # --- output: what the session layer's EditorLink uses ------------------------------

    def notify(self, method: str, params: t.NotificationParams) -> None:
        self.notify_wire(method, params_to_wire(method, params))

    def request(self, method: str, params: t.RequestParams) -> asyncio.Future[Any]:
        return self.request_wire(method, params_to_wire(method, params))

    def notify_wire(self, method: str, params: Any) -> None:
        """Send a notification whose params are JSON values already."""
        self._send({"jsonrpc": "2.0", "method": method, "params": params})

    def request_wire(self, method: str, wire: Any) -> asyncio.Future[Any]:
        """Send a request (params as JSON values) to the editor; the future resolves with
        its answer (or raises EditorError). Cancelling it tells the editor with the
        dialect's cancel notification."""
        msg_id = f"agentd-{uuid.uuid4().hex[:16]}"
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._outgoing[msg_id] = future

        def on_done(f: asyncio.Future[Any]) -> None:
            if f.cancelled() and self._outgoing.pop(msg_id, None) is not None:
                cancel = {self.dialect.cancel_key: msg_id}
                self._send(
                    {"jsonrpc": "2.0", "method": self.dialect.cancel_method, "params": cancel}
                )

        future.add_done_callback(on_done)
        self._send({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": wire})
        return future

    def write_frame(self, frame: bytes) -> None:
        """Write a message already encoded in this connection's framing."""
        if self._merged:
            self._send_merged()
        self.writer.write(frame)

    def send_delta(self, params: t.PartDeltaParams, frame: bytes) -> None:
        """A part/delta already encoded (`frame`): written now or, while the editor is not
        taking this connection's output, merged with the others of its part until it
        does. Anything else written meanwhile sends them first: nothing is reordered, an
        answer never overtakes the text it holds, and a slow editor costs memory in
        proportion to the text, not to the number of tokens."""
        if not self._merged and not self.writer.congested():
            self.writer.write(frame)
            return
        key = (params.session_id, params.run_id, params.message_id, params.part_id)
        self._merged.setdefault(key, []).append(params.delta)
        if not self._waiting_for_drain:
            self._waiting_for_drain = True
            self.writer.when_drained(self._drained)

    def _drained(self) -> None:
        self._waiting_for_drain = False
        self._send_merged()

    def _send_merged(self) -> None:
        merged, self._merged = self._merged, {}
        for (sid, run_id, message_id, part_id), chunks in merged.items():
            params = t.PartDeltaParams(sid, run_id, message_id, part_id, "".join(chunks))
            # (Through _send: `_merged` is empty again, nothing is flushed twice.)
            self.notify_wire("part/delta", params.to_wire())

    def congested(self) -> bool:
        return self.writer.congested()

    def when_drained(self, callback: Callable[[], None]) -> None:
        self.writer.when_drained(callback)

    def _send(self, message: dict[str, Any]) -> None:
        try:
            body = orjson.dumps(message)
        except TypeError:
            logger.exception("unserialisable message")
            return
        self.write_frame(self.dialect.encode(body))

    def _send_error(self, msg_id: MsgId | None, exc: AgentdError) -> None:
        exc = self.dialect.error(exc)
        error: dict[str, Any] = {"code": exc.code, "message": exc.message}
        if exc.data is not None:
            error["data"] = exc.data
        self._send({"jsonrpc": "2.0", "id": msg_id, "error": error})

    # --- input -------------------------------------------------------------------------

    def _on_input(self, data: bytes) -> None:
        if data:
            events = self._parser.feed(data)
        else:
            events = self._parser.feed_eof()
            self._input_ended = True
        for event in events:
            if isinstance(event, Frame) and isinstance(event.message, list) and event.message:
                # A batch: each member as if it had come alone.
                share = event.size // len(event.message)
                for item in event.message:
                    self._accept(item, share)
            elif isinstance(event, Frame):
                self._accept(event.message, event.size)
            else:
                self._hold(event, 0)
        self._pump()

    def _accept(self, message: Any, size: int) -> None:
        msg_id = message.get("id") if isinstance(message, dict) else None
        if (
            isinstance(msg_id, str)
            and msg_id in self._outgoing
            and "method" not in message
            and ("result" in message or "error" in message)
        ):
            self._dispatch(message)  # an answer to agentd: never held back
            return
        self._hold(message, size)

    def _hold(self, item: Any, size: int) -> None:
        # Each entry counts for its bytes plus what holding it and its answer cost, so
        # that a flood of tiny frames or junk errors is bounded too.
        size += INBOX_ENTRY_BYTES
        self._inbox.append((item, size))
        self._inbox_bytes += size

    def _pump(self) -> None:
        """Dispatch the inbox in order while nothing holds it back; steer reading."""
        self._pump_scheduled = False
        while (
            self._inbox
            and not self._stopped
            and not self.writer.paused
            and self._in_flight < MAX_REQUESTS_IN_FLIGHT
        ):
            item, size = self._inbox.popleft()
            self._inbox_bytes -= size
            if isinstance(item, FramingError):
                self._send_error(None, AgentdError(item.message, code=item.code))
            else:
                self._dispatch(item)
        if self._stopped or (self._input_ended and not self._inbox):
            self._finish()
        elif self._inbox_bytes > INBOX_HIGH_WATER:
            self.reader.pause()
        else:
            self.reader.resume()

    def _schedule_pump(self) -> None:
        if not self._pump_scheduled and self._loop is not None and self._inbox:
            self._pump_scheduled = True
            self._loop.call_soon(self._pump)

    # --- dispatch ----------------------------------------------------------------------

    def _dispatch(self, message: Any) -> None:
        if isinstance(message, list):
            if not message:
                self._send_error(None, InvalidRequest("empty batch"))
            for item in message:
                self._dispatch(item)
            return
        msg_id = message.get("id") if isinstance(message, dict) else None
        answer_to = msg_id if _valid_id(msg_id) else None
        try:
            self._route(message)
        except AgentdError as exc:
            self._send_error(answer_to, exc)
        except Exception:
            logger.exception("unexpected error while handling a message")
            if answer_to is not None and "method" in message:
                self._send_error(answer_to, InternalError("internal error"))

    def _route(self, msg: Any) -> None:
        if not isinstance(msg, dict):
            raise InvalidRequest("a message must be a JSON object")
        if msg.get("jsonrpc") != "2.0":
            raise InvalidRequest('jsonrpc must be "2.0"')
        msg_id: Any = msg.get("id")
        if "id" in msg and not _valid_id(msg_id):
            raise InvalidRequest("id must be a string or an integer")
        method = msg.get("method")
        if method is None:
            if "id" in msg and ("result" in msg or "error" in msg):
                self._on_answer(msg_id, msg)
                return
            raise InvalidRequest("not a request, notification or response")
        if not isinstance(method, str):
            raise InvalidRequest("method must be a string")
        logger.debug("received %s (id %r)", method, msg_id)  # never params: secrets
        if "id" in msg:
            self._on_request(msg_id, method, msg.get("params"))
        else:
            self._on_notification(method, msg.get("params"))

    def _on_request(self, msg_id: MsgId, method: str, raw: Any) -> None:
        if msg_id in self._running:
            raise InvalidRequest(f"request id {msg_id!r} is already in use")
        if self.shutdown_requested:
            raise InvalidRequest("server is shutting down")
        if not self.initialized and method != INITIALIZE:
            raise NotInitialized("server not initialized")
        spec = self.dialect.methods.get(method)
        if spec is None or spec.sender != "editor" or spec.kind != "request":
            raise MethodNotFound(f"method not found: {method}")
        if method == INITIALIZE and self.initialized:
            # The capabilities and workspace root stay those of the first one.
            raise InvalidRequest("already initialized")
        params = None
        if spec.params is not None:
            # Before anything reads them, invalid params included: from here on a log
            # line, a traceback or an error message cannot show these in clear.
            redaction.register(*secret_values(spec.params, raw))
            params = _structured(spec.params, raw)
        if method == INITIALIZE:
            # Requests the editor pipelines right behind `initialize` are served: the
            # gate opens when it is dispatched, not when its (async) handler finishes.
            self.initialized = True
        elif method == SHUTDOWN and self.dialect.lsp_lifecycle:
            # Likewise, an `exit` pipelined right behind `shutdown` ends with code 0.
            self.shutdown_requested = True
        counted = method not in self.dialect.uncounted
        self._running[msg_id] = counted
        self._methods[msg_id] = method
        self._in_flight += counted
        request = JsonRPCRequestMessage(
            id=msg_id, method=method, jsonrpc="2.0", params=Call(msg_id, params)
        )
        self._pygls.protocol.handle_message(request)

    def _on_notification(self, method: str, raw: Any) -> None:
        if method == self.dialect.cancel_method:
            msg_id = raw.get(self.dialect.cancel_key) if isinstance(raw, dict) else None
            if _valid_id(msg_id) and msg_id in self._running:
                assert self._loop is not None
                self._loop.call_soon(self._cancel, msg_id)
            return
        spec = self.dialect.methods.get(method)
        if spec is None or spec.sender != "editor" or spec.kind != "notification":
            return  # unknown notifications (textDocument/didOpen, $/setTrace...) are ignored
        exits = method == EXIT and self.dialect.lsp_lifecycle
        if method in self._served and (self.initialized or exits):
            self._pygls.protocol.handle_message(
                JsonRPCNotification(method=method, jsonrpc="2.0", params=raw)
            )

    def _cancel(self, msg_id: MsgId) -> None:
        if msg_id in self._running:  # (not answered meanwhile)
            cancel = CancelParams(id=msg_id)
            self._pygls.protocol.handle_message(
                JsonRPCNotification(method=CANCEL_REQUEST, jsonrpc="2.0", params=cancel)
            )

    def _answered(self, msg_id: MsgId) -> None:
        self._methods.pop(msg_id, None)
        if self._running.pop(msg_id, False):
            self._in_flight -= 1
            self._schedule_pump()  # held input may go on
        if self._all_answered is not None and not (self._methods.keys() - self._not_awaited):
            self._all_answered.set()

    def _on_answer(self, msg_id: Any, msg: dict[str, Any]) -> None:
        future = self._outgoing.pop(msg_id, None) if isinstance(msg_id, str) else None
        if future is None:
            logger.debug("ignoring a response to an id agentd never sent")
            return
        if future.done():
            return
        error = msg.get("error")
        if error is not None:
            err = error if isinstance(error, dict) else {}
            code = err.get("code", InternalError.code)
            future.set_exception(
                EditorError(code, str(err.get("message", "error")), err.get("data"))
            )
        else:
            future.set_result(msg.get("result"))

    # --- running -----------------------------------------------------------------------

    async def serve(self, stdin_fd: int | None, stdout_fd: int | None) -> None:
        """Serve until `stop` or the end of input (and every request read before it has
        been dispatched). None for a closed stdin or stdout."""
        self._loop = loop = asyncio.get_running_loop()
        self._finished = loop.create_future()
        self.writer.attach(loop, stdout_fd)
        self.writer.on_resume = self._schedule_pump
        if self._stopped:
            self._finish()
        else:
            self.reader.start(loop, stdin_fd)
        await self._finished

    def stop(self) -> None:
        """Take no more input."""
        self._stopped = True
        self._finish()

    def _finish(self) -> None:
        self.reader.close()
        if self._finished is not None and not self._finished.done():
            self._finished.set_result(None)

    def abandon_requests(self) -> None:
        """The editor is gone: agentd's requests to it fail (what waits on one goes on)."""
        outgoing, self._outgoing = self._outgoing, {}
        for future in outgoing.values():
            if not future.done():
                future.set_exception(EditorError(InternalError.code, "the editor disconnected"))

    async def finish_requests(self, but: frozenset[str] = frozenset()) -> None:
        """Wait for the editor's requests being handled to answer, but those of the
        methods in `but`."""
        self._not_awaited = {i for i, m in self._methods.items() if m in but}
        if self._methods.keys() - self._not_awaited:
            self._all_answered = asyncio.Event()
            await self._all_answered.wait()

    async def flush_output(self, timeout_s: float) -> None:
        """Wait (up to `timeout_s`) for the editor to take what waits, then close."""
        done = asyncio.get_running_loop().create_future()

        def drained() -> None:
            if not done.done():
                done.set_result(None)

        self.writer.when_drained(drained)
        try:
            async with asyncio.timeout(timeout_s):
                await done
        except TimeoutError:
            pass
        self.writer.close()


def _structured(cls: type, raw: Any) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InvalidParams("params must be an object", data={"field": "params"})
    try:
        return structure_params(raw, cls)
    except Exception as exc:
        problems = describe_error(exc)
        raise InvalidParams(
            "invalid params: " + "; ".join(problems), data={"errors": problems}
        ) from None
