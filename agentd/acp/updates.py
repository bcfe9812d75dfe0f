"""agentd's objects as Agent Client Protocol values, and ACP input as agentd's: pure
functions, no I/O (acp-v1.md, sections 4 to 7). What they build is JSON values; the tests check
every message against the official ACP schema."""

from __future__ import annotations

import datetime
import os
import shlex
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, unquote, urlparse

from agentd.acp.methods import EXT_METHODS, EXT_NOTIFICATIONS
from agentd.errors import InvalidParams
from agentd.protocol import types as t
from agentd.protocol.converter import unstructure

Json = dict[str, Any]

STOP_REASONS: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool-calls": "max_turn_requests",
    "aborted": "cancelled",
    "content-filter": "refusal",
    # A run that ended early otherwise (a crash's leftover never answers a prompt).
    "interrupted": "cancelled",
}

TOOL_KINDS = {
    "read_file": "read",
    "list_dir": "read",
    "glob": "search",
    "grep": "search",
    "write_file": "edit",
    "edit_file": "edit",
    "bash": "execute",
}
_FILE_TOOLS = ("read_file", "write_file", "edit_file", "list_dir")

COMPACT = {"name": "compact", "description": "Summarize the conversation so far"}


def meta(**fields: Any) -> Json:
    """`_meta` holding agentd's fields (None values left out)."""
    return {"agentd": {k: v for k, v in fields.items() if v is not None}}


def iso(ms: int) -> str:
    moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


# --- initialize ----------------------------------------------------------------------------

ACP_VERSION = 1


def initialize_result(tool_context_dir: str, version: str) -> Json:
    """What agentd can do, in ACP's terms (acp-v1.md, section 2)."""
    return {
        # Version 1 whatever was asked: the client decides whether it can go on.
        "protocolVersion": ACP_VERSION,
        "agentCapabilities": {
            "loadSession": True,
            "promptCapabilities": {"image": False, "audio": False, "embeddedContext": False},
            "mcpCapabilities": {"http": True, "sse": False},
            "sessionCapabilities": {"list": {}, "delete": {}, "resume": {}, "close": {}},
            "_meta": meta(
                contractVersion=1,
                toolContextDir=tool_context_dir,
                extMethods=list(EXT_METHODS),
                extNotifications=list(EXT_NOTIFICATIONS),
            ),
        },
        "agentInfo": {"name": "agentd", "title": "agentd", "version": version},
        "authMethods": [],
    }


# --- sessions ------------------------------------------------------------------------------


def session_root(session: t.Session) -> str:
    return session.workspace_root or os.getcwd()


# What SessionInfo._meta.agentd carries of a session (as session/list's Session has it).
_INFO_FIELDS = (
    "clientSessionId parentId projectId projectKey actorKey sessionScopeKey model status usage cost"
).split()


def session_info(session: t.Session) -> Json:
    wire = unstructure(session)
    ours = {k: wire[k] for k in _INFO_FIELDS if k in wire}
    ours["created"] = session.time.created
    return {
        "sessionId": session.id,
        "cwd": session_root(session),
        "title": session.title,
        "updatedAt": iso(session.time.updated),
        "_meta": {"agentd": ours},
    }


def info_update(session: t.Session) -> Json:
    return {
        "sessionUpdate": "session_info_update",
        "title": session.title,
        "updatedAt": iso(session.time.updated),
    }


def config_options(models: t.ModelsListResult, current: str | None) -> list[Json]:
    ids = [m.id for m in models.models]
    default = next((m.id for m in models.models if m.default), ids[0] if ids else "")
    value = current if current in ids else default
    return [
        {
            "id": "model",
            "name": "Model",
            "category": "model",
            "type": "select",
            "currentValue": value,
            "options": [{"value": i, "name": i} for i in ids],
        }
    ]


def commands_update() -> Json:
    return {"sessionUpdate": "available_commands_update", "availableCommands": [COMPACT]}


# --- prompts -------------------------------------------------------------------------------


