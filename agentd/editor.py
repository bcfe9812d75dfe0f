"""What agentd knows of the editor (from `initialize`) and how the layers below the
server talk to it: notifications, requests, and its pipe's congestion."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from agentd.protocol import types as t

if TYPE_CHECKING:  # the tools load with the first chat, not at start-up
    from agentd.tools.spec import EditorFiles, EditorTerminal


class EditorLink(Protocol):
    """How the session layer talks to the editor (implemented by the server).

    Params are the protocol's attrs values, of the type the method table gives each
    method; the implementation turns them into JSON as it writes them
    (`agentd.protocol.converter.params_to_wire`), at once, so a value may change after
    it was sent. A request's answer is the editor's JSON `result`, which the caller
    structures (`structure_result`); an error answer raises."""

    def notify(self, method: str, params: t.NotificationParams) -> None: ...

    def request(self, method: str, params: t.RequestParams) -> Awaitable[Any]: ...

    def congested(self) -> bool: ...

    def when_drained(self, callback: Callable[[], None]) -> None: ...

    def current_editor(self) -> EditorInfo:
        """The editor whose request is being handled, or whose run is running."""
        ...

    def follow(self, session_id: str) -> None:
        """From now on, that editor hears what the session's runs stream."""
        ...

    def unfollow(self, session_id: str) -> None:
        """No editor follows the session any more (it is gone)."""
        ...


@attrs.frozen
class EditorProcess:
    """The environment and umask of the `agentd` an editor spawned. A shared daemon's
    own are those of the editor that started it: what it starts for another editor's
    runs (bash commands) and the files its tools make take that editor's, as an agentd
    of its own would have."""

    environment: Mapping[str, str]
    umask: int


@attrs.define
class EditorInfo:
    """What `initialize` told us about the editor."""

    workspace_root: str | None = None
    client_tools: bool = False
    permission_requests: bool = False
    # The editor's files for a session (its buffers), when it offers them (ACP's fs/*).
    files: Callable[[str], EditorFiles] | None = None
    # The editor's terminal for a session's commands, when it offers one (ACP's terminal/*).
    terminal: Callable[[str], EditorTerminal] | None = None
    # Its agentd's environment and umask when they are not this process's (shared).
    process: EditorProcess | None = None
