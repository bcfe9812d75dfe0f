"""The built-in tool table and `run_builtin_tool`, the one entry point the run loop calls.

`run_builtin_tool` never raises for a failing tool: bad input, refused paths, missing
files and OS errors all come back as `ToolOutput(is_error=True)` with a message written for
the model. Only cancellation propagates (after the tool has cleaned up).
"""

from __future__ import annotations

import asyncio
import logging
import types
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs

from agentd.tools import bash as bash_tool
from agentd.tools import files, search
from agentd.tools.spec import ToolEnv, ToolError, ToolOutput, ToolSpec
from agentd.tools.truncation import DEFAULT_MAX_LINES, truncate_output

log = logging.getLogger(__name__)

# A tool may end a full page (DEFAULT_MAX_LINES lines, e.g. read_file's 2000) with a short
# note such as "use offset=2001 to continue"; that note must not trigger truncation.
NOTE_LINES = 5

ToolFunction = Callable[[dict[str, Any], ToolEnv, str], Awaitable[ToolOutput]]


def _schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


_PATH = "Path relative to the workspace root (absolute paths must be inside the workspace)."

_SPECS = [
    ToolSpec(
        name="read_file",
        description=(
            "Read a text file in the workspace. Returns numbered lines ('   12\\tcontent'), "
            f"up to {files.READ_DEFAULT_LIMIT} lines (the default and the maximum per call) "
            "from `offset` (1-based); a note says when more lines remain and which offset "
            "continues. "
            f"Lines longer than {files.READ_MAX_LINE_CHARS} characters are cut. Binary files "
            "are refused."
        ),
        parameters=_schema(
            {
                "path": {"type": "string", "description": _PATH},
                "offset": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "First line to read, 1-based (default 1).",
                },
                "limit": {
                    "type": "integer",
                    "minimum": 1,
                    "description": f"Number of lines to read (default {files.READ_DEFAULT_LIMIT}).",
                },
            },
            ["path"],
        ),
        writes=False,
    ),
    ToolSpec(
        name="list_dir",
        description=(
            "List a directory in the workspace: entry names sorted, directories with a "
            f"trailing '/', symbolic links with '@'. .git is skipped; at most "
            f"{files.LIST_MAX_ENTRIES} entries."
        ),
        parameters=_schema(
            {
                "path": {
                    "type": "string",
                    "description": "Directory relative to the workspace root (default: the root).",
                }
            },
            [],
        ),
        writes=False,
    ),
    ToolSpec(
        name="glob",
        description=(
            "Find files by path pattern, e.g. '**/*.py' or 'src/**/test_*.{ts,tsx}'. The "
            "pattern matches paths relative to `path`: '*' stays within one directory, '**' "
            "spans any number of directories. Returns workspace-relative file paths, most "
            f"recently modified first, at most {search.GLOB_MAX_RESULTS}. Skips .git and "
            "node_modules."
        ),
        parameters=_schema(
            {
                "pattern": {"type": "string", "description": "Glob pattern."},
                "path": {
                    "type": "string",
                    "description": "Directory to search, relative to the workspace root (default: the root).",
                },
            },
            ["pattern"],
        ),
        writes=False,
    ),
    ToolSpec(
        name="grep",
        description=(
            "Search file contents with a regular expression (Python syntax), line by line. "
            "Returns 'path:line:text' for each matching line (at most "
            f"{search.GREP_MAX_MATCHES}). `include` filters file names by glob, e.g. '*.py' "
            "or '*.{ts,tsx}'. Skips binary files, .git and node_modules. Patterns without "
            "lookaround or backreferences run in linear time (RE2: \\w, \\d, \\b are "
            "ASCII); those with them are slower. A search that outlasts its time budget "
            "returns what it found with a note."
        ),
        parameters=_schema(
            {
                "pattern": {"type": "string", "description": "Regular expression."},
                "path": {
                    "type": "string",
                    "description": "File or directory to search, relative to the workspace root (default: the root).",
                },
                "include": {
                    "type": "string",
                    "description": "Glob on file names to search, e.g. '*.py'.",
                },
            },
            ["pattern"],
        ),
        writes=False,
    ),
    ToolSpec(
        name="write_file",
        description=(
            "Create or overwrite a file in the workspace with `content` (parent directories "
            "are created). The write is atomic. Prefer edit_file for changes to an existing file."
        ),
        parameters=_schema(
            {
                "path": {"type": "string", "description": _PATH},
                "content": {"type": "string", "description": "The complete new file content."},
            },
            ["path", "content"],
        ),
        writes=True,
    ),
    ToolSpec(
        name="edit_file",
        description=(
            "Replace text in a file: `oldString` must match the file exactly (including "
            "whitespace) and occur exactly once, unless `replaceAll` is true. Include enough "
            "surrounding lines to make it unique."
        ),
        parameters=_schema(
            {
                "path": {"type": "string", "description": _PATH},
                "oldString": {"type": "string", "description": "Exact text to replace."},
                "newString": {"type": "string", "description": "Replacement text."},
                "replaceAll": {
                    "type": "boolean",
                    "description": "Replace every occurrence (default false).",
                },
            },
            ["path", "oldString", "newString"],
        ),
        writes=True,
    ),
    ToolSpec(
        name="bash",
        description=(
            "Run a command with /bin/bash -c in the workspace root. Returns stdout and stderr "
            "combined, with the exit code when it is not 0. Default timeout "
            f"{bash_tool.DEFAULT_TIMEOUT_MS // 1000} s, at most "
            f"{bash_tool.MAX_TIMEOUT_MS // 1000} s. Stdin is empty; background processes are "
            "stopped when the command finishes. Unless the user chose full access, the command "
            "runs in a sandbox: it writes only in the workspace (or nowhere, read-only) and "
            "a private /tmp that is emptied after each call, has no network, and cannot see "
            "agentd's own files; the result says when the sandbox blocked something."
        ),
        parameters=_schema(
            {
                "command": {"type": "string", "description": "The command line."},
                "timeoutMs": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": bash_tool.MAX_TIMEOUT_MS,
                    "description": f"Timeout in milliseconds (default {bash_tool.DEFAULT_TIMEOUT_MS}).",
                },
            },
            ["command"],
        ),
        writes=True,
        runs_commands=True,
    ),
]

