"""What agentd knows of the editor (from `initialize`) and how the layers below the
server talk to it: notifications, requests, and its pipe's congestion."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import attrs


class EditorLink(Protocol):
    """How the session layer talks to the editor (implemented by the server)."""

    def notify(self, method: str, params: dict[str, Any]) -> None: ...

    def request(self, method: str, params: dict[str, Any]) -> Awaitable[Any]: ...

    def congested(self) -> bool: ...

    def when_drained(self, callback: Callable[[], None]) -> None: ...


@attrs.define
class EditorInfo:
    """What `initialize` told us about the editor."""

    workspace_root: str | None = None
    client_tools: bool = False
    permission_requests: bool = False
