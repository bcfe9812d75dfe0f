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


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        # lifecycle
        Method("initialize", "editor", "request", t.InitializeParams, t.InitializeResult),
        Method("initialized", "editor", "notification", t.EmptyParams),
        Method("shutdown", "editor", "request", None, None, nullable_result=True),
        Method("exit", "editor", "notification", None),
        # requests from the editor
        Method("session/create", "editor", "request", t.SessionCreateParams, t.SessionCreateResult),
        Method("session/chat", "editor", "request", t.SessionChatParams, t.SessionChatResult),
        Method("session/abort", "editor", "request", t.SessionIdParams, t.SessionAbortResult),
        Method("session/list", "editor", "request", t.SessionListParams, t.SessionListResult),
        Method("session/get", "editor", "request", t.SessionIdParams, t.SessionResult),
        Method(
            "session/messages",
            "editor",
            "request",
            t.SessionMessagesParams,
            t.SessionMessagesResult,
        ),
        Method("session/update", "editor", "request", t.SessionUpdateParams, t.SessionResult),
        Method("session/delete", "editor", "request", t.SessionIdParams, t.SessionDeleteResult),
        Method("session/summarize", "editor", "request", t.SessionSummarizeParams, t.MessageResult),
        Method("session/fork", "editor", "request", t.SessionForkParams, t.SessionResult),
        Method("session/export", "editor", "request", t.SessionExportParams, t.SessionExportResult),
        Method("session/import", "editor", "request", t.SessionImportParams, t.SessionResult),
        Method("session/revert", "editor", "request", t.SessionRevertParams, t.SessionRevertResult),
        Method(
            "session/unrevert",
            "editor",
            "request",
            t.SessionUnrevertParams,
            t.SessionRevertResult,
        ),
        Method(
            "run/resolve",
            "editor",
            "request",
            t.RunResolveParams,
            t.RunResolveResult,
            nullable_result=True,
        ),
        Method(
            "toolContext/get",
            "editor",
            "request",
            t.ToolContextGetParams,
            t.ToolContext,
            nullable_result=True,
        ),
        Method("models/list", "editor", "request", t.EmptyParams, t.ModelsListResult),
        Method("mcp/list", "editor", "request", t.McpListParams, t.McpListResult),
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