BUILTIN_TOOLS: Mapping[str, ToolSpec] = types.MappingProxyType({s.name: s for s in _SPECS})
DEFAULT_TOOLS: tuple[str, ...] = ("read_file", "list_dir", "glob", "grep")

_FUNCTIONS: Mapping[str, ToolFunction] = {
    "read_file": files.read_file,
    "list_dir": files.list_dir,
    "glob": search.glob,
    "grep": search.grep,
    "write_file": files.write_file,
    "edit_file": files.edit_file,
    "bash": bash_tool.bash,
}

_JSON_TYPES: Mapping[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "boolean": (bool,),
}


def validate_input(spec: ToolSpec, raw: Any) -> dict[str, Any]:
    """Check `raw` against the spec's schema (keys, types, integer bounds); ToolError if not."""
    schema = spec.parameters
    if not isinstance(raw, Mapping):
        raise ToolError(f"{spec.name}: the input must be a JSON object, got {_json_type(raw)}.")
    properties: dict[str, Any] = schema["properties"]
    unknown = [key for key in raw if key not in properties]
    if unknown:
        expected = ", ".join(properties) or "none"
        raise ToolError(
            f"{spec.name}: unknown parameter {', '.join(map(repr, unknown))} "
            f"(expected: {expected})."
        )
    missing = [key for key in schema["required"] if key not in raw]
    if missing:
        raise ToolError(f"{spec.name}: missing required parameter {', '.join(map(repr, missing))}.")
    args: dict[str, Any] = {}
    for key, value in raw.items():
        if value is None and key not in schema["required"]:
            continue  # models often send null for an optional parameter they mean to omit
        prop = properties[key]
        kind = prop["type"]
        if kind == "integer" and isinstance(value, float) and value.is_integer():
            value = int(value)
        # bool is an int subclass; true is not an integer here.
        ok = isinstance(value, _JSON_TYPES[kind]) and not (
            kind == "integer" and isinstance(value, bool)
        )
        if not ok:
            raise ToolError(
                f"{spec.name}: parameter {key!r} must be {_article(kind)} {kind}, "
                f"got {_json_type(value)}."
            )
        if kind == "integer":
            if "minimum" in prop and value < prop["minimum"]:
                raise ToolError(
                    f"{spec.name}: parameter {key!r} must be at least {prop['minimum']}."
                )
            if "maximum" in prop and value > prop["maximum"]:
                raise ToolError(
                    f"{spec.name}: parameter {key!r} must be at most {prop['maximum']}."
                )
        args[key] = value
    return args