def prompt_parts(blocks: list[dict[str, Any]], root: str) -> list[t.InputPart]:
    """A prompt's content blocks as session/chat parts: text as text, a `file:` link as
    a file part, any other link as text naming it. Images, audio and embedded resources
    are not advertised: -32602 naming the block."""
    parts: list[t.InputPart] = []
    for i, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        field = f"prompt[{i}]"
        if kind == "text" and isinstance(block.get("text"), str):
            parts.append(t.TextInputPart(text=block["text"]))
        elif kind == "resource_link" and isinstance(block.get("uri"), str):
            uri = block["uri"]
            parsed = urlparse(uri)
            if parsed.scheme == "file":
                mime = block.get("mimeType")
                parts.append(
                    t.FileInputPart(
                        path=unquote(parsed.path), mime=mime if isinstance(mime, str) else None
                    )
                )
            else:
                name = block.get("name") if isinstance(block.get("name"), str) else uri
                parts.append(t.TextInputPart(text=f"[{name}]({uri})"))
        elif kind in ("image", "audio", "resource"):
            raise InvalidParams(
                f"params.{field}: {kind} content is not supported (agentd advertises "
                "promptCapabilities image, audio and embeddedContext false)",
                data={"field": field},
            )
        else:
            raise InvalidParams(
                f"params.{field}: a content block of type text or resource_link is expected",
                data={"field": field},
            )
    return parts


def compact_request(blocks: list[dict[str, Any]]) -> bool:
    """Whether the prompt is the /compact command (its first text)."""
    for block in blocks:
        if isinstance(block, dict) and block.get("type") == "text":
            text = block.get("text")
            return isinstance(text, str) and text.strip().split(" ", 1)[0] == "/compact"
    return False


# --- parts ---------------------------------------------------------------------------------


def chunk(kind: str, text: str, message_id: str, **agentd: Any) -> Json:
    """`agent_message_chunk` / `agent_thought_chunk` / `user_message_chunk` of text."""
    update: Json = {
        "sessionUpdate": kind,
        "content": {"type": "text", "text": text},
        "messageId": message_id,
    }
    if any(v is not None for v in agentd.values()):
        update["_meta"] = meta(**agentd)
    return update


def file_chunk(kind: str, path: str, message_id: str) -> Json:
    return {
        "sessionUpdate": kind,
        "content": {
            "type": "resource_link",
            "uri": "file://" + quote(path),
            "name": os.path.basename(path) or path,
        },
        "messageId": message_id,
    }


def _absolute(path: Any, root: str) -> str | None:
    if not isinstance(path, str) or not path:
        return None
    return os.path.normpath(os.path.join(root, path))


def tool_title(tool: str, args: Any) -> str:
    args = args if isinstance(args, dict) else {}
    path = args.get("path")
    shown = os.path.basename(path) if isinstance(path, str) and path else None
    if tool == "read_file" and shown:
        return f"Read {shown}"
    if tool == "list_dir":
        return f"List {path or '.'}"
    if tool == "write_file" and shown:
        return f"Write {shown}"
    if tool == "edit_file" and shown:
        return f"Edit {shown}"
    if tool in ("glob", "grep") and isinstance(args.get("pattern"), str):
        return f"Search {args['pattern']!r}"
    if tool == "bash" and isinstance(args.get("command"), str):
        command = " ".join(shlex.split(args["command"], posix=False)[:8])[:80]
        return f"Run `{command}`"
    return tool


def _locations(tool: str, args: Any, root: str) -> list[Json]:
    if tool not in _FILE_TOOLS or not isinstance(args, dict):
        return []
    path = _absolute(args.get("path") or ".", root)
    return [{"path": path}] if path else []


def tool_call(name: str, call_id: str, args: Any, root: str, **agentd: Any) -> Json:
    """The `tool_call` that announces a call (live, or in a permission request), pending."""
    call: Json = {
        "toolCallId": call_id,
        "title": tool_title(name, args),
        "kind": TOOL_KINDS.get(name, "other"),
        "status": "pending",
        "rawInput": args,
        "locations": _locations(name, args, root),
    }
    if agentd:
        call["_meta"] = meta(**agentd)
    return call


def _diff(tool: str, args: Any, root: str) -> Json | None:
    if not isinstance(args, dict):
        return None
    path = _absolute(args.get("path"), root)
    if path is None:
        return None
    if tool == "write_file" and isinstance(args.get("content"), str):
        return {"type": "diff", "path": path, "oldText": None, "newText": args["content"]}
    old, new = args.get("oldString"), args.get("newString")
    if tool == "edit_file" and isinstance(old, str) and isinstance(new, str):
        return {"type": "diff", "path": path, "oldText": old, "newText": new}
    return None


