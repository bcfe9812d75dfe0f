"""What the terminal shows of a run: the answer as it streams, tool calls one line each,
notices and errors on stderr."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from typing import Any, TextIO

# Lines of a tool's output shown under it (the model gets all of it).
PREVIEW_LINES = 8


class Renderer:
    """Prints a run's notifications: text as it streams (stdout), tools one line each
    (stdout), notices and errors (stderr). A closed stdout calls `on_closed` once."""

    def __init__(self, out: TextIO | None, err: TextIO | None) -> None:
        self.out = out
        self.err = err
        self.tty = out is not None and out.isatty()
        self.closed = False
        self.on_closed: Callable[[], None] = lambda: None
        self.kinds: dict[str, str] = {}
        self.last_kind: str | None = None
        self.tool_status: dict[str, str] = {}
        self.tool_labels: dict[str, str] = {}
        self.user_messages: set[str] = set()
        self.at_line_start = True

    def _dim(self, text: str) -> str:
        if not self.tty:
            return text
        body = text.rstrip("\n")
        return f"\x1b[2m{body}\x1b[0m" + text[len(body) :] if body else text

    def write(self, text: str) -> None:
        if self.closed or not text:
            return
        if self.out is None:  # no stdout at all (`agentd chat >&-`)
            self._output_closed()
            return
        try:
            self.out.write(text)
            self.out.flush()
        except (OSError, ValueError):
            # EPIPE (the reader is gone: `| head`), EIO (the terminal hung up), a closed
            # file: nobody reads the answer any more.
            self._output_closed()
        else:
            self.at_line_start = text.endswith("\n")

    def _output_closed(self) -> None:
        self.closed = True
        # What is still buffered would fail again when Python flushes at exit (and print
        # "Exception ignored ... BrokenPipeError"): stdout now writes to /dev/null.
        if self.out is not None:
            with contextlib.suppress(OSError, ValueError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self.out.fileno())
                os.close(devnull)
        self.on_closed()

    def notice(self, text: str) -> None:
        """A line on stderr."""
        self._to_stderr(text.rstrip("\n") + "\n")

    def ask(self, question: str) -> None:
        """A question on stderr, like `rm -i`: seen even when stdout goes to a file."""
        self._to_stderr(question)

    def _to_stderr(self, text: str) -> None:
        # After what stdout shows so far, on a line of its own (they share a terminal).
        if not self.at_line_start:
            self.write("\n")
        if self.err is None:
            return
        with contextlib.suppress(OSError, ValueError):
            self.err.write(text)
            self.err.flush()

    def notify(self, method: str, params: dict[str, Any]) -> None:
        if method == "message/updated" and params["message"]["role"] == "user":
            self.user_messages.add(params["message"]["id"])
        elif method == "part/updated" and params["messageId"] not in self.user_messages:
            self.part(params["part"])
        elif method == "part/delta" and params["messageId"] not in self.user_messages:
            kind = self.kinds.get(params["partId"], "text")
            self.write(self._dim(params["delta"]) if kind == "reasoning" else params["delta"])
        elif method == "session/status" and params.get("status") == "retry":
            wait = max(0, (params.get("nextRetryAt", 0) - time.time() * 1000) / 1000)
            self.notice(
                f"[retrying: {params.get('message', '')}; attempt "
                f"{params.get('attempt')} in {wait:.1f}s]"
            )

    def part(self, part: dict[str, Any]) -> None:
        kind = part["type"]
        if kind in ("text", "reasoning"):
            if part["id"] not in self.kinds:
                self.kinds[part["id"]] = kind
                if self.last_kind is not None and self.last_kind != kind:
                    self.write("\n")
                if kind == "reasoning":
                    self.write(self._dim("(thinking) "))
                self.last_kind = kind
        elif kind == "tool":
            state = part["state"]
            status = state["status"]
            if self.tool_status.get(part["id"]) == status or status == "pending":
                return
            self.tool_status[part["id"]] = status
            # One label per call, from the first status shown: a tool's completed title
            # (the path it listed, say) is not its name.
            label = self.tool_labels.setdefault(part["id"], state.get("title") or part["tool"])
            if not self.at_line_start:
                self.write("\n")
            if status == "running":
                self.write(self._dim(f"[tool {label}] running...\n"))
            elif status == "completed":
                output = state.get("output", "").rstrip("\n").split("\n")
                shown = "".join(f"  {line[:120]}\n" for line in output[:PREVIEW_LINES])
                more = len(output) - PREVIEW_LINES
                rest = f"  ... {more} more lines\n" if more > 0 else ""
                self.write(self._dim(f"[tool {label}] done\n{shown}{rest}"))
            elif status == "error":
                self.write(self._dim(f"[tool {label}] failed: {state.get('error')}\n"))
            self.last_kind = "tool"

    def finish(self, message: dict[str, Any] | None) -> None:
        """The end of an answer: its error or stop reason (stderr), its usage."""
        if not self.at_line_start:
            self.write("\n")
        message = message or {}
        reason = message.get("finishReason")
        if message.get("error"):
            err = message["error"]
            self.notice(f"error: {err.get('name')}: {err.get('message')}")
        elif message == {} or reason == "aborted":
            self.notice("[stopped]")
        elif reason not in (None, "stop"):
            self.notice(f"[finished: {reason}]")
        usage = message.get("usage") or {}
        tokens_in, tokens_out = usage.get("inputTokens", 0), usage.get("outputTokens", 0)
        # An answer stopped before the model reported usage has none: no line of zeros.
        if self.tty and (tokens_in or tokens_out):
            cost = message.get("cost") or 0
            self.write(self._dim(f"[{tokens_in} in, {tokens_out} out, ${cost:.4f}]\n"))
        self.kinds.clear()
        self.last_kind = None
