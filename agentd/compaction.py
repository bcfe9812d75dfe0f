"""Compaction: when a session's last step nearly filled the model's context (or the
user asks), the history is summarized into a `summary: true` message; later runs send
the summary, then the last few messages verbatim, then what follows."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentd import ids
from agentd.config import ModelConfig
from agentd.errors import ProviderError
from agentd.history import chat_role, chat_size
from agentd.model_context import chat_of
from agentd.protocol import types as t
from agentd.protocol.converter import unstructure
from agentd.run_stream import RunStream
from agentd.storage.log import LogState, SessionLog
from agentd.turn import step_cost, usage_from_provider

if TYPE_CHECKING:
    from agentd.provider import ChatProvider

SUMMARY_PROMPT = (
    "Summarize the conversation so far for a continuation: the user's goals, decisions, "
    "facts learned, files touched and open tasks. Be complete but concise."
)
KEEP_TAIL_MESSAGES = 4
CONTEXT_MARGIN = 0.1


def needs_compaction(state: LogState, model: ModelConfig) -> bool:
    """The last step's tokens exceed the usable context (window - output - margin)."""
    if not model.context_window:
        return False
    usable = (model.context_window - (model.max_output_tokens or 0)) * (1 - CONTEXT_MARGIN)
    usage = state.last_step_usage
    if usage is None:  # no step yet, or a summary since
        return False
    return usage.get("inputTokens", 0) + usage.get("outputTokens", 0) > usable


async def compact(
    log: SessionLog,
    provider: ChatProvider,
    model: ModelConfig,
    *,
    auto: bool,
    stream: RunStream | None = None,
) -> t.Message:
    """Summarize the session's history and record the summary. Within a run, the
    summary is streamed to the editor like any message (`stream`); a provider error
    comes back as the message's `error`, nothing recorded."""
    state = await log.read()
    assert state.session is not None
    msgs = [m for m in state.messages.values() if m.meta["id"] not in state.reverted]
    keep = msgs[-KEEP_TAIL_MESSAGES:] if len(msgs) > KEEP_TAIL_MESSAGES else []
    chat = [c for m in msgs[: len(msgs) - len(keep)] for c in chat_of(m)]
    chat = _fit(chat, model)
    now = ids.now_ms()
    message = t.Message(
        id=ids.new_id("msg"),
        session_id=state.session["id"],
        role="assistant",
        time=t.MessageTime(created=now),
        model=model.id,
        summary=True,
    )
    try:
        text, usage = await provider.complete_text(
            model=model.upstream,
            messages=[
                {"role": "system", "content": SUMMARY_PROMPT},
                *chat,
                {"role": "user", "content": "Summarize the conversation above."},
            ],
            max_tokens=model.max_output_tokens,
        )
    except ProviderError as exc:
        message.error = t.ErrorInfo(**exc.to_wire())
        message.finish_reason = "error"
        message.time.completed = ids.now_ms()
        return message
    message.usage = usage_from_provider(usage)
    message.cost = float(step_cost(model, message.usage))
    message.finish_reason = "stop"
    message.parts = [
        t.CompactionPart(id=ids.new_id("prt"), auto=auto),
        t.TextPart(id=ids.new_id("prt"), text=text, time=t.PartTime(start=now, end=ids.now_ms())),
    ]
    message.time.completed = ids.now_ms()
    if stream is not None:
        stream.message(message)
        for part in message.parts:
            stream.part(message.id, part)
    else:
        data = unstructure(message)
        parts = data.pop("parts")
        log.append(
            {"k": "message", "message": data, "at": now},
            *({"k": "part", "m": message.id, "part": part} for part in parts),
        )
    log.append(
        {"k": "compact", "from": message.id, "keep": [m.meta["id"] for m in keep], "at": now}
    )
    await log.flush()
    return message


def _fit(chat: list[dict[str, Any]], model: ModelConfig) -> list[dict[str, Any]]:
    """Drop the oldest messages so a summary request fits the model's context (about
    three characters a token), keeping tool results with their calls."""
    if not model.context_window:
        return chat
    budget = int((model.context_window - (model.max_output_tokens or 0)) * 0.8 * 3)
    total = 0
    start = len(chat)
    while start > 0:
        size = chat_size(chat[start - 1])
        if total + size > budget:
            break
        total += size
        start -= 1
    while start < len(chat) and chat_role(chat[start]) == "tool":
        start += 1
    return chat[start:]
