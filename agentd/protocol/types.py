"""Every object, params and result of the wire contract, as attrs classes.

Field names are snake_case here and camelCase on the wire (the converter renames).
`None` means "absent": the converter drops None-valued fields when unstructuring, and
an absent field structures to its default. Required fields have no default.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

PROTOCOL_VERSION = 1

# Field metadata of a value that is a credential (or a table of them): the server
# registers it for redaction from the raw params, before anything else reads them.
SECRET = {"secret": True}

SessionStatus = Literal["idle", "busy", "retry"]
OnBusy = Literal["reject", "preempt", "queue"]
FinishReason = Literal[
    "stop", "length", "tool-calls", "aborted", "error", "content-filter", "interrupted"
]
PermissionOutcome = Literal["allow_once", "allow_always", "reject_once", "reject_always"]
McpState = Literal["starting", "ready", "failed", "stopped"]
# How a command the model runs is confined; "full-access" is no sandbox at all.
SandboxMode = Literal["read-only", "workspace-write", "full-access"]


# --- objects -------------------------------------------------------------------------


@attrs.define
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
        )


@attrs.define
class SessionTime:
    created: int
    updated: int


@attrs.define
class ForkedFrom:
    """Where a session was forked from: the original session and the last message
    copied (absent when the original had no message to copy)."""

    session_id: str
    message_id: str | None = None


@attrs.define
class Session:
    id: str
    client_session_id: str
    title: str
    project_key: str
    actor_key: str
    session_scope_key: str
    status: SessionStatus
    time: SessionTime
    usage: Usage
    cost: float
    parent_id: str | None = None
    project_id: str | None = None
    workspace_root: str | None = None
    model: str | None = None
    # Set on a session made by session/fork.
    forked_from: ForkedFrom | None = None


@attrs.define
class ErrorInfo:
    name: str
    message: str
    data: Any = None


@attrs.define
class PartTime:
    start: int
    end: int | None = None


@attrs.define
class TextPart:
    id: str
    text: str
    time: PartTime
    synthetic: bool | None = None
    type: Literal["text"] = "text"


@attrs.define
class ReasoningPart:
    id: str
    text: str
    time: PartTime
    type: Literal["reasoning"] = "reasoning"


@attrs.define
class ToolTime:
    start: int
    end: int | None = None


@attrs.define
class CommandSandbox:
    """How one command runs (or would run): on `permission/request` and the tool part.

    `mode` is how the command runs: "full-access" means unconfined. `network`: whether
    it reaches the network. `fallback`: set when the session's mode is confined but no
    sandbox is available here (why), so the command runs unconfined. `blocked`: what the
    sandbox refused (on the part of a command it made fail, and on the request to rerun
    that command); `rerunOf`: on a rerun with more access, the mode of the blocked run.
    """

    mode: SandboxMode
    network: bool
    fallback: str | None = None
    blocked: str | None = None
    rerun_of: SandboxMode | None = None


@attrs.define
class ToolStatePending:
    input: Any
    status: Literal["pending"] = "pending"


@attrs.define
class ToolStateRunning:
    input: Any
    time: ToolTime
    title: str | None = None
    # An MCP tool's `{mcpServer, mcpTool}` (as in the completed state).
    metadata: dict[str, Any] | None = None
    # A command's sandbox (bash).
    sandbox: CommandSandbox | None = None
    status: Literal["running"] = "running"


@attrs.define
class ToolStateCompleted:
    input: Any
    output: str
    time: ToolTime
    title: str | None = None
    metadata: dict[str, Any] | None = None
    sandbox: CommandSandbox | None = None
    status: Literal["completed"] = "completed"


@attrs.define
class ToolStateError:
    input: Any
    error: str
    time: ToolTime
    sandbox: CommandSandbox | None = None
    status: Literal["error"] = "error"


ToolState = ToolStatePending | ToolStateRunning | ToolStateCompleted | ToolStateError


@attrs.define
class ToolPart:
    id: str
    call_id: str
    tool: str
    state: ToolState
    type: Literal["tool"] = "tool"


@attrs.define
class StepStartPart:
    id: str
    type: Literal["step-start"] = "step-start"


@attrs.define
class StepFinishPart:
    id: str
    reason: str
    usage: Usage
    cost: float
    type: Literal["step-finish"] = "step-finish"


@attrs.define
class FilePart:
    id: str
    path: str
    mime: str
    type: Literal["file"] = "file"


@attrs.define
class CompactionPart:
    id: str
    auto: bool
    type: Literal["compaction"] = "compaction"


Part = (
    TextPart | ReasoningPart | ToolPart | StepStartPart | StepFinishPart | FilePart | CompactionPart
)


@attrs.define
class InstructionFile:
    """An instruction file a run sent the model (an AGENTS.md, the user's, or one named
    by `instructions` in the configuration): its path, its size in bytes, and how many
    of those bytes the model got (fewer when the size limits cut it)."""

    path: str
    size: int
    sent: int


@attrs.define
class MessageTime:
    created: int
    completed: int | None = None


@attrs.define
class Message:
    id: str
    session_id: str
    role: Literal["user", "assistant"]
    time: MessageTime
    parts: list[Part] = attrs.Factory(list)
    run_id: str | None = None
    parent_id: str | None = None
    model: str | None = None
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    cost: float | None = None
    error: ErrorInfo | None = None
    summary: bool | None = None
    # On a run's assistant message: the instruction files its system prompt held, the
    # most general first (absent: none).
    instructions: list[InstructionFile] | None = None
    # Hidden by session/revert (only shown with session/messages' includeReverted).
    reverted: bool | None = None


@attrs.define
class TextInputPart:
    text: str
    type: Literal["text"] = "text"


@attrs.define
class FileInputPart:
    path: str
    mime: str | None = None
    type: Literal["file"] = "file"


InputPart = TextInputPart | FileInputPart


@attrs.define
class ClientTool:
    name: str
    description: str
    parameters: dict[str, Any]


@attrs.define
class McpServer:
    """A stdio server (`command`) or a streamable-HTTP one (`url`)."""

    name: str
    command: str | None = None
    args: list[str] | None = None
    env: dict[str, str] | None = attrs.field(default=None, repr=False, metadata=SECRET)
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] | None = attrs.field(default=None, repr=False, metadata=SECRET)
    enabled: bool | None = None
    # The server's own tool names the model may call (default: all).
    tools: list[str] | None = None
    timeout_ms: int | None = None
    startup_timeout_ms: int | None = None
    trust: Literal["ask", "allow"] | None = None


@attrs.define
class ToolContext:
    session_scope_key: str
    session_id: str
    client_session_id: str
    run_id: str
    actor_key: str
    project_key: str
    trace_id: str
    pid: int
    updated_at: int
    learning_mode: Literal["interactive"] = "interactive"
    allow_learning_write: bool = True
    project_id: str | None = None
    workspace_root: str | None = None


# --- lifecycle -------------------------------------------------------------------------


@attrs.define
class ClientInfo:
    name: str
    version: str | None = None


@attrs.define
class ClientCapabilities:
    client_tools: bool | None = None
    permission_requests: bool | None = None


@attrs.define
class WorkspaceFolder:
    uri: str
    name: str | None = None


@attrs.define
class InitializeParams:
    """agentd's own fields plus the LSP ones an editor's LSP client sends.

    LSP clients put their (LSP-shaped) capabilities in `capabilities`; agentd reads
    `clientTools` / `permissionRequests` from there or from `initializationOptions`.
    """

    process_id: int | None = None
    client_info: ClientInfo | None = None
    protocol_version: int | None = None
    capabilities: dict[str, Any] | None = None
    workspace_root: str | None = None
    initialization_options: dict[str, Any] | None = None
    root_uri: str | None = None
    root_path: str | None = None
    workspace_folders: list[WorkspaceFolder] | None = None


@attrs.define
class ServerInfo:
    name: str
    version: str


@attrs.define
class ServerCapabilities:
    requests: list[str]
    notifications: list[str]


@attrs.define
class SandboxInfo:
    """`initialize`'s word on the sandbox: whether one works here (`mechanism`:
    "bubblewrap" or "sandbox-exec"), else why not (`reason`), and the configured
    defaults (`[sandbox]`)."""

    available: bool
    mode: SandboxMode
    network: bool
    approval: Literal["always", "on-request"]
    unconfined: Literal["ask", "refuse"]
    mechanism: str | None = None
    reason: str | None = None


@attrs.define
class InitializeResult:
    protocol_version: int
    server_info: ServerInfo
    capabilities: ServerCapabilities
    tool_context_dir: str
    sandbox: SandboxInfo
    # Why tool contexts are unavailable (the directory was refused); absent when they work.
    tool_context_error: str | None = None
    daemon: DaemonInfo | None = None


@attrs.define
class DaemonInfo:
    """The process serving this connection: the user's shared daemon, or this editor's
    own agentd."""

    shared: bool
    pid: int
    # What happens to this connection's runs when it ends (EOF, shutdown, a reload).
    on_disconnect: Literal["continue", "abort"]
    # Editors connected to it, this one included.
    connections: int


@attrs.define
class EmptyParams:
    pass


# --- requests from the editor ----------------------------------------------------------


@attrs.define
class SessionCreateParams:
    client_session_id: str | None = None
    parent_id: str | None = None
    title: str | None = None
    project_id: str | None = None
    user_id: str | None = None
    access_token: str | None = attrs.field(default=None, repr=False, metadata=SECRET)
    trace_id: str | None = None
    model: str | None = None
    workspace_root: str | None = None
    mcp_servers: list[McpServer] | None = None
    sandbox: SandboxMode | None = None


@attrs.define
class SessionCreateResult:
    session: Session
    created: bool


@attrs.define
class SessionChatParams:
    session_id: str
    parts: list[InputPart]
    model: str | None = None
    system: list[str] | None = None
    tools: list[str] | None = None
    client_tools: list[ClientTool] | None = None
    on_busy: OnBusy | None = None
    max_steps: int | None = None
    trace_id: str | None = None


@attrs.define
class SessionChatResult:
    run_id: str
    message: Message


@attrs.define
class SessionIdParams:
    session_id: str


@attrs.define
class SessionAbortResult:
    aborted: bool
    run_id: str | None = None


@attrs.define
class SessionListParams:
    limit: int | None = None
    cursor: str | None = None
    parent_id: str | None = None
    roots_only: bool | None = None
    project_id: str | None = None
    query: str | None = None
    # Only sessions whose workspace root is this absolute path.
    workspace_root: str | None = None


@attrs.define
class SessionListResult:
    sessions: list[Session]
    next_cursor: str | None = None


@attrs.define
class SessionResult:
    session: Session


@attrs.define
class SessionMessagesParams:
    session_id: str
    limit: int | None = None
    before: str | None = None
    # Reverted messages too, marked `reverted: true`.
    include_reverted: bool | None = None


@attrs.define
class SessionMessagesResult:
    messages: list[Message]
    next_before: str | None = None


@attrs.define
class SessionRevertParams:
    session_id: str
    # Everything after this message is undone; the message itself stays.
    message_id: str
    # Restore files the user changed since agentd's snapshot too.
    force: bool | None = None
    # Say what would be restored and what conflicts, changing nothing.
    dry_run: bool | None = None


@attrs.define
class SessionUnrevertParams:
    session_id: str
    force: bool | None = None
    dry_run: bool | None = None


@attrs.define
class RevertedFile:
    # Relative to the workspace root, "/"-separated.
    path: str
    # "restore": written back as it was; "delete": removed (it did not exist then).
    action: Literal["restore", "delete"]


@attrs.define
class RevertConflict:
    path: str
    reason: str


@attrs.define
class SessionRevertResult:
    # The messages reverted (session/unrevert: shown again), in order.
    messages: list[str]
    files: list[RevertedFile]
    # Files left as they are: changed by someone else since agentd's snapshot (unless
    # `force`), or blocked (a directory in the way).
    conflicts: list[RevertConflict]
    dry_run: bool | None = None


@attrs.define
class SessionUpdateParams:
    session_id: str
    title: str | None = None
    # The session's model from now on (a configured model id).
    model: str | None = None
    # Replaces the session's own MCP servers ([] removes them).
    mcp_servers: list[McpServer] | None = None


@attrs.define
class SessionDeleteResult:
    deleted: bool


@attrs.define
class SessionSummarizeParams:
    session_id: str
    model: str | None = None


@attrs.define
class MessageResult:
    message: Message


@attrs.define
class SessionForkParams:
    session_id: str
    # The last message copied (default: the last one persisted).
    message_id: str | None = None


ExportFormat = Literal["json", "markdown"]


@attrs.define
class SessionExportParams:
    session_id: str
    format: ExportFormat = "json"


@attrs.define
class SessionExportResult:
    content: str


@attrs.define
class SessionImportParams:
    # The text of a JSON export (`SessionExport`).
    content: str
    # The imported session's workspace (default: the exported one if it is a directory
    # here, else the one given to initialize).
    workspace_root: str | None = None


# --- the export format (session/export "json", read back by session/import) ------------

EXPORT_VERSION = 1


@attrs.define
class ExportedSession:
    """The session an export holds: what a new session is made from on import."""

    id: str
    title: str
    project_key: str
    actor_key: str
    time: SessionTime
    project_id: str | None = None
    workspace_root: str | None = None
    model: str | None = None
    forked_from: ForkedFrom | None = None


@attrs.define
class ExportedCompaction:
    """The compaction in effect for the exported history: the model is sent the summary
    message (`summaryId`), then the messages kept verbatim (`keep`), then what follows."""

    summary_id: str
    keep: list[str] = attrs.Factory(list)


@attrs.define
class SessionExport:
    """A session as `session/export` writes it in JSON and `session/import` reads it:
    versioned by `agentdExport`, messages whole (parts included) and oldest first."""

    agentd_export: Literal[1]
    exported_at: int
    session: ExportedSession
    messages: list[Message]
    compaction: ExportedCompaction | None = None


@attrs.define
class RunResolveParams:
    run_id: str


@attrs.define
class RunResolveResult:
    session_id: str
    client_session_id: str
    session_scope_key: str


@attrs.define
class ToolContextGetParams:
    session_scope_key: str


@attrs.define
class ModelInfo:
    id: str
    provider: str
    default: bool
    context_window: int | None = None
    max_output_tokens: int | None = None


@attrs.define
class ModelsListResult:
    models: list[ModelInfo]


@attrs.define
class McpListParams:
    session_id: str | None = None
    # Start the servers not running yet and wait (up to their startup timeout).
    connect: bool | None = None


@attrs.define
class McpToolInfo:
    name: str
    # The name the model calls it by: `<server>_<tool>`, made valid for every provider,
    # with a hash suffix when a better-ranked tool has that name.
    qualified_name: str
    description: str | None = None
    # False: left out by the server's `tools` allow-list.
    allowed: bool = True
    # The other tools whose plain name is this one's (`"<server>: <tool>"`, or
    # `"built-in <name>"`); set only on a collision.
    collides_with: list[str] | None = None


@attrs.define
class McpServerInfo:
    name: str
    state: McpState
    tools: list[McpToolInfo]
    transport: Literal["stdio", "http"]
    trust: Literal["ask", "allow"]
    # False: `enabled = false` in its definition; it is listed, never started.
    enabled: bool = True
    error: str | None = None
    # Set for a server given to session/create (that session only).
    session_id: str | None = None
    # One line per tool of this server offered under a renamed (hash-suffixed) name, and
    # per tool name the server lists twice; set only when there are any.
    collisions: list[str] | None = None


@attrs.define
class McpListResult:
    servers: list[McpServerInfo]


# --- notifications to the editor -------------------------------------------------------


@attrs.define
class SessionUpdatedParams:
    session: Session


@attrs.define
class SessionStatusParams:
    session_id: str
    status: SessionStatus
    run_id: str | None = None
    attempt: int | None = None
    next_retry_at: int | None = None
    message: str | None = None


@attrs.define
class MessageUpdatedParams:
    """`message` travels without its parts (they travel as part/updated)."""

    session_id: str
    run_id: str | None = None
    # After run_id (keyword-only, as it has no default): fields go on the wire in this
    # order, the order agentd has always sent.
    message: Message = attrs.field(kw_only=True)


@attrs.define
class PartUpdatedParams:
    session_id: str
    run_id: str
    message_id: str
    part: Part


@attrs.define
class PartDeltaParams:
    """Append `delta` to the part's `field` (its text)."""

    # Sent per batch of tokens: the one type whose wire form is written by hand
    # (`to_wire`, which the converter uses), as cattrs's generated unstructuring costs
    # about ten times this dict literal on the hottest path (bench: token latency, long
    # streams). Keep it in step with the fields; tests/test_protocol_types.py checks.
    session_id: str
    run_id: str
    message_id: str
    part_id: str
    delta: str
    field: Literal["text"] = "text"

    def to_wire(self) -> dict[str, Any]:
        return {
            "sessionId": self.session_id,
            "runId": self.run_id,
            "messageId": self.message_id,
            "partId": self.part_id,
            "field": self.field,
            "delta": self.delta,
        }


