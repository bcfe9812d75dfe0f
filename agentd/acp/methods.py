"""The Agent Client Protocol's method table and JSON-RPC dialect (NDJSON framing, no
LSP lifecycle, `$/cancel_request`, ACP's error codes)."""

from __future__ import annotations

from agentd import ndjson
from agentd.acp import types as a
from agentd.errors import AgentdError, InvalidParams, InvalidRequest, NotInitialized
from agentd.jsonrpc import Dialect
from agentd.protocol import Method
from agentd.protocol import types as t

# agentd's own requests, beside the spec's: the native ones of the same name after the
# prefix, same params and result.
EXT_METHODS = {
    "_agentd/session/messages": t.SessionMessagesParams,
    "_agentd/session/get": t.SessionIdParams,
    "_agentd/session/update": t.SessionUpdateParams,
    "_agentd/session/summarize": t.SessionSummarizeParams,
    "_agentd/models/list": t.EmptyParams,
    "_agentd/run/resolve": t.RunResolveParams,
    "_agentd/toolContext/get": t.ToolContextGetParams,
    "_agentd/session/resolve": a.ResolveThreadParams,
}
EXT_NOTIFICATIONS = ("_agentd/session/status", "_agentd/session/error")

_REQUESTS: dict[str, type] = {
    "initialize": a.InitializeParams,
    "session/new": a.NewSessionParams,
    "session/load": a.LoadSessionParams,
    "session/resume": a.LoadSessionParams,
    "session/list": a.ListSessionsParams,
    "session/prompt": a.PromptParams,
    "session/delete": a.SessionParams,
    "session/close": a.SessionParams,
    "session/set_config_option": a.SetConfigOptionParams,
    **EXT_METHODS,
}

# Results are JSON values (built in agentd.acp.updates), so the table gives none.
ACP_METHODS: dict[str, Method] = {
    **{name: Method(name, "editor", "request", params) for name, params in _REQUESTS.items()},
    "session/cancel": Method("session/cancel", "editor", "notification", a.SessionParams),
}

# What a native error code becomes in ACP (acp-v1.md §9): -32002 is ResourceNotFound
# there, so "not initialized" is -32600, and agentd's own codes travel in data.
_NOT_FOUND = -32002


def acp_error(exc: AgentdError) -> AgentdError:
    if isinstance(exc, NotInitialized):
        return InvalidRequest("not initialized")
    data = exc.data if isinstance(exc.data, dict) else {}
    if exc.code == 1001:
        return AgentdError(exc.message, code=_NOT_FOUND, data={**data, "agentdCode": 1001})
    if exc.code == 1003:
        return InvalidParams(exc.message, data={"field": "model", **data, "agentdCode": 1003})
    return exc


ACP = Dialect(
    methods=ACP_METHODS,
    parser=ndjson.LineParser,
    encode=ndjson.encode,
    cancel_method="$/cancel_request",
    cancel_key="requestId",
    lsp_lifecycle=False,
    uncounted=frozenset({"session/prompt", "session/delete", "session/close"}),
    error=acp_error,
)
