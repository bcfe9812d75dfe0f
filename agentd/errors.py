"""Typed errors. Each crosses exactly one boundary and is mapped there.

`AgentdError` carries a JSON-RPC code and is what the server turns into an error
response. `ProviderError` is what the model provider raises; the run loop turns it
into `message.error` (a model failure is never a JSON-RPC error).
"""

from __future__ import annotations

from typing import Any


class AgentdError(Exception):
    """An error the editor receives as a JSON-RPC error response."""

    code: int = -32603

    def __init__(self, message: str, *, code: int | None = None, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.data = data


class InvalidParams(AgentdError):
    code = -32602


class InvalidRequest(AgentdError):
    code = -32600


class MethodNotFound(AgentdError):
    code = -32601


class NotInitialized(AgentdError):
    code = -32002


class RequestCancelled(AgentdError):
    code = -32800


class SessionNotFound(AgentdError):
    code = 1001


class SessionBusy(AgentdError):
    code = 1002


class ModelNotConfigured(AgentdError):
    code = 1003


class StorageError(AgentdError):
    """Writing the data dir failed (disk full, read-only, file too large). What was
    stored before is intact; the write can succeed again once the cause is gone."""

    code = -32603


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
