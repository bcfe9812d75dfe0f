"""Secrets out of logs.

Every secret agentd receives is registered here before anything can log it, and every
log handler agentd installs formats records through `RedactingFormatter`, which masks
the registered values in the whole formatted record: the message and its arguments, the
exception text and traceback (`exc_info`, `logger.exception`), and `stack_info`.
Uncaught exceptions (main thread, other threads, "exception ignored" reports) are routed
through logging too (`route_uncaught_exceptions`), so their tracebacks are masked the
same way instead of reaching stderr raw.

What is registered, and where:
- provider API keys from the environment (`OPENAI_API_KEY`, `api_key_env`) and the file,
  provider header values (agentd.config, as the file is read);
- MCP servers' `env` and `headers` values from the configuration file, and what `${VAR}`
  references in them expand to (agentd.config);
- `accessToken` and MCP servers' `env` and `headers` values arriving in `session/create`
  and `session/update` (the server, from the raw params, before they are parsed);
- the values of agentd's own environment variables whose names say they are credentials
  (`is_secret_name`: the ones the bash tool withholds from commands).

The rule for short values: a value shorter than `MIN_CHARS` (6) characters is not
registered. Masking every occurrence of "abc" or "1" would garble every log line that
happens to contain it, and a value that short is not a credential worth the name (it
falls to guessing); agentd still never logs a secret on purpose.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections.abc import Mapping
from types import TracebackType
from typing import Any

MIN_CHARS = 6
MASK = "[redacted]"
# New secrets matched one by one before the pattern is recompiled to include them.
PENDING_MAX = 32
_SECRET_SUFFIXES = ("_API_KEY", "_TOKEN", "_SECRET")
# "Bearer <token>", "Basic <credentials>": the credential alone is masked too.
_AUTH_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*\s+(\S.*)$")


def is_secret_name(name: str) -> bool:
    """An environment variable whose name says it holds a credential."""
    upper = name.upper()
    return upper == "OPENAI_API_KEY" or upper.endswith(_SECRET_SUFFIXES) or "PASSWORD" in upper


def _forms(value: str) -> set[str]:
    """The value, the credential of an `<scheme> <credential>` header value, and each as
    `%r` and JSON would escape it (a log line may show either)."""
    forms = {value}
    match = _AUTH_SCHEME.match(value)
    if match:
        forms.add(match.group(1))
    for form in list(forms):
        forms.add(repr(form)[1:-1])
        forms.add(json.dumps(form)[1:-1])
        forms.add(json.dumps(form, ensure_ascii=False)[1:-1])
    return {f for f in forms if len(f) >= MIN_CHARS}


_CUT_MARKER = re.compile(r"\.\.\.|…")


def _longest_head(value: str, text: str, end: int) -> int:
    """The longest head of `value` (MIN_CHARS or more) that `text` has just before `end`."""
    for k in range(min(len(value), end), MIN_CHARS - 1, -1):
        if text.startswith(value[:k], end - k):
            return k
    return 0


def _longest_tail(value: str, text: str, start: int) -> int:
    """The longest tail of `value` (MIN_CHARS or more) that `text` has from `start` on."""
    for k in range(min(len(value), len(text) - start), MIN_CHARS - 1, -1):
        if text.startswith(value[-k:], start):
            return k
    return 0


class SecretRegistry:
    """The registered secrets, and how they are found in a text.

    Registration happens on the event loop, masking in whatever thread logs. Finding
    many strings at once is one compiled pattern (under a microsecond a line even with
    thousands of secrets), but compiling it grows with their number (about 80 ms for a
    thousand): so new secrets are first matched one by one (`_pending`), and the pattern
    is recompiled in a thread of its own once enough of them wait. Everything a reader
    uses is immutable and swapped whole."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: frozenset[str] = frozenset()
        self._pattern: re.Pattern[str] | None = None
        self._pending: tuple[str, ...] = ()
        self._compiling = False

    def register(self, *values: str | None) -> None:
        new: set[str] = set()
        for value in values:
            if isinstance(value, str) and len(value) >= MIN_CHARS and value not in self._values:
                new |= _forms(value)
        with self._lock:
            new -= self._values
            if not new:
                return
            self._values = self._values | new
            self._pending = self._pending + tuple(new)
            start = len(self._pending) >= PENDING_MAX and not self._compiling
            self._compiling = self._compiling or start
        if start:
            threading.Thread(target=self._compile, name="agentd-redaction", daemon=True).start()

    def compile(self) -> None:
        """Match every registered secret through the pattern (done in the background as
        secrets accumulate; directly by tests)."""
        while True:
            values = self._values
            ordered = sorted(values, key=len, reverse=True)
            pattern = re.compile("|".join(re.escape(v) for v in ordered))
            with self._lock:
                self._pattern = pattern
                self._pending = tuple(v for v in self._pending if v not in values)
                if len(self._pending) < PENDING_MAX:
                    return

    def _compile(self) -> None:
        try:
            self.compile()
        finally:
            with self._lock:
                self._compiling = False

    def holds_secret(self, value: str) -> bool:
        """The value contains a registered secret (a variable `${VAR}` made a header)."""
        return self.redact(value) != value

    def register_environment(self, environ: Mapping[str, str]) -> None:
        self.register(*(value for name, value in environ.items() if is_secret_name(name)))

    def redact(self, text: str) -> str:
        values, pattern, pending = self._values, self._pattern, self._pending
        if not values:
            return text
        spans: list[tuple[int, int]] = []
        if pattern is not None:
            # Every start position, not only non-overlapping matches: two secrets that
            # overlap are both masked whole.
            match = pattern.search(text)
            while match is not None:
                spans.append(match.span())
                match = pattern.search(text, match.start() + 1)
        for value in pending:
            at = text.find(value)
            while at >= 0:
                spans.append((at, at + len(value)))
                at = text.find(value, at + 1)
        if "..." in text or "…" in text:
            spans += _cut_ends(text, values)
        if not spans:
            return text
        out, last = [], 0
        for start, end in _merged(spans):
            out += [text[last:start], MASK]
            last = end
        out.append(text[last:])
        return "".join(out)

    def __len__(self) -> int:
        return len(self._values)


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def _cut_ends(text: str, values: frozenset[str]) -> list[tuple[int, int]]:
    """Truncation leaves part of a secret beside its marker: pydantic's
    `input_value='abc...xyz'`, a line cut with "…". A secret's head just before a
    marker, or its tail just after one, is masked too (MIN_CHARS of it or more)."""
    spans: list[tuple[int, int]] = []
    for marker in _CUT_MARKER.finditer(text):
        start, end = marker.span()
        before, after = text[max(0, start - MIN_CHARS) : start], text[end : end + MIN_CHARS]
        for value in values:
            if len(before) == MIN_CHARS and before in value:
                k = _longest_head(value, text, start)
                if k:
                    spans.append((start - k, start))
            if len(after) == MIN_CHARS and after in value:
                k = _longest_tail(value, text, end)
                if k:
                    spans.append((end, end + k))
    return spans


