"""Sessions as documents: the versioned JSON export (`session/export` "json", read back by
`session/import`) and a Markdown transcript (`session/export` "markdown").

The JSON document is `agentd.protocol.types.SessionExport` (in the published schema as
`documents.sessionExport`): `agentdExport` (the format's version), the session's own
fields, its persisted messages whole, and the compaction in effect. It holds nothing
secret: it is made from the session log, which never holds one (access tokens and the
`env` and `headers` of MCP servers given to session/create live in memory only), and
of the log's session header only what an import needs.

Reading one back (`parse`) checks everything before anything is created: the size,
JSON, the version, every field's type (through the wire converter, so a problem is
named by its path, `params.content.messages[2].parts[0].text: expected string`),
values that cannot be stored, and that the document holds together (unique ids,
finished messages, references to messages it holds, plausible figures).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable
from typing import Any, NoReturn

import orjson

from agentd import keys
from agentd.errors import InvalidParams
from agentd.protocol import types as t
from agentd.protocol.converter import describe_error, structure, unstructure
from agentd.protocol.encoding import encoding_problems

# The largest export session/import reads (characters of `content`). An editor's
# request is bounded by the frame limit anyway; `agentd import` raises the spawned
# daemon's frame limit to fit a file up to this size.
MAX_IMPORT_CHARS = 64 * 1024 * 1024
# What a model server's figures are clamped to (agentd.provider): an export with more
# is not one agentd wrote.
MAX_TOKENS = 10**12
MAX_COST = 1e9
# Times are Unix milliseconds: anything past the year 285,000 is not a time.
MAX_TIME = 2**53
WHERE = "params.content"


# --- writing ---------------------------------------------------------------------------


def exported_session(header: dict[str, Any], title: str, updated: int) -> dict[str, Any]:
    """The export's `session`, from a log header: what an import needs, nothing else (no
    clientSessionId, scope key, trace id or sandbox mode: an import makes its own)."""
    session: dict[str, Any] = {
        "id": header["id"],
        "title": title,
        "projectKey": header["projectKey"],
        "actorKey": header["actorKey"],
        "time": {"created": header["created"], "updated": updated},
    }
    for key in ("projectId", "workspaceRoot", "model", "forkedFrom"):
        if header.get(key) is not None:
            session[key] = header[key]
    return session


def to_json(
    session: dict[str, Any],
    messages: list[dict[str, Any]],
    compaction: tuple[str, list[str]] | None,
) -> str:
    document: dict[str, Any] = {
        "agentdExport": t.EXPORT_VERSION,
        "exportedAt": int(time.time() * 1000),
        "session": session,
        "messages": messages,
    }
    if compaction is not None:
        document["compaction"] = {"summaryId": compaction[0], "keep": compaction[1]}
    return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode()


def to_markdown(session: dict[str, Any], messages: list[dict[str, Any]]) -> str:
    """A transcript to read: the conversation, tool calls with their input and output,
    reasoning quoted, errors and figures in one line per message."""
    out = [f"# {_one_line(session['title'])}", ""]
    facts = [f"Session `{session['id']}`", f"created {_when(session['time']['created'])}"]
    if session.get("model"):
        facts.append(f"model `{session['model']}`")
    if session.get("workspaceRoot"):
        facts.append(f"workspace `{session['workspaceRoot']}`")
    out += [" · ".join(facts), ""]
    forked = session.get("forkedFrom")
    if forked:
        at = f" at message `{forked['messageId']}`" if forked.get("messageId") else ""
        out += [f"Forked from session `{forked['sessionId']}`{at}.", ""]
    for message in messages:
        out += ["---", ""]
        out += _message_markdown(message)
    return "\n".join(out).rstrip() + "\n"


def _message_markdown(message: dict[str, Any]) -> list[str]:
    role = message.get("role")
    heading = "User" if role == "user" else "Summary" if message.get("summary") else "Assistant"
    out = [f"## {heading}", ""]
    facts = [_when(message["time"]["created"])]
    if message.get("model"):
        facts.append(f"model {message['model']}")
    usage = message.get("usage") or {}
    if usage.get("inputTokens") or usage.get("outputTokens"):
        facts.append(f"{usage.get('inputTokens', 0)} tokens in, {usage.get('outputTokens', 0)} out")
    if role == "assistant" and message.get("finishReason"):
        facts.append(f"finished: {message['finishReason']}")
    out += [f"*{' · '.join(facts)}*", ""]
    for item in message.get("instructions") or []:
        out.append(f"- instructions: `{item['path']}` ({item['sent']} of {item['size']} bytes)")
    if message.get("instructions"):
        out.append("")
    for part in message.get("parts") or []:
        out += _part_markdown(part)
    error = message.get("error")
    if error:
        out += [f"**Error** {error.get('name')}: {error.get('message')}", ""]
    return out


def _part_markdown(part: dict[str, Any]) -> list[str]:
    kind = part.get("type")
    if kind == "text" and not part.get("synthetic"):
        return [part.get("text", ""), ""] if part.get("text") else []
    if kind == "reasoning" and part.get("text"):
        quoted = [f"> {line}" if line else ">" for line in part["text"].splitlines()]
        return ["> **Reasoning**", ">", *quoted, ""]
    if kind == "file":
        return [f"Attached file `{part.get('path')}` ({part.get('mime')})", ""]
    if kind == "compaction":
        how = "automatically" if part.get("auto") else "on request"
        return [f"*The conversation before this was summarized ({how}).*", ""]
    if kind == "tool":
        state = part.get("state") or {}
        out = [f"**Tool** `{part.get('tool')}` · {state.get('status')}", ""]
        out += ["Input:", "", *_fenced(_pretty(state.get("input")), "json"), ""]
        if state.get("status") == "completed":
            out += ["Output:", "", *_fenced(str(state.get("output", ""))), ""]
        elif state.get("status") == "error":
            out += ["Error:", "", *_fenced(str(state.get("error", ""))), ""]
        return out
    return []


def _fenced(text: str, language: str = "") -> list[str]:
    """A code block whose fence no backtick run inside it can close."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + language, text, fence]


