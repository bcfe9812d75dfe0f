"""Running the model's tool calls: built-in tools, editor-side tools (`tool/execute`),
MCP servers' tools, permission checks (`permission/request`), and the tool part's
state machine pending → running → completed | error. A failing tool is a result the
model reads, never a protocol error.

Commands (`bash`) run in the session's sandbox (`agentd.sandbox`), and approval follows
confinement (`CommandPolicy`):

- confined (`read-only`, `workspace-write`): asked first unless `[sandbox] approval =
  "on-request"` (or `allow_bash`);
- `full-access` chosen by the user: asked first unless `allow_bash`, as before sandboxes;
- confined mode but no sandbox here: always asked, the request saying the command runs
  unconfined and why (no remembered answer, no `allow_bash`), or refused outright with
  `[sandbox] unconfined = "refuse"`;
- a confined command the sandbox made fail: the editor is asked whether to rerun it with
  more access (read-only → workspace-write → full-access); the model reads either the
  rerun's output or the refusal in words it can act on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable, Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import attrs

from agentd import ids
from agentd.config import Config, SandboxConfig
from agentd.editor import EditorInfo, EditorLink, EditorProcess
from agentd.mcp_servers import McpCallError, McpServers, McpTool, call_meta, result_text
from agentd.protocol import types as t
from agentd.protocol.converter import InvalidResult, structure_result
from agentd.protocol.encoding import encoding_problems, repair_text
from agentd.sandbox import Confinement, SandboxStatus
from agentd.tools import (
    BUILTIN_TOOLS,
    DEFAULT_TOOLS,
    EditorFiles,
    EditorTerminal,
    ToolEnv,
    ToolOutput,
    refusal_before_asking,
    run_builtin_tool,
    truncate_output,
)

logger = logging.getLogger(__name__)

CLIENT_TOOL_TIMEOUT_S = 600.0
PROGRESS_INTERVAL_S = 0.1


@attrs.define
class Permissions:
    """Remembered `*_always` answers for one session, keyed by tool and normalized input."""

    decisions: dict[tuple[str, str], bool] = attrs.Factory(dict)

    @staticmethod
    def key(tool: str, tool_input: Any) -> tuple[str, str]:
        return tool, json.dumps(tool_input, sort_keys=True, separators=(",", ":"))

    def get(self, tool: str, tool_input: Any) -> bool | None:
        return self.decisions.get(self.key(tool, tool_input))

    def remember(self, tool: str, tool_input: Any, allowed: bool) -> None:
        self.decisions[self.key(tool, tool_input)] = allowed


@attrs.frozen
class CommandPlan:
    """How one command runs: what the editor is told, and the confinement (None: it
    runs unconfined)."""

    info: t.CommandSandbox
    confinement: Confinement | None


@attrs.frozen
class CommandPolicy:
    """How a run's commands are confined: the session's mode, the `[sandbox]` settings,
    what works on this machine, and agentd's paths the command must not see."""

    mode: str
    settings: SandboxConfig
    status: SandboxStatus
    workspace: Path
    hidden: tuple[Path, ...] = ()
    readable: tuple[Path, ...] = ()
    # Commands run in the editor's terminal (ACP's terminal/*): unconfined, so asked
    # every time, as when no sandbox is available.
    terminal: bool = False

    def plan(self, mode: str | None = None) -> CommandPlan:
        mode = mode or self.mode
        if self.terminal:
            info = t.CommandSandbox(mode="full-access", network=True, fallback=IN_TERMINAL)
            return CommandPlan(info, None)
        if mode == "full-access":
            return CommandPlan(t.CommandSandbox(mode="full-access", network=True), None)
        if self.status.mechanism is None:
            info = t.CommandSandbox(mode="full-access", network=True, fallback=self.status.reason)
            return CommandPlan(info, None)
        network = self.settings.network
        confinement = Confinement(
            self.status.mechanism,
            mode,
            network,
            self.workspace,
            hidden=self.hidden,
            readable=self.readable,
        )
        return CommandPlan(t.CommandSandbox(mode=_mode(mode), network=network), confinement)


IN_TERMINAL = "the command runs in the editor's terminal, with the editor's rights"


