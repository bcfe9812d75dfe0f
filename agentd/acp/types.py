"""The params agentd reads in Agent Client Protocol mode, as attrs types (structured by
the one strict converter: a field `meta` is the wire's `_meta`).

Only what agentd reads is typed; the rest of a spec message is ignored, as unknown keys
are natively. What agentd sends is built as JSON values in `agentd.acp.updates` and
checked against the official ACP schema in the tests. Sources: ACP v1 (`schema.json` of
the spec repository, tag schema-v1.19.0) and `../shared/contract/acp-v1.md`.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from agentd.protocol import types as t

SECRET = t.SECRET


@attrs.define
class PromptOptions:
    """`_meta.agentd` on session/prompt: session/chat's options beside its parts."""

    model: str | None = None
    system: list[str] | None = None
    tools: list[str] | None = None
    max_steps: int | None = None
    on_busy: t.OnBusy | None = None
    client_tools: list[t.ClientTool] | None = None
    trace_id: str | None = None


# `_meta` of a request: agentd's own fields under `agentd` (each request's are the native
# request's it maps to), and the W3C `traceparent` ACP reserves (its trace id is used
# when there is no agentd traceId).


@attrs.define
class SessionMeta:
    """`_meta` of session/new, load and resume (the access token may come again)."""

    agentd: t.SessionCreateParams | None = None
    traceparent: str | None = None


@attrs.define
class ListMeta:
    agentd: t.SessionListParams | None = None


@attrs.define
class PromptMeta:
    agentd: PromptOptions | None = None
    traceparent: str | None = None


@attrs.define
class ClientAgentdMeta:
    """`clientCapabilities._meta.agentd`: what an agentd-aware client takes."""

    # `_agentd/session/status` and `_agentd/session/error` notifications.
    notifications: bool | None = None
    # `_agentd/tool/execute` requests (tools the client runs, given per prompt).
    client_tools: bool | None = None


@attrs.define
class ClientMeta:
    agentd: ClientAgentdMeta | None = None


@attrs.define
class FsCapabilities:
    read_text_file: bool = False
    write_text_file: bool = False


@attrs.define
class ClientCapabilities:
    fs: FsCapabilities | None = None
    terminal: bool = False
    meta: ClientMeta | None = None


@attrs.define
class Implementation:
    name: str
    version: str | None = None
    title: str | None = None


@attrs.define
class InitializeParams:
    protocol_version: int
    client_capabilities: ClientCapabilities | None = None
    client_info: Implementation | None = None


@attrs.define
class NameValue:
    """An environment variable of a stdio MCP server, or a header of an HTTP one: the
    value may be a credential (masked wherever it could show, never stored)."""

    name: str
    value: str = attrs.field(repr=False, metadata=SECRET)


@attrs.define
class McpServer:
    """stdio `{name, command, args, env}`, or `{type: "http" | "sse", name, url, headers}`."""

    name: str
    command: str | None = None
    args: list[str] | None = None
    env: list[NameValue] | None = None
    type: Literal["http", "sse", "stdio"] | None = None
    url: str | None = None
    headers: list[NameValue] | None = None


@attrs.define
class NewSessionParams:
    cwd: str
    mcp_servers: list[McpServer] = attrs.Factory(list)
    additional_directories: list[str] | None = None
    meta: SessionMeta | None = None


@attrs.define
class LoadSessionParams:
    """session/load and session/resume."""

    session_id: str
    cwd: str
    mcp_servers: list[McpServer] = attrs.Factory(list)
    meta: SessionMeta | None = None


@attrs.define
class ListSessionsParams:
    cwd: str | None = None
    cursor: str | None = None
    meta: ListMeta | None = None


@attrs.define
class PromptParams:
    session_id: str
    # Content blocks: read one by one (agentd.acp.updates.prompt_parts), so that an
    # unsupported kind is named in the error rather than failing the whole structure.
    prompt: list[dict[str, Any]]
    message_id: str | None = None
    meta: PromptMeta | None = None


@attrs.define
class SessionParams:
    """session/cancel, session/delete, session/close."""

    session_id: str


@attrs.define
class SetConfigOptionParams:
    session_id: str
    config_id: str
    value: Any


@attrs.define
class ResolveThreadParams:
    """_agentd/session/resolve: a plugin's thread id to agentd's session id."""

    client_session_id: str
    user_id: str | None = None
    project_id: str | None = None
