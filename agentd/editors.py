"""The editors connected to one daemon, and which of them hears what.

One daemon serves every connection of its user (`agentd.daemon`); unshared, it serves
the one editor on its stdio the same way. The session layer talks to `Editors` as its
EditorLink and never sees a connection:

- A connection *follows* the sessions it creates, chats in, opens (`session/get`,
  `session/messages`), forks or imports. What a run streams (`part/*`,
  `message/updated`, `session/status`, `session/error`) goes to the connections that
  follow its session; `session/updated` and `mcp/status` go to every connection.
- `session/messages` starts following at the moment its answer is taken, with no await
  between the two and the run's pending deltas sent first: the answer holds everything
  streamed until then and the notifications that follow it hold the rest.
- The request being handled, and every task it starts (a run), belongs to the
  connection it came from (`CURRENT`): its capabilities and workspace root are that
  editor's, and `tool/execute` / `permission/request` go back to it. When it is gone,
  another connection that follows the session and offers the capability is asked; with
  none, the request fails (the tool's result says why).
- Each notification is encoded once, whoever receives it. A connection whose editor is
  not taking its output gets its `part/delta`s merged (`Connection.send_delta`, one per
  part, sent before anything else written to it) until its pipe drains: one slow editor
  never slows the others, and costs memory in proportion to the text, not to the
  number of tokens.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable
from typing import Any

import orjson

from agentd.editor import EditorInfo
from agentd.errors import EditorError
from agentd.jsonrpc import Connection
from agentd.protocol import types as t
from agentd.protocol.converter import params_to_wire

logger = logging.getLogger(__name__)

# Notifications every connection receives (the others go to a session's followers).
EVERYONE = frozenset({"session/updated", "mcp/status"})
# An editor request's method → the capability an editor needs to be asked it.
NEEDS: dict[str, Callable[[EditorInfo], bool]] = {
    "permission/request": lambda info: info.permission_requests,
    "tool/execute": lambda info: info.client_tools,
}
# The code of the failure a run's tool reads when no editor is there to ask.
NO_EDITOR = -32099


class EditorConnection:
    """One editor's connection: what `initialize` said and the sessions it follows."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.info = EditorInfo()
        self.following: set[str] = set()
        self.closed = False


# The connection whose request is being handled (and whose run is running): set by the
# request's wrapper, inherited by the tasks it starts.
CURRENT: contextvars.ContextVar[EditorConnection | None] = contextvars.ContextVar(
    "agentd_editor", default=None
)


class Editors:
    """The session layer's EditorLink when one daemon may serve several editors."""

    def __init__(self) -> None:
        self.connections: list[EditorConnection] = []
        # Outside any request (start-up, a timer): capabilities of no editor.
        self._nobody = EditorInfo()

    def attach(self, connection: EditorConnection) -> None:
        self.connections.append(connection)

    def detach(self, connection: EditorConnection) -> None:
        connection.closed = True
        if connection in self.connections:
            self.connections.remove(connection)

    # --- what the session layer asks ---------------------------------------------------

    def current_editor(self) -> EditorInfo:
        current = CURRENT.get()
        return current.info if current is not None else self._nobody

    def follow(self, session_id: str) -> None:
        current = CURRENT.get()
        if current is not None:
            current.following.add(session_id)

    def unfollow(self, session_id: str) -> None:
        for connection in self.connections:
            connection.following.discard(session_id)

    def notify(self, method: str, params: t.NotificationParams) -> None:
        if method in EVERYONE:
            targets = self.connections
        else:
            sid = getattr(params, "session_id", None)
            targets = [c for c in self.connections if sid in c.following]
        if not targets:
            return
        wire = params_to_wire(method, params)
        try:
            body = orjson.dumps({"jsonrpc": "2.0", "method": method, "params": wire})
        except TypeError:
            logger.exception("unserialisable notification %s", method)
            return
        frame = targets[0].connection.dialect.encode(body)
        if isinstance(params, t.PartDeltaParams):
            for target in targets:
                target.connection.send_delta(params, frame)
        else:
            for target in targets:
                target.connection.write_frame(frame)

    def request(self, method: str, params: t.RequestParams) -> Any:
        target = self._asked(method, getattr(params, "session_id", None))
        if target is None:
            raise EditorError(
                NO_EDITOR, "no editor is connected to answer (the one that started the run left)"
            )
        return target.connection.request(method, params)

    def _asked(self, method: str, session_id: str | None) -> EditorConnection | None:
        current = CURRENT.get()
        if current is not None and not current.closed:
            return current
        able = NEEDS.get(method, lambda _: True)
        for connection in reversed(self.connections):  # the latest to arrive first
            if session_id in connection.following and able(connection.info):
                return connection
        return None

    def congested(self) -> bool:
        return False  # each connection merges its own deltas (Connection.send_delta)

    def when_drained(self, callback: Callable[[], None]) -> None:
        callback()
