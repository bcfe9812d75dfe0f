"""The names MCP tools reach the model by.

A tool is offered as `<server>_<tool>`, with characters outside `[A-Za-z0-9_-]` made `_`
and at most 64 characters (what every provider accepts). Different tools can come out
the same: `x.y`, `x_y` and `x y` of one server, or server `gh`'s `create_issue` and
server `gh_create`'s `issue`. Names must be unique, so the tools wanting one name are
ranked and all but the first get `_` and 8 hex digits of the SHA-256 of their server
and tool names instead:

1. a name nothing had to be changed in (`gh_create_issue` from `gh` / `create_issue`)
   before one that was made valid (`s_x_y` from `s` / `x.y`);
2. then the shorter server name (`gh` before `gh_create`);
3. then the server and tool names in code-point order.

The ranking looks only at the tools themselves, never at the order servers list them
or start in, so a name is the same after a restart and after `tools/list_changed`; it
changes only when a better-ranked tool wanting the same name appears. Built-in tool
names are never given to an MCP tool.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

import attrs

NAME_MAX = 64
# The built-in tools' names (agentd.tools.BUILTIN_TOOLS, which is not imported here: it
# loads with the first chat): never given to an MCP tool. A test keeps the two in step.
BUILTIN_TOOL_NAMES = ("read_file", "list_dir", "glob", "grep", "write_file", "edit_file", "bash")
_INVALID_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]")
# `_` and 8 hex digits.
_SUFFIX_LEN = 9


def qualified_name(server: str, tool: str) -> str:
    """`<server>_<tool>` as the model sees it when no other tool wants the name:
    characters outside `[A-Za-z0-9_-]` become `_`; past 64 characters it is cut and
    ends with a hash of the full name, so two long names stay distinct."""
    name = _INVALID_NAME_CHARS.sub("_", f"{server}_{tool}")
    if len(name) <= NAME_MAX:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: NAME_MAX - _SUFFIX_LEN]}_{digest}"


def suffixed_name(server: str, tool: str, salt: int = 0) -> str:
    """The name of a tool that lost its plain name to another: cut to leave room, then
    `_` and 8 hex digits of SHA-256 over the server and tool names (and `salt`, in the
    unlikely case that name is taken too)."""
    base = _INVALID_NAME_CHARS.sub("_", f"{server}_{tool}")[: NAME_MAX - _SUFFIX_LEN]
    key = f"{server}\0{tool}" + (f"\0{salt}" if salt else "")
    return f"{base}_{hashlib.sha256(key.encode()).hexdigest()[:8]}"


@attrs.frozen
class ToolName:
    name: str
    # Who else wants this tool's plain name: `"<server>: <tool>"`, or `"built-in <name>"`;
    # empty when nobody does.
    collides_with: tuple[str, ...] = ()
    # The name carries a hash suffix because a better-ranked tool has the plain one.
    renamed: bool = False


def assign_names(
    tools: Iterable[tuple[str, str]],
    builtins: Iterable[str] = (),
    fixed: dict[tuple[str, str], ToolName] | None = None,
) -> dict[tuple[str, str], ToolName]:
    """Unique names for (server, tool) pairs, none of them a built-in tool's or one of
    the `fixed` names (those already given to the configured servers' tools, when naming
    a session's own servers). A pair given twice is named once; a pair in `fixed` keeps
    its name there."""
    fixed = fixed or {}
    pairs = sorted(set(tools) - set(fixed), key=_rank)
    plain = {pair: qualified_name(*pair) for pair in [*pairs, *fixed]}
    builtin = set(builtins)
    wanted: dict[str, list[tuple[str, str]]] = {}
    for pair in [*sorted(fixed, key=_rank), *pairs]:
        wanted.setdefault(plain[pair], []).append(pair)
    used = builtin | {named.name for named in fixed.values()}
    names: dict[tuple[str, str], str] = {}
    for pair in pairs:
        if plain[pair] not in used:
            names[pair] = plain[pair]
            used.add(plain[pair])
    for pair in pairs:
        if pair in names:
            continue
        salt = 0
        while (name := suffixed_name(*pair, salt)) in used:
            salt += 1
        names[pair] = name
        used.add(name)
    result = {pair: fixed[pair] for pair in set(tools) & set(fixed)}
    for pair in pairs:
        others = [f"{s}: {t}" for s, t in wanted[plain[pair]] if (s, t) != pair]
        if plain[pair] in builtin:
            others.insert(0, f"built-in {plain[pair]}")
        result[pair] = ToolName(
            name=names[pair], collides_with=tuple(others), renamed=names[pair] != plain[pair]
        )
    return result


def _rank(pair: tuple[str, str]) -> tuple[bool, int, str, str]:
    server, tool = pair
    altered = qualified_name(server, tool) != f"{server}_{tool}"
    return (altered, len(server), server, tool)