def more_access(mode: str, blocked: str) -> str:
    """The mode to offer for a rerun of a command the sandbox blocked in `mode`."""
    if mode == "read-only" and blocked.startswith("writing"):
        return "workspace-write"
    return "full-access"


def _mode(mode: str) -> t.SandboxMode:
    if mode not in ("read-only", "workspace-write", "full-access"):
        raise ValueError(f"unknown sandbox mode {mode!r}")
    return mode  # type: ignore[return-value]


def _memo_name(name: str, info: t.CommandSandbox) -> str:
    """Remembered answers are per mode: allowing a command confined says nothing about
    running it unconfined."""
    return f"{name}@{info.mode}" + (f"<{info.rerun_of}" if info.rerun_of else "")


@attrs.frozen
class ToolCallSite:
    """Where a tool call happens: the assistant message holding its part, and how a
    change of the part reaches the editor (and, with `persist`, the log)."""

    message_id: str
    publish: Callable[[t.ToolPart, bool], None]


class ToolRunner:
    def __init__(
        self,
        *,
        config: Config,
        link: EditorLink,
        editor: EditorInfo,
        session_id: str,
        run_id: str,
        scope_key: str,
        tools: list[str] | None,
        client_tools: list[t.ClientTool],
        mcp: McpServers,
        env: ToolEnv,
        permissions: Permissions,
        commands: CommandPolicy,
    ) -> None:
        self.config = config
        self.link = link
        self.editor = editor
        self.session_id = session_id
        self.run_id = run_id
        self.scope_key = scope_key
        # `tools` names built-in and MCP tools; shell-style wildcards are allowed
        # (`"github_*"`). None: the read-only built-ins and every MCP tool.
        self.patterns = tools
        self.builtin = [
            name
            for name in BUILTIN_TOOLS
            if (name in DEFAULT_TOOLS if tools is None else _matches(name, tools))
        ]
        self.client_tools = {ct.name: ct for ct in client_tools if ct.name not in BUILTIN_TOOLS}
        self.mcp = mcp
        self.mcp_tools: dict[str, McpTool] = {}
        self.env = env
        self.permissions = permissions
        self.commands = commands

    async def prepare(self) -> None:
        """Start the MCP servers this run may use and take their tools (once per run:
        a tool list that changes later applies from the next run)."""
        tools = await self.mcp.tools_for(self.session_id, self.patterns)
        taken = set(self.builtin) | set(self.client_tools)
        self.mcp_tools = {
            tool.qualified_name: tool
            for tool in tools
            if tool.qualified_name not in taken
            and (self.patterns is None or _matches(tool.qualified_name, self.patterns))
        }

    def may_change_files(self, name: str) -> bool:
        """A built-in tool of this run that writes files or runs commands."""
        if name not in self.builtin:
            return False
        spec = BUILTIN_TOOLS[name]
        return spec.writes or spec.runs_commands

    def openai_specs(self) -> list[dict[str, Any]]:
        specs = []
        for name in self.builtin:
            spec = BUILTIN_TOOLS[name]
            specs.append(_function(spec.name, spec.description, spec.parameters))
        for ct in self.client_tools.values():
            specs.append(_function(ct.name, ct.description, ct.parameters))
        for tool in self.mcp_tools.values():
            specs.append(_function(tool.qualified_name, tool.description, tool.parameters))
        return specs

    async def run(
        self,
        part: t.ToolPart,
        raw_args: str,
        *,
        message_id: str,
        publish: Callable[[t.ToolPart, bool], None],
    ) -> None:
        """Run one tool call to its end (the part ends completed or error, never raises
        for the tool's failure); `publish(part, persist)` sends each change of it."""
        site = ToolCallSite(message_id, publish)
        tool_input, problem = parse_arguments(raw_args)
        start = ids.now_ms()
        part.state = t.ToolStatePending(input=tool_input)
        site.publish(part, True)
        if problem is not None:
            return self._error(site, part, tool_input, start, problem)
        name = part.tool
        mcp_tool = self.mcp_tools.get(name)
        if name not in self.builtin and name not in self.client_tools and mcp_tool is None:
            known = ", ".join([*self.builtin, *self.client_tools, *self.mcp_tools]) or "none"
            return self._error(
                site, part, tool_input, start, f"unknown tool {name!r}; available tools: {known}"
            )
        needs_permission = (
            mcp_tool.connection.spec.trust == "ask"
            if mcp_tool is not None
            else name in self.builtin and BUILTIN_TOOLS[name].writes
        )
        call_title = _mcp_title(mcp_tool, tool_input) if mcp_tool else _title(name, tool_input)
        plan = (
            self.commands.plan()
            if name in self.builtin and BUILTIN_TOOLS[name].runs_commands
            else None
        )
        sandbox = plan.info if plan is not None else None
        if plan is not None:
            refusal = await self._command_permission(part, tool_input, call_title, plan.info)
        elif needs_permission:
            # A write that cannot happen (outside the workspace...) is not put to the user.
            refusal = None if mcp_tool else await refusal_before_asking(name, tool_input, self.env)
            if refusal is None:
                refusal = await self._permission(part, tool_input, call_title, mcp_tool)
        else:
            refusal = None
        if refusal is not None:
            return self._error(site, part, tool_input, start, refusal, sandbox)
        start = ids.now_ms()
        part.state = t.ToolStateRunning(
            input=tool_input,
            time=t.ToolTime(start=start),
            title=call_title,
            metadata=_mcp_metadata(mcp_tool) if mcp_tool else None,
            sandbox=sandbox,
        )
        site.publish(part, True)
        if plan is not None:
            out, sandbox = await self._command(site, part, tool_input, call_title, plan)
            output, title, metadata, is_error = out.output, out.title, out.metadata, out.is_error
        elif name in self.builtin:
            out = await run_builtin_tool(name, tool_input, self.env, call_id=part.call_id)
            output, title, metadata, is_error = out.output, out.title, out.metadata, out.is_error
        elif mcp_tool is not None:
            output, title, metadata, is_error = await self._mcp_tool(
                site, mcp_tool, part, tool_input
            )
        else:
            output, title, metadata, is_error = await self._client_tool(site, part, tool_input)
        end = ids.now_ms()
        if is_error:
            part.state = t.ToolStateError(
                input=tool_input,
                error=output or "failed",
                time=t.ToolTime(start=start, end=end),
                sandbox=sandbox,
            )
        else:
            part.state = t.ToolStateCompleted(
                input=tool_input,
                output=output,
                title=title or call_title,
                metadata=metadata,
                time=t.ToolTime(start=start, end=end),
                sandbox=sandbox,
            )
        site.publish(part, True)
        return None

    def _error(
        self,
        site: ToolCallSite,
        part: t.ToolPart,
        tool_input: Any,
        start: int,
        why: str,
        sandbox: t.CommandSandbox | None = None,
    ) -> None:
        part.state = t.ToolStateError(
            input=tool_input,
            error=why,
            time=t.ToolTime(start=start, end=ids.now_ms()),
            sandbox=sandbox,
        )
        site.publish(part, True)

    async def _command_permission(
        self, part: t.ToolPart, tool_input: Any, title: str, info: t.CommandSandbox
    ) -> str | None:
        """None when the command may run as `info` says, else why not (the model reads it)."""
        name = part.tool
        settings = self.commands.settings
        if info.fallback is not None:
            if settings.unconfined == "refuse":
                return (
                    f"{name} is refused: no sandbox is available here ({info.fallback}), and "
                    'the configuration refuses unconfined commands ([sandbox] unconfined = "refuse")'
                )
            # Unconfined for want of a sandbox: asked every time, whatever was answered before.
            return await self._ask(part, tool_input, title, info, remember=False)
        if info.mode == "full-access":
            if self.config.allow_bash:
                return None
        elif settings.approval == "on-request" or self.config.allow_bash:
            return None
        return await self._ask(part, tool_input, title, info, remember=True)

    async def _ask(
        self,
        part: t.ToolPart,
        tool_input: Any,
        title: str,
        info: t.CommandSandbox,
        *,
        remember: bool,
    ) -> str | None:
        name = part.tool
        memo = _memo_name(name, info)
        if remember:
            remembered = self.permissions.get(memo, tool_input)
            if remembered is not None:
                return None if remembered else f"the user refused {name} for this input"
        if not self.editor.permission_requests:
            unconfined = " unconfined" if info.fallback is not None else ""
            return (
                f"{name} needs the user's permission to run{unconfined}, and this editor "
                "cannot ask for it (no permissionRequests capability); it is refused"
            )
        outcome = await self._request_permission(part, tool_input, title, sandbox=info)
        if remember and outcome in ("allow_always", "reject_always"):
            self.permissions.remember(memo, tool_input, outcome == "allow_always")
        return _refusal(name, outcome)

    async def _request_permission(
        self,
        part: t.ToolPart,
        tool_input: Any,
        title: str,
        *,
        sandbox: t.CommandSandbox | None = None,
        mcp_tool: McpTool | None = None,
    ) -> t.PermissionOutcome | _Failed:
        """The editor's outcome, or a `_Failed` saying why there is none."""
        params = t.PermissionRequestParams(
            session_id=self.session_id,
            run_id=self.run_id,
            call_id=part.call_id,
            tool=part.tool,
            input=tool_input,
            title=title,
            mcp_server=mcp_tool.connection.spec.name if mcp_tool else None,
            mcp_tool=mcp_tool.name if mcp_tool else None,
            sandbox=sandbox,
        )
        try:
            answer = await self.link.request("permission/request", params)
        except Exception as exc:
            return _Failed(f"permission request failed: {exc}")
        try:
            return structure_result(answer, t.PermissionRequestResult).outcome
        except InvalidResult:
            shown = answer.get("outcome") if isinstance(answer, dict) else None
            return _Failed(f"permission request got an invalid answer: {shown!r}")

    async def _command(
        self, site: ToolCallSite, part: t.ToolPart, tool_input: Any, title: str, plan: CommandPlan
    ) -> tuple[ToolOutput, t.CommandSandbox]:
        """Run a command as planned; when the sandbox made it fail, offer the editor a
        rerun with more access (each step up the ladder asked for separately)."""
        env = attrs.evolve(self.env, sandbox=plan.confinement)
        out = await run_builtin_tool(part.tool, tool_input, env, call_id=part.call_id)
        info = plan.info
        while out.sandbox_blocked is not None and plan.confinement is not None:
            blocked = out.sandbox_blocked
            info = attrs.evolve(info, blocked=blocked)
            if not self.editor.permission_requests:
                break
            next_mode = more_access(plan.confinement.mode, blocked)
            next_plan = self.commands.plan(next_mode)
            offer = attrs.evolve(next_plan.info, blocked=blocked, rerun_of=info.mode)
            refusal = await self._ask(
                part, tool_input, f"rerun in {next_mode}: {title}", offer, remember=True
            )
            if refusal is not None:
                note = "[The user declined to rerun it with more access.]"
                return attrs.evolve(out, output=f"{out.output}\n{note}"), info
            state = part.state
            if isinstance(state, t.ToolStateRunning):
                state.sandbox = offer
                site.publish(part, True)
            env = attrs.evolve(self.env, sandbox=next_plan.confinement)
            out = await run_builtin_tool(part.tool, tool_input, env, call_id=part.call_id)
            note = (
                f"[rerun in {next_mode} after the {info.mode} sandbox blocked {blocked}, "
                "with the user's permission]"
            )
            out = attrs.evolve(out, output=f"{note}\n{out.output}")
            plan, info = next_plan, offer
        return out, info

    async def _permission(
        self, part: t.ToolPart, tool_input: Any, title: str, mcp_tool: McpTool | None
    ) -> str | None:
        """None when the tool may run, else why not (the model reads it). For built-in
        tools the configuration's `allow_bash` / `allow_write_tools` apply."""
        name = part.tool
        configured = mcp_tool is None
        if configured and (
            (name == "bash" and self.config.allow_bash)
            or (name != "bash" and self.config.allow_write_tools)
        ):
            return None
        # "Always" covers any input of an MCP tool, one input of a built-in one.
        memo = tool_input if configured else None
        remembered = self.permissions.get(name, memo)
        if remembered is not None:
            return None if remembered else f"the user refused {name} for this input"
        if not self.editor.permission_requests:
            return (
                f"{name} needs the user's permission, and this editor cannot ask for it "
                "(no permissionRequests capability); it is refused"
            )
        outcome = await self._request_permission(part, tool_input, title, mcp_tool=mcp_tool)
        if outcome == "allow_always":
            self.permissions.remember(name, memo, True)
        elif outcome == "reject_always":
            self.permissions.remember(name, memo, False)
        return _refusal(name, outcome)

    async def _client_tool(
        self, site: ToolCallSite, part: t.ToolPart, tool_input: Any
    ) -> tuple[str, str | None, dict[str, Any] | None, bool]:
        params = t.ToolExecuteParams(
            session_id=self.session_id,
            run_id=self.run_id,
            message_id=site.message_id,
            call_id=part.call_id,
            name=part.tool,
            input=tool_input,
            session_scope_key=self.scope_key,
        )
        try:
            async with asyncio.timeout(CLIENT_TOOL_TIMEOUT_S):
                answer = await self.link.request("tool/execute", params)
        except TimeoutError:
            return (
                f"the editor did not answer within {CLIENT_TOOL_TIMEOUT_S:.0f} s",
                None,
                None,
                True,
            )
        except Exception as exc:
            return f"the editor failed to run {part.tool}: {exc}", None, None, True
        try:
            result = structure_result(answer, t.ToolExecuteResult)
        except InvalidResult as exc:
            return _invalid_tool_result(exc), None, None, True
        # Truncation may write the full text to a spill file: off the event loop.
        output = await asyncio.to_thread(
            truncate_output, repair_text(result.output), self.env, call_id=part.call_id
        )
        metadata = result.metadata
        if metadata is not None and encoding_problems(metadata):
            metadata = None  # it could be neither stored nor sent on
        title = result.title and repair_text(result.title)
        return output, title, metadata, result.is_error is True

    async def _mcp_tool(
        self, site: ToolCallSite, tool: McpTool, part: t.ToolPart, tool_input: Any
    ) -> tuple[str, str | None, dict[str, Any] | None, bool]:
        progress = _ProgressUpdates(site, part)
        try:
            result = await tool.connection.call(
                tool.name,
                tool_input,
                call_meta(self.scope_key, self.session_id, self.run_id),
                on_progress=progress.report,
            )
        except McpCallError as exc:
            return str(exc), None, _mcp_metadata(tool), True
        finally:
            progress.close()
        text, is_error = result_text(result)
        output = await asyncio.to_thread(
            truncate_output, repair_text(text), self.env, call_id=part.call_id
        )
        # No title of its own: the completed part keeps the running one.
        return output, None, _mcp_metadata(tool), is_error


