"""Built-in tools the model can call, and the shapes the run loop uses for every tool.

Dependencies point down: builtin → files | search | bash → workspace | truncation → spec.
Nothing here imports from the rest of agentd but `agentd.sandbox` (a leaf: the mechanism
that confines the processes `bash` starts).
"""

from __future__ import annotations

from agentd.tools.builtin import (
    BUILTIN_TOOLS,
    DEFAULT_TOOLS,
    refusal_before_asking,
    run_builtin_tool,
)
from agentd.tools.spec import (
    EditorFiles,
    EditorTerminal,
    TerminalRun,
    ToolEnv,
    ToolOutput,
    ToolSpec,
    to_openai_tool,
)
from agentd.tools.truncation import truncate_output

__all__ = [
    "BUILTIN_TOOLS",
    "DEFAULT_TOOLS",
    "EditorFiles",
    "EditorTerminal",
    "TerminalRun",
    "ToolEnv",
    "ToolOutput",
    "ToolSpec",
    "refusal_before_asking",
    "run_builtin_tool",
    "to_openai_tool",
    "truncate_output",
]
