"""The session layer's EditorLink in Agent Client Protocol mode: what a run tells the
editor natively (part/updated, part/delta, session/updated...) becomes `session/update`
notifications, and agentd's requests to the editor become ACP's (acp-v1.md §6, §7).

It keeps, per run, what the ACP stream needs and the native one does not say again:
each message's role (a user message is not echoed back), each part's kind (a delta
names only its part), how much of each text part was sent (ACP text is append-only: a
part/updated carrying text already sent adds nothing), and which tool calls were
announced (`tool_call` once, then `tool_call_update`s).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from agentd.acp import updates as u
from agentd.editor import EditorInfo
from agentd.errors import EditorError
from agentd.jsonrpc import Connection
from agentd.protocol import types as t
from agentd.protocol.converter import unstructure
from agentd.tools.spec import TerminalRun, ToolError

# Permission options, each named after its kind, so the answer maps straight back.
PERMISSION_OPTIONS = [
    {"optionId": "allow_once", "name": "Allow", "kind": "allow_once"},
    {"optionId": "allow_always", "name": "Always allow", "kind": "allow_always"},
    {"optionId": "reject_once", "name": "Reject", "kind": "reject_once"},
    {"optionId": "reject_always", "name": "Always reject", "kind": "reject_always"},
]
_OUTCOMES = {o["optionId"] for o in PERMISSION_OPTIONS}


@attrs.define
class _SessionStream:
    """What the ACP stream of one session remembers (see the module's docstring)."""

    # The session as last heard of (session/updated keeps it current).
    session: t.Session
    roles: dict[str, str] = attrs.Factory(dict)
    # Messages that are summaries (/compact): their chunks say so.
    summaries: set[str] = attrs.Factory(set)
    kinds: dict[str, str] = attrs.Factory(dict)
    sent: dict[str, int] = attrs.Factory(dict)
    announced: set[str] = attrs.Factory(set)

    @property
    def root(self) -> str:
        return u.session_root(self.session)


class AcpLink:
    """EditorLink over an ACP connection (see the module's docstring)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        # The one editor on this connection (ACP is served unshared).
        self.editor = EditorInfo()
        # Sessions made live on this connection (new, load, resume), with their root.
        self.live: dict[str, _SessionStream] = {}
        # Whether the client opted in to agentd's extension notifications.
        self.ext_notifications = False
        # The model's context window, for usage_update (None: not known, none sent).
        self.context_window: Callable[[str], int | None] = lambda _: None

    def open(self, session: t.Session) -> None:
        stream = self.live.get(session.id)
        if stream is None:
            self.live[session.id] = _SessionStream(session)
        else:
            stream.session = session

    def close(self, session_id: str) -> None:
        self.live.pop(session_id, None)

    def update(self, session_id: str, update: dict[str, Any]) -> None:
        self.connection.notify_wire("session/update", {"sessionId": session_id, "update": update})

    # --- EditorLink ----------------------------------------------------------------------

    def notify(self, method: str, params: t.NotificationParams) -> None:
        if isinstance(params, t.PartDeltaParams):
            self._delta(params)
        elif isinstance(params, t.PartUpdatedParams):
            self._part(params)
        elif isinstance(params, t.MessageUpdatedParams):
            stream = self.live.get(params.session_id)
            if stream is not None:
                stream.roles[params.message.id] = params.message.role
                if params.message.summary:
                    stream.summaries.add(params.message.id)
        elif isinstance(params, t.SessionUpdatedParams):
            stream = self.live.get(params.session.id)
            if stream is not None:
                stream.session = params.session
                self.update(params.session.id, u.info_update(params.session))
        elif isinstance(params, t.SessionStatusParams):
            if params.status == "retry" and self.ext_notifications:
                self.connection.notify_wire("_agentd/session/status", unstructure(params))
        elif isinstance(params, t.SessionErrorParams):
            # During a run the prompt's own error answer says it.
            if params.run_id is None and self.ext_notifications:
                self.connection.notify_wire("_agentd/session/error", unstructure(params))

    def request(self, method: str, params: t.RequestParams) -> asyncio.Future[Any]:
        if isinstance(params, t.PermissionRequestParams):
            return self._permission(params)
        return self.connection.request_wire("_agentd/" + method, unstructure(params))

    def congested(self) -> bool:
        return self.connection.congested()

    def current_editor(self) -> EditorInfo:
        return self.editor

    def follow(self, session_id: str) -> None:
        pass  # what reaches the editor is decided by `live` (new, load, resume)

    def unfollow(self, session_id: str) -> None:
        pass

    def when_drained(self, callback: Callable[[], None]) -> None:
        self.connection.when_drained(callback)

    # --- parts ---------------------------------------------------------------------------

    def _stream(self, session_id: str, message_id: str) -> _SessionStream | None:
        stream = self.live.get(session_id)
        if stream is None or stream.roles.get(message_id, "assistant") == "user":
            return None
        return stream

    def _delta(self, p: t.PartDeltaParams) -> None:
        stream = self._stream(p.session_id, p.message_id)
        kind = stream.kinds.get(p.part_id) if stream is not None else None
        if stream is None or kind is None:
            return
        stream.sent[p.part_id] = stream.sent.get(p.part_id, 0) + len(p.delta)
        summary = True if p.message_id in stream.summaries else None
        self.update(p.session_id, u.chunk(kind, p.delta, p.message_id, summary=summary))

    def _part(self, p: t.PartUpdatedParams) -> None:
        stream = self._stream(p.session_id, p.message_id)
        if stream is None:
            return
        part = p.part
        if isinstance(part, t.TextPart | t.ReasoningPart):
            kind = "agent_message_chunk" if part.type == "text" else "agent_thought_chunk"
            stream.kinds[part.id] = kind
            sent = stream.sent.get(part.id, 0)
            # Append-only: what the part holds beyond what was sent (a retry's shorter
            # text adds nothing and retracts nothing).
            if len(part.text) > sent and not getattr(part, "synthetic", None):
                stream.sent[part.id] = len(part.text)
                summary = True if p.message_id in stream.summaries else None
                self.update(
                    p.session_id, u.chunk(kind, part.text[sent:], p.message_id, summary=summary)
                )
        elif isinstance(part, t.ToolPart):
            self._tool(p, stream, part)
        elif isinstance(part, t.StepFinishPart):
            session = stream.session
            update = u.usage_update(
                part, session, self.context_window(session.model or ""), p.run_id
            )
            if update is not None:
                self.update(p.session_id, update)
        elif isinstance(part, t.FilePart):
            self.update(p.session_id, u.file_chunk("agent_message_chunk", part.path, p.message_id))

    def _tool(self, p: t.PartUpdatedParams, stream: _SessionStream, part: t.ToolPart) -> None:
        fields = u.tool_fields(part, stream.root)
        if part.call_id not in stream.announced:
            stream.announced.add(part.call_id)
            call = u.tool_call(
                part.tool,
                part.call_id,
                part.state.input,
                stream.root,
                runId=p.run_id,
                partId=part.id,
                tool=part.tool,
            )
            self.update(p.session_id, {"sessionUpdate": "tool_call", **call})
            if fields["status"] == "pending":
                return
        update = {"sessionUpdate": "tool_call_update", "toolCallId": part.call_id, **fields}
        self.update(p.session_id, update)

    # --- requests --------------------------------------------------------------------------

    def _permission(self, p: t.PermissionRequestParams) -> asyncio.Future[Any]:
        """session/request_permission; the answer comes back as native
        `{outcome: <kind>}` (a cancelled one as reject_once)."""
        stream = self.live.get(p.session_id)
        root = stream.root if stream is not None else ""
        call = u.tool_call(p.tool, p.call_id, p.input, root)
        call["title"] = p.title
        wire = {"sessionId": p.session_id, "toolCall": call, "options": PERMISSION_OPTIONS}
        asked = self.connection.request_wire("session/request_permission", wire)
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def done(f: asyncio.Future[Any]) -> None:
            # Whatever the client answered, the run's question gets an answer here: a
            # callback that raised would leave the prompt waiting for ever.
            if answer.done():
                return
            if f.cancelled():
                answer.cancel()
            elif f.exception() is not None:
                answer.set_exception(f.exception())  # type: ignore[arg-type]
            else:
                try:
                    answer.set_result(_native_outcome(f.result()))
                except Exception as exc:
                    answer.set_exception(exc)

        def cancelled(f: asyncio.Future[Any]) -> None:
            if f.cancelled():
                asked.cancel()  # tells the client with $/cancel_request

        asked.add_done_callback(done)
        answer.add_done_callback(cancelled)
        return answer


class AcpFiles:
    """A session's files as the ACP client holds them (`fs/read_text_file`,
    `fs/write_text_file`): its buffers, unsaved edits included."""

    def __init__(
        self, connection: Connection, session_id: str, *, reads: bool, writes: bool
    ) -> None:
        self.connection = connection
        self.session_id = session_id
        self.reads = reads
        self.writes = writes

    async def read(self, path: str, line: int, limit: int) -> str:
        params: dict[str, Any] = {"sessionId": self.session_id, "path": path, "line": line}
        if limit:
            params["limit"] = limit
        result = await self._ask("fs/read_text_file", params, f"read {path}")
        content = result.get("content") if isinstance(result, dict) else None
        if not isinstance(content, str):
            raise ToolError(f"The editor's answer to reading {path} holds no text content.")
        return content

    async def write(self, path: str, content: str) -> None:
        params = {"sessionId": self.session_id, "path": path, "content": content}
        await self._ask("fs/write_text_file", params, f"write {path}")

    async def _ask(self, method: str, params: dict[str, Any], what: str) -> Any:
        try:
            return await self.connection.request_wire(method, params)
        except EditorError as exc:
            raise ToolError(f"The editor could not {what}: {exc.message}") from None


class AcpTerminal:
    """A session's commands in the ACP client's terminal (`terminal/create`, then
    `wait_for_exit`, `output`, `release`; `kill` at the timeout or an abort). The tool
    call shows the terminal as soon as it exists, so the user watches the command live."""

    # The most output the editor keeps for the model (it keeps the end).
    OUTPUT_LIMIT = 256 * 1024

    def __init__(self, link: AcpLink, session_id: str) -> None:
        self.link = link
        self.session_id = session_id

    async def run(
        self, command: str, cwd: str, env: Mapping[str, str], timeout_s: float, call_id: str
    ) -> TerminalRun:
        created = await self._ask(
            "terminal/create",
            command="bash",
            args=["-c", command],
            cwd=cwd,
            env=[{"name": k, "value": v} for k, v in env.items()],
            outputByteLimit=self.OUTPUT_LIMIT,
        )
        terminal_id = created.get("terminalId") if isinstance(created, dict) else None
        if not isinstance(terminal_id, str):
            raise ToolError("The editor's terminal/create answer has no terminalId.")
        shown = [{"type": "terminal", "terminalId": terminal_id}]
        self.link.update(
            self.session_id,
            {"sessionUpdate": "tool_call_update", "toolCallId": call_id, "content": shown},
        )
        timed_out = False
        try:
            exited: Any = None
            try:
                async with asyncio.timeout(timeout_s):
                    exited = await self._ask("terminal/wait_for_exit", terminalId=terminal_id)
            except TimeoutError:
                timed_out = True
                await self._ask("terminal/kill", terminalId=terminal_id)
            out = await self._ask("terminal/output", terminalId=terminal_id)
        except asyncio.CancelledError:
            self._later("terminal/kill", terminal_id)
            raise
        finally:
            self._later("terminal/release", terminal_id)
        got: dict[str, Any] = out if isinstance(out, dict) else {}
        # How it ended: the wait's answer, else the output's exitStatus.
        status = exited if isinstance(exited, dict) else got.get("exitStatus")
        status = status if isinstance(status, dict) else {}
        code, signal, text = status.get("exitCode"), status.get("signal"), got.get("output")
        return TerminalRun(
            output=text if isinstance(text, str) else "",
            exit_code=code if isinstance(code, int) else None,
            signal=signal if isinstance(signal, str) else None,
            truncated=got.get("truncated") is True,
            timed_out=timed_out,
            terminal_id=terminal_id,
        )

    async def _ask(self, method: str, **params: Any) -> Any:
        wire = {"sessionId": self.session_id, **params}
        try:
            return await self.link.connection.request_wire(method, wire)
        except EditorError as exc:
            raise ToolError(f"The editor's terminal failed ({method}): {exc.message}") from None

    def _later(self, method: str, terminal_id: str) -> None:
        """A request whose answer nobody waits for (kill on abort, release at the end):
        sent now, its answer or error dropped."""
        wire = {"sessionId": self.session_id, "terminalId": terminal_id}
        sent = self.link.connection.request_wire(method, wire)
        sent.add_done_callback(lambda f: f.cancelled() or f.exception())


def _native_outcome(result: Any) -> Any:
    """An ACP RequestPermissionResponse as permission/request's result; anything else
    is passed on as it came, for the caller to refuse as an invalid answer."""
    outcome = result.get("outcome") if isinstance(result, dict) else None
    if not isinstance(outcome, dict):
        return result
    if outcome.get("outcome") == "cancelled":
        return {"outcome": "reject_once"}
    chosen = outcome.get("optionId")
    if not isinstance(chosen, str):
        return {"outcome": repr(chosen)[:100]}  # refused by the caller, by name
    if outcome.get("outcome") == "selected" and chosen in _OUTCOMES:
        return {"outcome": chosen}
    return {"outcome": chosen}