class _ProgressUpdates:
    """An MCP server's progress for a running call, shown in the tool part's
    `metadata.progress` (`{progress, total?, message?}`). Sent to the editor at most
    every PROGRESS_INTERVAL_S (the latest wins) and never written to disk: the
    completed part replaces it."""

    def __init__(self, site: ToolCallSite, part: t.ToolPart) -> None:
        self.site = site
        self.part = part
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def report(self, done: float, total: float | None, message: str | None) -> None:
        state = self.part.state
        if not isinstance(state, t.ToolStateRunning):
            return
        progress: dict[str, Any] = {"progress": done}
        if total is not None:
            progress["total"] = total
        if message:
            progress["message"] = message
        state.metadata = {**(state.metadata or {}), "progress": progress}
        loop = asyncio.get_running_loop()
        wait = self._last + PROGRESS_INTERVAL_S - loop.time()
        if wait <= 0:
            self._send()
        elif self._timer is None:
            self._timer = loop.call_later(wait, self._send)

    def _send(self) -> None:
        self._timer = None
        self._last = asyncio.get_running_loop().time()
        if isinstance(self.part.state, t.ToolStateRunning):
            self.site.publish(self.part, False)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


@attrs.frozen
class _Failed:
    why: str


def _refusal(name: str, outcome: t.PermissionOutcome | _Failed) -> str | None:
    """None when the editor's outcome allows the call, else why not."""
    if isinstance(outcome, _Failed):
        return outcome.why
    if outcome in ("allow_once", "allow_always"):
        return None
    return f"the user refused {name}"


