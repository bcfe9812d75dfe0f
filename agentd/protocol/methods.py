"""The one method table: name → direction, kind, params type, result type.

It drives the server's dispatch and parameter structuring, the capabilities that
`initialize` reports, and the published JSON Schema.
"""

from __future__ import annotations

from typing import Literal

import attrs

from agentd.protocol import types as t


@attrs.frozen
class Method:
    name: str
    # "editor": the editor sends it to agentd; "agentd": agentd sends it to the editor.
    sender: Literal["editor", "agentd"]
    kind: Literal["request", "notification"]
    params: type | None
    result: type | None = None
    # The result may be null (run/resolve, toolContext/get).
    nullable_result: bool = False


def _editor_request(
    name: str, params: type | None, result: type | None, *, nullable_result: bool = False
) -> Method:
    return Method(name, "editor", "request", params, result, nullable_result)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        # lifecycle
        _editor_request("initialize", t.InitializeParams, t.InitializeResult),
        Method("initialized", "editor", "notification", t.EmptyParams),
        _editor_request("shutdown", None, None, nullable_result=True),
        Method("exit", "editor", "notification", None),
        # requests from the editor
        _editor_request("session/create", t.SessionCreateParams, t.SessionCreateResult),
        _editor_request("session/chat", t.SessionChatParams, t.SessionChatResult),
        _editor_request("session/abort", t.SessionIdParams, t.SessionAbortResult),
        _editor_request("session/list", t.SessionListParams, t.SessionListResult),
        _editor_request("session/get", t.SessionIdParams, t.SessionResult),
        _editor_request("session/messages", t.SessionMessagesParams, t.SessionMessagesResult),
        _editor_request("session/update", t.SessionUpdateParams, t.SessionResult),
        _editor_request("session/delete", t.SessionIdParams, t.SessionDeleteResult),
        _editor_request("session/summarize", t.SessionSummarizeParams, t.MessageResult),
        _editor_request("session/fork", t.SessionForkParams, t.SessionResult),
        _editor_request("session/export", t.SessionExportParams, t.SessionExportResult),
        _editor_request("session/import", t.SessionImportParams, t.SessionResult),
        _editor_request("session/revert", t.SessionRevertParams, t.SessionRevertResult),
        _editor_request("session/unrevert", t.SessionUnrevertParams, t.SessionRevertResult),
        _editor_request(
            "run/resolve", t.RunResolveParams, t.RunResolveResult, nullable_result=True
        ),
        _editor_request(
            "toolContext/get", t.ToolContextGetParams, t.ToolContext, nullable_result=True
        ),
        _editor_request("models/list", t.EmptyParams, t.ModelsListResult),
        _editor_request("mcp/list", t.McpListParams, t.McpListResult),
        # notifications to the editor
        Method("session/updated", "agentd", "notification", t.SessionUpdatedParams),
        Method("session/status", "agentd", "notification", t.SessionStatusParams),
        Method("message/updated", "agentd", "notification", t.MessageUpdatedParams),
        Method("part/updated", "agentd", "notification", t.PartUpdatedParams),
        Method("part/delta", "agentd", "notification", t.PartDeltaParams),
        Method("session/error", "agentd", "notification", t.SessionErrorParams),
        Method("mcp/status", "agentd", "notification", t.McpStatusParams),
        # requests to the editor
        Method("tool/execute", "agentd", "request", t.ToolExecuteParams, t.ToolExecuteResult),
        Method(
            "permission/request",
            "agentd",
            "request",
            t.PermissionRequestParams,
            t.PermissionRequestResult,
        ),
    )
}


def editor_requests() -> list[str]:
    return [m.name for m in METHODS.values() if m.sender == "editor" and m.kind == "request"]


def agentd_notifications() -> list[str]:
    return [m.name for m in METHODS.values() if m.sender == "agentd" and m.kind == "notification"]