def _text(text: str) -> Json:
    return {"type": "content", "content": {"type": "text", "text": text}}


def tool_fields(part: t.ToolPart, root: str) -> Json:
    """What a tool part's state says in a `tool_call_update` (or a replayed
    `tool_call`): status, final input, output or error."""
    state = part.state
    title = getattr(state, "title", None) or tool_title(part.tool, state.input)
    fields: Json = {
        "title": title,
        "rawInput": state.input,
        # The input is complete only now (it streams in while the call is pending).
        "locations": _locations(part.tool, state.input, root),
    }
    if isinstance(state, t.ToolStatePending):
        fields["status"] = "pending"
    elif isinstance(state, t.ToolStateRunning):
        fields["status"] = "in_progress"
    elif isinstance(state, t.ToolStateCompleted):
        fields["status"] = "completed"
        content = [_text(state.output)]
        terminal = (state.metadata or {}).get("terminalId")
        if isinstance(terminal, str):  # the command ran in the editor's terminal
            content.insert(0, {"type": "terminal", "terminalId": terminal})
        diff = _diff(part.tool, state.input, root)
        if diff is not None:
            content.append(diff)
        fields["content"] = content
        fields["rawOutput"] = {"output": state.output, "metadata": state.metadata}
    else:
        fields["status"] = "failed"
        fields["content"] = [_text(state.error)]
        # v1 has no "cancelled" status: an aborted call is failed, saying so.
        aborted = state.error.startswith("aborted")
        fields["_meta"] = meta(error="aborted" if aborted else state.error)
    return fields


def usage_update(
    finish: t.StepFinishPart, session: t.Session | None, window: int | None, run_id: str
) -> Json | None:
    """The context in use after a step; None when the model's context window is not
    known (`size` is required)."""
    if window is None:
        return None
    update: Json = {
        "sessionUpdate": "usage_update",
        "used": finish.usage.input_tokens + finish.usage.output_tokens,
        "size": window,
        "_meta": meta(runId=run_id, usage=unstructure(finish.usage)),
    }
    if session is not None:
        update["cost"] = {"amount": session.cost, "currency": "USD"}
    return update


# --- history -------------------------------------------------------------------------------


def replay(messages: Iterable[t.Message], root: str) -> Iterable[Json]:
    """session/load's updates: every message, oldest first, its parts in order; a
    message's finishReason and error on its last update (an empty chunk when it has
    none to carry them)."""
    for message in messages:
        updates = list(_message_updates(message, root))
        extra = {"finishReason": message.finish_reason, "error": None}
        if message.error is not None:
            extra["error"] = unstructure(message.error)
        if message.role == "assistant" and (message.finish_reason or message.error):
            if not updates:
                updates.append(chunk("agent_message_chunk", "", message.id))
            last = updates[-1]
            carrier = last.get("_meta", {}).get("agentd", {})
            carrier.update({k: v for k, v in extra.items() if v is not None})
            last["_meta"] = {"agentd": carrier}
        yield from updates


def _message_updates(message: t.Message, root: str) -> Iterable[Json]:
    user = message.role == "user"
    text_kind = "user_message_chunk" if user else "agent_message_chunk"
    for part in message.parts:
        if isinstance(part, t.TextPart):
            if not part.synthetic and part.text:
                yield chunk(text_kind, part.text, message.id, summary=message.summary)
        elif isinstance(part, t.ReasoningPart):
            if part.text:
                yield chunk("agent_thought_chunk", part.text, message.id)
        elif isinstance(part, t.FilePart):
            yield file_chunk(text_kind, part.path, message.id)
        elif isinstance(part, t.ToolPart):
            ids = meta(runId=message.run_id, partId=part.id, tool=part.tool)["agentd"]
            call = tool_call(part.tool, part.call_id, part.state.input, root)
            call.update(tool_fields(part, root))
            # The final state's own _meta (an error) beside the ids.
            call["_meta"] = {"agentd": {**ids, **call.get("_meta", {}).get("agentd", {})}}
            yield {"sessionUpdate": "tool_call", **call}