REGISTRY = SecretRegistry()


def register(*values: str | None) -> None:
    """Mask these values in every log line from now on (see the module doc for which)."""
    REGISTRY.register(*values)


def holds_secret(value: str) -> bool:
    return REGISTRY.holds_secret(value)


def redact(text: str) -> str:
    return REGISTRY.redact(text)


class RedactingFormatter(logging.Formatter):
    """Masks registered secrets in everything a record formats to: message, arguments,
    exception text, traceback and stack info alike."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


_log = logging.getLogger("agentd")


def route_uncaught_exceptions() -> None:
    """Tracebacks Python would print to stderr itself go through logging (and so through
    the redacting formatter) instead."""

    def excepthook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, exc, tb)
            return
        _log.critical("uncaught exception", exc_info=(kind, exc, tb))

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread is not None else "?"
        _log.error(
            "uncaught exception in thread %s",
            name,
            exc_info=(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback),
        )

    def unraisable_hook(args: Any) -> None:
        message = args.err_msg or "exception ignored"
        _log.error(
            "%s: %r",
            message,
            args.object,
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback)
            if args.exc_value is not None
            else None,
        )

    sys.excepthook = excepthook
    threading.excepthook = thread_hook
    sys.unraisablehook = unraisable_hook
    logging.captureWarnings(True)
