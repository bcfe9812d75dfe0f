"""What a tool is to the run loop: its spec, its output, and the environment it runs in."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import attrs

from agentd.sandbox import Confinement

DEFAULT_SEARCH_TIMEOUT_S = 30.0


@attrs.frozen
class ToolSpec:
    """A tool as the model sees it. `writes=True` means the run loop must ask permission;
    `runs_commands=True` that it starts processes for the model, which run in the
    session's sandbox (`ToolEnv.sandbox`)."""

    name: str
    description: str
    parameters: dict[str, Any]  # a JSON Schema object
    writes: bool
    runs_commands: bool = False


@attrs.frozen
class ToolOutput:
    """The result of one tool call. A failed call is an output with `is_error=True`.
    `sandbox_blocked` says what the sandbox refused when that made a command fail
    ("writing outside the workspace"), for the run loop to offer a rerun with more access."""

    output: str
    title: str | None = None
    metadata: dict[str, Any] | None = None
    is_error: bool = False
    sandbox_blocked: str | None = None


class EditorFiles(Protocol):
    """The editor's own view of files (its buffers, unsaved edits included), when it
    offers one (ACP's `fs/read_text_file` / `fs/write_text_file`). Paths are absolute
    and already confined to the workspace; a failure raises ToolError. `reads` /
    `writes`: which of the two the editor offers (the other goes to the disk)."""

    reads: bool
    writes: bool

    async def read(self, path: str, line: int, limit: int) -> str:
        """`limit` lines from line `line` (1-based); limit 0: to the end."""
        ...

    async def write(self, path: str, content: str) -> None: ...


@attrs.frozen
class TerminalRun:
    """A command run in the editor's terminal: what it printed (as far as the editor
    kept it), how it ended (`exit_code` None when a signal ended it), and its id there."""

    output: str
    exit_code: int | None
    signal: str | None
    truncated: bool
    timed_out: bool
    terminal_id: str


class EditorTerminal(Protocol):
    """The editor's terminal (ACP's `terminal/*`), where `bash` runs when the editor
    offers one: the user watches it live. `run` ends the command after `timeout_s`
    (killed) and when cancelled, and always releases the terminal."""

    async def run(
        self, command: str, cwd: str, env: Mapping[str, str], timeout_s: float, call_id: str
    ) -> TerminalRun: ...


@attrs.frozen
class ToolEnv:
    """Where a tool call runs.

    `spill_dir` receives the full text of truncated outputs (created on demand, 0700);
    `process_env` is added to the environment of processes the tools start (for example
    AGENTD_SESSION_SCOPE_KEY and AGENTD_TOOL_CONTEXT_DIR), and `drop_env` names variables
    of agentd's own environment they must not get (those holding configured secrets);
    `sandbox` confines those processes (None: they run unconfined); `search_timeout_s` is
    the time budget of one glob or grep call; `editor_files`, when the editor offers
    them, is where read_file, write_file and edit_file read and write text;
    `editor_terminal`, when set, is where `bash` runs (unconfined: the run's command
    policy asks before every command). `environment` and `umask` are the editor's
    (`EditorProcess`) where they are not agentd's own: the processes the tools start
    inherit them, and the files they make take that umask.
    """

    workspace_root: Path
    spill_dir: Path
    process_env: Mapping[str, str] = attrs.field(factory=dict)
    search_timeout_s: float = DEFAULT_SEARCH_TIMEOUT_S
    drop_env: frozenset[str] = frozenset()
    sandbox: Confinement | None = None
    editor_files: EditorFiles | None = None
    editor_terminal: EditorTerminal | None = None
    environment: Mapping[str, str] | None = None
    umask: int | None = None


class ToolError(Exception):
    """A tool failure the model should read; `run_builtin_tool` turns it into an error output."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def to_openai_tool(spec_name: str, description: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI chat-completions `tools[]` entry for a tool."""
    return {
        "type": "function",
        "function": {"name": spec_name, "description": description, "parameters": parameters},
    }
