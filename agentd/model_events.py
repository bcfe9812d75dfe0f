"""What a model provider streams: plain data shared by the provider (which produces it)
and the run loop (which consumes it). Kept apart from agentd.provider so the run loop
can use these types without loading the HTTP client stack."""

from __future__ import annotations

import attrs

from agentd.errors import ProviderError


@attrs.frozen
class TokenUsage:
    input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


@attrs.frozen
class TextDelta:
    text: str


@attrs.frozen
class ReasoningDelta:
    text: str


@attrs.frozen
class ToolCallStarted:
    """A tool call's id and name are known. `index` is the call's position in
    `StepFinished.tool_calls` (not the wire index, which servers may reuse)."""

    index: int
    call_id: str
    name: str


@attrs.frozen
class ToolCallArguments:
    """An argument fragment for call `index`; fragments arrive in order, after its
    `ToolCallStarted`, and concatenate to `ToolCall.arguments`."""

    index: int
    delta: str


@attrs.frozen
class ToolCall:
    call_id: str
    name: str
    arguments: str


@attrs.frozen
class StepFinished:
    """The last event of a successful step.

    `finish_reason` is passed through as sent ("stop", "length", "tool_calls",
    "content_filter", ...), except that "stop" with assembled tool calls is
    reported as "tool_calls".
    """

    finish_reason: str
    usage: TokenUsage | None
    tool_calls: tuple[ToolCall, ...]
    refusal: str | None
    response_id: str | None
    model: str | None


ProviderEvent = TextDelta | ReasoningDelta | ToolCallStarted | ToolCallArguments | StepFinished


@attrs.frozen
class RetryNotice:
    """Sent to `on_retry` before waiting to retry. `attempt` is the 1-based number of
    the attempt that failed (so 1 on the first retry); `next_retry_at_ms` is the Unix
    time in milliseconds at which the next attempt starts."""

    attempt: int
    next_retry_at_ms: int
    error: ProviderError
