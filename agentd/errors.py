"""Typed errors. Each crosses exactly one boundary and is mapped there.

`AgentdError` carries a JSON-RPC code and is what the server turns into an error
response (JSON-RPC's and LSP's codes are lsprotocol's). `EditorError` is the editor's
error answer to one of agentd's requests. `ProviderError` is what the model provider
raises; the run loop turns it into `message.error` (a model failure is never a JSON-RPC
error).
"""

from __future__ import annotations

from typing import Any

from lsprotocol.types import ErrorCodes, LSPErrorCodes


class AgentdError(Exception):
    """An error the editor receives as a JSON-RPC error response."""

    code: int = ErrorCodes.InternalError

    def __init__(self, message: str, *, code: int | None = None, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.data = data


class InternalError(AgentdError):
    """A bug or an unexpected failure: the message names its type, never a traceback."""

    code = ErrorCodes.InternalError


class InvalidParams(AgentdError):
    """Params that are not what the method takes; `data` says which field."""

    code = ErrorCodes.InvalidParams


class InvalidRequest(AgentdError):
    code = ErrorCodes.InvalidRequest


class MethodNotFound(AgentdError):
    code = ErrorCodes.MethodNotFound


class NotInitialized(AgentdError):
    """Any request but `initialize` before `initialize`."""

    code = ErrorCodes.ServerNotInitialized


class RequestCancelled(AgentdError):
    """The editor cancelled the request (`$/cancelRequest`), or the run it asked for
    will not run (dropped from its session's queue, agentd shutting down)."""

    code = LSPErrorCodes.RequestCancelled


class SessionNotFound(AgentdError):
    code = 1001


class SessionBusy(AgentdError):
    code = 1002


class ModelNotConfigured(AgentdError):
    code = 1003


class StorageError(AgentdError):
    """Writing the data dir failed (disk full, read-only, file too large). What was
    stored before is intact; the write can succeed again once the cause is gone."""

    code = ErrorCodes.InternalError


class EditorError(Exception):
    """The editor answered one of agentd's requests (tool/execute, permission/request)
    with an error."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


class SnapshotUnavailable(AgentdError):
    """`session/revert` cannot restore the files: the workspace could not be snapshotted
    (not a directory, too large, no git, snapshots off) or a snapshot is gone. Nothing
    was changed; `data.reason` names the cause."""

    code = -32603


class ProviderError(Exception):
    """A model provider failure, named the way the contract names it.

    `name` is what lands in `message.error.name`: ProviderAuthError,
    ProviderRateLimited, ContextOverflow, ProviderUnavailable, ModelNotFound,
    ProviderBadRequest, ContentFiltered, StreamInterrupted, ProviderTimeout.
    """

    def __init__(
        self,
        name: str,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.name = name
        self.message = message
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        self.data = data

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "message": self.message}
        data = dict(self.data or {})
        if self.status is not None:
            data.setdefault("status", self.status)
        if data:
            out["data"] = data
        return out