@attrs.define
class SessionErrorParams:
    session_id: str
    run_id: str | None = None
    error: ErrorInfo = attrs.field(kw_only=True)  # after run_id on the wire, as always


@attrs.define
class McpStatusServer:
    name: str
    state: McpState
    error: str | None = None
    session_id: str | None = None
    # Number of tools the server lists (when ready).
    tool_count: int | None = None
    # As in mcp/list's McpServerInfo (when ready and there are any).
    collisions: list[str] | None = None


@attrs.define
class McpStatusParams:
    server: McpStatusServer


# --- requests to the editor ------------------------------------------------------------


@attrs.define
class ToolExecuteParams:
    session_id: str
    run_id: str
    message_id: str
    call_id: str
    name: str
    input: Any
    session_scope_key: str


@attrs.define
class ToolExecuteResult:
    output: str
    title: str | None = None
    metadata: dict[str, Any] | None = None
    is_error: bool | None = None


@attrs.define
class PermissionRequestParams:
    session_id: str
    run_id: str
    call_id: str
    tool: str
    input: Any
    title: str
    # Set for an MCP tool: its server and the server's own name for the tool.
    mcp_server: str | None = None
    mcp_tool: str | None = None
    # Set for a command (bash): how it would run; with `rerunOf`, a request to rerun a
    # command the sandbox blocked, with more access.
    sandbox: CommandSandbox | None = None


@attrs.define
class PermissionRequestResult:
    outcome: PermissionOutcome


# What agentd sends to the editor (the method table pairs each with its method).
NotificationParams = (
    SessionUpdatedParams
    | SessionStatusParams
    | MessageUpdatedParams
    | PartUpdatedParams
    | PartDeltaParams
    | SessionErrorParams
    | McpStatusParams
)
RequestParams = ToolExecuteParams | PermissionRequestParams
