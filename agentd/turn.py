"""One run: the model loop.

`run_turn` appends the user message, sends history + system prompt + tool specs to the
model, streams the answer into parts, runs the tool calls, feeds the results back, and
repeats until the model stops or the step limit. Abort is task cancellation: the loop
catches it, closes what is open, and the message ends as `aborted` with everything
streamed so far.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs

from agentd import ids, model_events
from agentd.config import Config, ModelConfig
from agentd.errors import ProviderError
from agentd.history import step_messages, to_chat_messages
from agentd.protocol import types as t
from agentd.protocol.converter import structure, unstructure
from agentd.run_stream import RunStream
from agentd.storage.recovery import close_part

if TYPE_CHECKING:
    from agentd.provider import ChatProvider
    from agentd.snapshots import StepSnapshots
    from agentd.tool_calls import ToolRunner

logger = logging.getLogger(__name__)

DEFAULT_MAX_STEPS = 25
# Text and reasoning parts a step opens before it stops opening new ones on every switch
# of kind (a model alternating reasoning and text token by token).
MAX_TEXT_PARTS_PER_STEP = 64
DEFAULT_SYSTEM_PROMPT = (
    "You are a coding assistant working inside the user's editor. Be concise. Use the "
    "tools you are given to read and change the user's workspace when that helps; paths "
    "are relative to the workspace root."
)

FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content-filter",
    "tool_calls": "tool-calls",
    "function_call": "tool-calls",
}


@attrs.define
class TurnInput:
    session_id: str
    run_id: str
    params: t.SessionChatParams
    model: ModelConfig
    history: list[dict[str, Any]]  # OpenAI chat messages for everything before this run
    user_message: t.Message
    # The instruction files the system prompt holds (recorded on the assistant message).
    instructions: list[t.InstructionFile] | None = None


def step_cost(model: ModelConfig, usage: t.Usage) -> Decimal:
    cached = usage.cache_read_tokens
    uncached = max(usage.input_tokens - cached, 0)
    read_price = model.cache_read_price if model.cache_read_price is not None else model.input_price
    write_price = model.cache_write_price if model.cache_write_price is not None else Decimal(0)
    total = (
        uncached * model.input_price
        + cached * read_price
        + usage.cache_write_tokens * write_price
        + usage.output_tokens * model.output_price
    )
    return total / Decimal(1_000_000)


def usage_from_provider(u: model_events.TokenUsage | None) -> t.Usage:
    if u is None:
        return t.Usage()
    return t.Usage(*attrs.astuple(u))  # the same five counts, in the same order


class Turn:
    """State of one run's assistant message while it streams."""

    def __init__(
        self,
        inp: TurnInput,
        stream: RunStream,
        provider: ChatProvider,
        tools: ToolRunner,
        config: Config,
        *,
        on_retry: Callable[[model_events.RetryNotice], None],
        on_resume: Callable[[], None],
        on_overflow: Callable[[], Awaitable[list[dict[str, Any]] | None]],
        snapshots: StepSnapshots | None = None,
    ) -> None:
        self.inp = inp
        self.stream = stream
        self.provider = provider
        self.tools = tools
        self.config = config
        self._on_retry = on_retry
        self._on_resume = on_resume
        # Compacts the session and returns the history to retry with (None: cannot).
        self._on_overflow = on_overflow
        # Snapshots of the workspace around steps whose tools may change files (what
        # session/revert restores from); None when the run offers no such tool.
        self._snapshots = snapshots
        self._retrying = False
        now = ids.now_ms()
        self.message = t.Message(
            id=ids.new_id("msg"),
            session_id=inp.session_id,
            role="assistant",
            time=t.MessageTime(created=now),
            run_id=inp.run_id,
            parent_id=inp.user_message.id,
            model=inp.model.id,
            usage=t.Usage(),
            cost=0.0,
            instructions=inp.instructions,
        )
        self.cost = Decimal(0)
        self._open_text: t.TextPart | t.ReasoningPart | None = None
        # Deltas of open parts not yet joined into their `text`, by part: appending to a
        # str attribute copies the whole text per delta (quadratic in a long answer).
        self._open_chunks: dict[str, tuple[t.TextPart | t.ReasoningPart, list[str]]] = {}
        # Text and reasoning parts left open while the other kind streams (past the cap).
        self._parked: dict[type, t.TextPart | t.ReasoningPart] = {}
        self._text_parts_in_step = 0

    # --- parts -------------------------------------------------------------------------

    def add_part(self, part: t.Part) -> None:
        self.message.parts.append(part)
        self.stream.part(self.message.id, part)

    def update_part(self, part: t.Part) -> None:
        self.stream.part(self.message.id, part)

    def _publish_tool(self, part: t.ToolPart, persist: bool) -> None:
        self.stream.part(self.message.id, part, persist=persist)

    def _stream_text(self, kind: type[t.TextPart] | type[t.ReasoningPart], text: str) -> None:
        part = self._open_text
        if part is None or type(part) is not kind:
            if self._text_parts_in_step < MAX_TEXT_PARTS_PER_STEP:
                self.close_text()
                part = self._new_text_part(kind)
            else:
                # A model that keeps switching between reasoning and text: from here on
                # the step keeps one open part of each kind and switches between them,
                # so parts (and what they cost) grow with the text, not with the tokens.
                if part is not None:
                    self._parked[type(part)] = part
                part = self._parked.pop(kind, None) or self._new_text_part(kind)
                self._open_text = part
        chunks = self._open_chunks.get(part.id)
        if chunks is None:
            self._open_chunks[part.id] = (part, [text])
        else:
            chunks[1].append(text)
        self.stream.delta(self.message.id, part.id, text)

    def _new_text_part(
        self, kind: type[t.TextPart] | type[t.ReasoningPart]
    ) -> t.TextPart | t.ReasoningPart:
        part = kind(id=ids.new_id("prt"), text="", time=t.PartTime(start=ids.now_ms()))
        self._open_text = part
        self._text_parts_in_step += 1
        # Logged empty now; its text is checkpointed as deltas and written whole at its end.
        self.add_part(part)
        return part

    def _join_open_text(self) -> None:
        for part, chunks in self._open_chunks.values():
            part.text = "".join([part.text, *chunks])
        self._open_chunks = {}

    def snapshot(self) -> t.Message:
        """The message as it stands, open text included (for readers during the run)."""
        self._join_open_text()
        return self.message

    def close_text(self) -> None:
        self._join_open_text()
        part, self._open_text = self._open_text, None
        parked, self._parked = self._parked, {}
        for open_part in (*parked.values(), part):
            if open_part is not None:
                open_part.time.end = ids.now_ms()
                self.update_part(open_part)

    # --- the loop ----------------------------------------------------------------------

    async def run(self, *, aborted: bool = False) -> t.Message:
        inp = self.inp
        self.stream.message(self.message)
        max_steps = inp.params.max_steps or DEFAULT_MAX_STEPS
        messages = list(inp.history)
        finish: str | None = "aborted" if aborted else None
        compacted = False
        try:
            if not aborted:
                # Starts the MCP servers the run may use (bounded by their startup
                # timeouts); an abort meanwhile ends the run like any other.
                await self.tools.prepare()
            step = 0
            while step < max_steps and not aborted:
                try:
                    calls = await self.step(messages)
                except ProviderError as exc:
                    # A context overflow on the first call: compact once and retry.
                    if exc.name != "ContextOverflow" or compacted or step > 0:
                        raise
                    compacted = True
                    history = await self._on_overflow()
                    if history is None:
                        raise
                    messages = history
                    continue
                step += 1
                if calls is None:
                    finish = self.message.finish_reason or "stop"
                    break
            else:
                finish = finish or "tool-calls"
        except asyncio.CancelledError:
            finish = "aborted"
            self._abandon_open_parts("aborted")
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        except ProviderError as exc:
            finish = "error"
            self.message.error = t.ErrorInfo(**exc.to_wire())
            self._abandon_open_parts("interrupted by a provider error")
        self.message.finish_reason = finish  # type: ignore[assignment]
        self.message.time.completed = ids.now_ms()
        self.message.cost = float(self.cost)
        self.stream.message(self.message)
        if self.message.error is not None:
            self.stream.error(self.message.error)
        return self.message

    def _retry(self, notice: model_events.RetryNotice) -> None:
        self._retrying = True
        self._on_retry(notice)

    async def step(self, messages: list[dict[str, Any]]) -> list[t.ToolPart] | None:
        """One model call and its tool calls. Returns the tool parts when the model asked
        for tools (the loop goes on), None when it stopped."""
        step_id = ids.new_id("prt")
        self.add_part(t.StepStartPart(id=step_id))
        self._text_parts_in_step = 0
        step_usage = t.Usage()
        reason = "stop"
        calls: dict[int, dict[str, Any]] = {}
        try:
            events = self.provider.stream_chat(
                model=self.inp.model.upstream,
                messages=messages,
                tools=self.tools.openai_specs() or None,
                max_tokens=self.inp.model.max_output_tokens,
                on_retry=self._retry,
            )
            try:
                async for ev in events:
                    if self._retrying:
                        self._retrying = False
                        self._on_resume()
                    match ev:
                        case model_events.TextDelta(text=text):
                            self._stream_text(t.TextPart, text)
                        case model_events.ReasoningDelta(text=text):
                            self._stream_text(t.ReasoningPart, text)
                        case model_events.ToolCallStarted(index=index, call_id=call_id, name=name):
                            self.close_text()
                            part = t.ToolPart(
                                id=ids.new_id("prt"),
                                call_id=call_id,
                                tool=name,
                                state=t.ToolStatePending(input={}),
                            )
                            calls[index] = {"part": part, "args": []}
                            self.add_part(part)
                        case model_events.ToolCallArguments(index=index, delta=delta):
                            if index in calls:
                                calls[index]["args"].append(delta)
                        case model_events.StepFinished():
                            step_usage = usage_from_provider(ev.usage)
                            reason = FINISH_REASONS.get(
                                ev.finish_reason, ev.finish_reason or "stop"
                            )
                            if ev.refusal and not self._step_text():
                                self._stream_text(t.TextPart, ev.refusal)
                            self._reconcile_calls(calls, ev.tool_calls)
            finally:
                await events.aclose()
        except BaseException as exc:
            self.close_text()
            label = "aborted" if isinstance(exc, asyncio.CancelledError) else "error"
            self._finish_step(label, step_usage)
            raise
        self.close_text()
        self._finish_step(reason, step_usage)
        if reason in ("length", "content-filter"):
            self.message.finish_reason = reason  # type: ignore[assignment]
        tool_parts = [c["part"] for _, c in sorted(calls.items())]
        if not tool_parts:
            return None
        # Each call runs in call order; then the step goes into the history as the
        # model will see it in every later request.
        ordered = [call for _, call in sorted(calls.items())]
        snapshots = self._snapshots
        if snapshots is not None and not any(
            self.tools.may_change_files(call["part"].tool) for call in ordered
        ):
            snapshots = None
        if snapshots is not None:
            await snapshots.before(step_id, self.message.id)
        try:
            for call in ordered:
                await self.tools.run(
                    call["part"],
                    "".join(call["args"]),
                    message_id=self.message.id,
                    publish=self._publish_tool,
                )
        finally:
            if snapshots is not None:
                # Aborted too: what the tools did until then is theirs, not the user's.
                await asyncio.shield(snapshots.after(step_id))
        messages += step_messages(
            "".join(p.text for p in self._step_text()),
            [unstructure(call["part"]) for call in ordered],
        )
        return tool_parts

    def _reconcile_calls(
        self, calls: dict[int, dict[str, Any]], assembled: tuple[model_events.ToolCall, ...]
    ) -> None:
        """Use the provider's assembled calls as the authority for ids, names and args."""
        for index, call in enumerate(assembled or ()):
            entry = calls.get(index)
            if entry is None:
                part = t.ToolPart(
                    id=ids.new_id("prt"),
                    call_id=call.call_id,
                    tool=call.name,
                    state=t.ToolStatePending(input={}),
                )
                calls[index] = {"part": part, "args": [call.arguments]}
                self.add_part(part)
            else:
                entry["args"] = [call.arguments]

    def _step_text(self) -> list[t.TextPart]:
        out: list[t.TextPart] = []
        for part in reversed(self.message.parts):
            if isinstance(part, t.StepStartPart):
                break
            if isinstance(part, t.TextPart):
                out.append(part)
        return list(reversed(out))

    def _finish_step(self, reason: str, usage: t.Usage) -> None:
        cost = step_cost(self.inp.model, usage)
        self.cost += cost
        assert self.message.usage is not None
        self.message.usage = self.message.usage + usage
        self.message.cost = float(self.cost)
        self.add_part(
            t.StepFinishPart(id=ids.new_id("prt"), reason=reason, usage=usage, cost=float(cost))
        )

    def _abandon_open_parts(self, why: str) -> None:
        """Unfinished tool parts become errors; open text is closed as it stands (the
        same closing recovery applies to a run whose daemon died)."""
        self.close_text()
        now = ids.now_ms()
        for part in self.message.parts:
            if isinstance(part, t.ToolPart):
                closed = close_part(unstructure(part), now, why)
                if closed is not None:
                    part.state = structure(closed, t.ToolPart).state
                    self.update_part(part)


__all__ = ["Turn", "TurnInput", "to_chat_messages"]