def _invalid_tool_result(exc: InvalidResult) -> str:
    """What the model reads when the editor's tool/execute answer is malformed."""
    fields = {problem.partition(":")[0] for problem in exc.problems}
    if fields & {"result", "result.output"}:
        return "the editor answered tool/execute without an output string"
    return f"the editor answered tool/execute with an invalid result: {exc}"


def _mcp_metadata(tool: McpTool) -> dict[str, str]:
    return {"mcpServer": tool.connection.spec.name, "mcpTool": tool.name}


def _mcp_title(tool: McpTool, tool_input: Any) -> str:
    """`server: tool` and a glimpse of the arguments (what a permission prompt shows)."""
    args = json.dumps(tool_input, ensure_ascii=False, separators=(", ", ": "))
    args = "" if args == "{}" else f" {args[:60]}{'…' if len(args) > 60 else ''}"
    return f"{tool.connection.spec.name}: {tool.name}{args}"


def _matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatchcase(name, pattern) for pattern in patterns)


def parse_arguments(raw: str) -> tuple[Any, str | None]:
    if not raw.strip():
        return {}, None
    # What is kept of bad arguments is stored: as valid Unicode (no lone surrogate).
    kept = {"_raw": raw[:2000].encode("utf-8", "replace").decode("utf-8")}
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        return kept, f"the arguments are not valid JSON ({exc})"
    if not isinstance(value, dict):
        return kept, "the arguments must be a JSON object"
    # The input is stored with the tool part. Python's parser takes what orjson cannot
    # store (lone surrogates, integers beyond 64 bits, deep nesting).
    problems = encoding_problems(value, "arguments", limit=3)
    if problems:
        return kept, "the arguments cannot be used: " + "; ".join(problems)
    return value, None