def _pretty(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


def _when(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms / 1000))


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --- reading ---------------------------------------------------------------------------


def parse(content: str) -> t.SessionExport:
    """A JSON export checked whole; InvalidParams naming the first problems otherwise.
    Blocking (a large document takes a while): call it in a thread."""
    if len(content) > MAX_IMPORT_CHARS:
        _fail(
            f"{WHERE}: {len(content)} characters; an import is at most "
            f"{MAX_IMPORT_CHARS} characters"
        )
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        _fail(f"{WHERE}: not valid JSON ({exc}); is the file complete?")
    if not isinstance(data, dict) or "agentdExport" not in data:
        _fail(f"{WHERE}: not an agentd session export (no agentdExport field)")
    version = data["agentdExport"]
    if type(version) is not int or version != t.EXPORT_VERSION:
        newer = type(version) is int and version > t.EXPORT_VERSION
        why = "is newer than this agentd reads" if newer else "is not a version agentd wrote"
        _fail(
            f"{WHERE}.agentdExport: version {_shown(version)} {why} "
            f"(this agentd reads version {t.EXPORT_VERSION})"
        )
    problems = encoding_problems(data, WHERE)
    if problems:
        _fail(*problems)
    try:
        document: t.SessionExport = structure(data, t.SessionExport)
    except Exception as exc:
        _fail(*(_rebase(line) for line in describe_error(exc)))
    problems = list(_consistency_problems(document))
    if problems:
        _fail(*problems[:5])
    return document


def _consistency_problems(doc: t.SessionExport) -> Iterable[str]:
    session = doc.session
    where = f"{WHERE}.session"
    for field, value in (("actorKey", session.actor_key), ("projectKey", session.project_key)):
        if not keys.is_component(value):
            yield f"{where}.{field}: {_shown(value)} is not a key agentd makes"
    yield from _time_problems(f"{where}.time", [session.time.created, session.time.updated])
    seen_messages: dict[str, int] = {}
    seen_parts: set[str] = set()
    for index, message in enumerate(doc.messages):
        at = f"{WHERE}.messages[{index}]"
        if message.id in seen_messages:
            yield f"{at}.id: {message.id!r} is also messages[{seen_messages[message.id]}]'s id"
        if message.time.completed is None:
            yield f"{at}.time.completed: missing; an export holds finished messages only"
        yield from _time_problems(f"{at}.time", [message.time.created, message.time.completed])
        if message.parent_id is not None and message.parent_id not in seen_messages:
            yield f"{at}.parentId: no earlier message {message.parent_id!r} in the export"
        yield from _figure_problems(f"{at}", message.usage, message.cost)
        for p_index, part in enumerate(message.parts):
            if part.id in seen_parts:
                yield f"{at}.parts[{p_index}].id: {part.id!r} is used twice"
            seen_parts.add(part.id)
            if isinstance(part, t.StepFinishPart):
                yield from _figure_problems(f"{at}.parts[{p_index}]", part.usage, part.cost)
        seen_messages[message.id] = index
    compaction = doc.compaction
    if compaction is not None:
        summary = seen_messages.get(compaction.summary_id)
        if summary is None or not doc.messages[summary].summary:
            yield (
                f"{WHERE}.compaction.summaryId: {compaction.summary_id!r} is not a summary "
                "message of the export"
            )
        for k_index, kept in enumerate(compaction.keep):
            if kept not in seen_messages or (
                summary is not None and seen_messages[kept] >= summary
            ):
                yield (
                    f"{WHERE}.compaction.keep[{k_index}]: {kept!r} is not a message of the "
                    "export before its summary"
                )


def _time_problems(where: str, values: list[int | None]) -> Iterable[str]:
    for value in values:
        if value is not None and not 0 <= value <= MAX_TIME:
            yield f"{where}: {value} is not a time in milliseconds"
            return


def _figure_problems(where: str, usage: t.Usage | None, cost: float | None) -> Iterable[str]:
    if usage is not None:
        for name, value in unstructure(usage).items():
            if not 0 <= value <= MAX_TOKENS:
                yield f"{where}.usage.{name}: {value} is not a token count (0 to 10^12)"
    if cost is not None and not (math.isfinite(cost) and 0 <= cost <= MAX_COST):
        yield f"{where}.cost: {cost} is not a cost in US dollars"


def _rebase(line: str) -> str:
    """The converter names fields from `params`; here they are inside `content`."""
    return WHERE + line[len("params") :] if line.startswith("params") else f"{WHERE}: {line}"


def _shown(value: Any) -> str:
    text = orjson.dumps(value).decode() if _dumpable(value) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _dumpable(value: Any) -> bool:
    try:
        orjson.dumps(value)
    except TypeError:
        return False
    return True


def _fail(*problems: str) -> NoReturn:
    raise InvalidParams(
        "invalid export: " + "; ".join(problems),
        data={"field": "content", "errors": list(problems)},
    )