def _article(kind: str) -> str:
    return "an" if kind[0] in "aeiou" else "a"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    return type(value).__name__


def _title_from_input(name: str, raw: Any) -> str | None:
    if not isinstance(raw, Mapping):
        return None
    key = {"glob": "pattern", "grep": "pattern", "bash": "command"}.get(name, "path")
    value = raw.get(key)
    if not isinstance(value, str):
        return None
    if name == "bash":
        return bash_tool.command_title(value)
    return value[:100]


def _unicode_text(text: str) -> str:
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # A file name that is not UTF-8 reaches Python as surrogate escapes; they have no
        # UTF-8 form, so the output could be neither stored nor sent: shown as U+FFFD.
        try:
            raw = text.encode("utf-8", "surrogateescape")  # the file name's own bytes
        except UnicodeEncodeError:
            raw = text.encode("utf-8", "surrogatepass")
        return raw.decode("utf-8", "replace")
    return text


def _unicode_value(value: Any) -> Any:
    if isinstance(value, str):
        return _unicode_text(value)
    if isinstance(value, dict):
        return {_unicode_text(str(k)): _unicode_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_unicode_value(v) for v in value]
    return value


def _valid_unicode(result: ToolOutput) -> ToolOutput:
    """`result` with every string valid Unicode (names from the file system may not be)."""
    return attrs.evolve(
        result,
        output=_unicode_text(result.output),
        title=None if result.title is None else _unicode_text(result.title),
        metadata=None if result.metadata is None else _unicode_value(result.metadata),
    )


async def refusal_before_asking(name: str, input: Mapping[str, Any], env: ToolEnv) -> str | None:
    """Why a writing built-in call would fail whatever the user answered (invalid input,
    a path outside the workspace, a file it may not write): said instead of asking the
    user to allow it. The tool checks again when it runs."""
    spec = BUILTIN_TOOLS.get(name)
    if spec is None or not spec.writes or spec.runs_commands:
        return None
    try:
        args = validate_input(spec, input)
        await files.check_target(args["path"], env, "edit" if name == "edit_file" else "write")
    except ToolError as exc:
        return exc.message
    except OSError as exc:
        return f"{name} failed: {exc.strerror or exc}."
    return None


async def run_builtin_tool(
    name: str, input: Mapping[str, Any], env: ToolEnv, *, call_id: str
) -> ToolOutput:
    """Run one built-in tool call. Failures are outputs with is_error=True, never raised."""
    spec = BUILTIN_TOOLS.get(name)
    if spec is None:
        known = ", ".join(BUILTIN_TOOLS)
        return ToolOutput(output=f"Unknown tool {name!r}. Built-in tools: {known}.", is_error=True)
    try:
        args = validate_input(spec, input)
        result = await _FUNCTIONS[name](args, env, call_id)
    except ToolError as exc:
        result = ToolOutput(output=exc.message, title=_title_from_input(name, input), is_error=True)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        result = ToolOutput(
            output=f"{name} failed: {exc.strerror or exc}{where}.",
            title=_title_from_input(name, input),
            is_error=True,
        )
    except Exception as exc:
        log.exception("built-in tool %s failed", name)
        result = ToolOutput(
            output=f"{name} failed with an internal error: {type(exc).__name__}: {exc}",
            title=_title_from_input(name, input),
            is_error=True,
        )
    result = _valid_unicode(result)
    output = await asyncio.to_thread(
        truncate_output,
        result.output,
        env,
        call_id=call_id,
        max_lines=DEFAULT_MAX_LINES + NOTE_LINES,
    )
    return attrs.evolve(result, output=output) if output is not result.output else result