def _function(name: str, description: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": dict(parameters)},
    }


def _title(name: str, tool_input: Any) -> str:
    if isinstance(tool_input, dict):
        for key in ("path", "pattern", "command"):
            value = tool_input.get(key)
            if isinstance(value, str) and value:
                return f"{name} {value[:60]}"
    return name


def tool_env(
    workspace_root: str | None,
    session_dir: Path,
    scope_key: str,
    tool_context_dir: Path,
    *,
    search_timeout_s: float,
    config: Config | None = None,
    editor_files: EditorFiles | None = None,
    editor_terminal: EditorTerminal | None = None,
    process: EditorProcess | None = None,
) -> ToolEnv:
    from agentd.toolctx import ENV_DIR, ENV_KEY

    root = Path(workspace_root or ".").absolute()
    return ToolEnv(
        workspace_root=root,
        spill_dir=session_dir / "tool-output",
        process_env={ENV_KEY: scope_key, ENV_DIR: str(tool_context_dir)},
        search_timeout_s=search_timeout_s,
        drop_env=secret_variables(config) if config is not None else frozenset(),
        editor_files=editor_files,
        editor_terminal=editor_terminal,
        environment=process.environment if process is not None else None,
        umask=process.umask if process is not None else None,
    )


def secret_variables(config: Config) -> frozenset[str]:
    """Variables of agentd's environment that hold a provider's API key, whatever their
    name (`api_key_env` may name any variable), so that processes agentd starts for the
    model do not inherit them."""
    keys = {p.api_key for p in config.providers.values() if p.api_key}
    return frozenset(name for name, value in os.environ.items() if value in keys)


def agentd_paths(config: Config) -> tuple[Path, ...]:
    """What a confined command must not see: agentd's data, state and tool-context
    directories and its configuration (the whole `agentd` directory when the file is in
    one, as by default)."""
    paths = [config.data_dir, config.state_dir, config.tool_context_dir]
    if config.config_path is not None:
        path = config.config_path
        paths.append(path.parent if path.parent.name == "agentd" else path)
    return tuple(dict.fromkeys(paths))


def command_policy(
    config: Config,
    status: SandboxStatus,
    mode: str,
    env: ToolEnv,
    tool_context_files: tuple[Path, ...],
) -> CommandPolicy:
    """The run's command policy: its own tool-context files and the session's saved tool
    outputs stay readable inside agentd's hidden directories."""
    return CommandPolicy(
        mode=mode,
        settings=config.sandbox,
        status=status,
        workspace=env.workspace_root,
        hidden=agentd_paths(config),
        readable=(*tool_context_files, env.spill_dir),
        terminal=env.editor_terminal is not None,
    )


__all__ = [
    "DEFAULT_TOOLS",
    "CommandPolicy",
    "Permissions",
    "ToolRunner",
    "command_policy",
    "tool_env",
]
