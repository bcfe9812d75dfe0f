"""LSP base-protocol framing, without I/O: bytes go in, JSON messages and framing errors
come out. The server feeds it what stdin delivers, `agentd chat` what the daemon's stdout
delivers; tests and fuzzers feed it directly. `encode` frames a body for sending.

What it reads: `Content-Length: <n>` (name in any case, `:` and spaces or tabs around the
value), other header lines (ignored), a blank line (`\\r\\n` or `\\n`), then `n` bytes of
JSON. What it does with anything else:

- Bytes that are not a frame (junk) are skipped up to the next `content-length` text,
  wherever it starts, even in the middle of a line or glued to the junk. One `-32700` is
  reported for a stretch of junk, when the next frame arrives (none when the stretch is
  only whitespace, or only header lines such as `Content-Type: ...` before the
  `Content-Length` one, or when the error of a rejected frame already covered it).
- A malformed header (value not decimal digits, no `:`, no blank line within
  `MAX_HEADER_BYTES`, end of input) is `-32700`; the search resumes right after the
  `content-length` text that started it, so a header glued behind it is still found.
- A header line that contains `content-length` restarts the header block there: with
  several `Content-Length` lines the last one counts.
- A body that is not JSON is `-32700`. When it is shorter than announced it swallows the
  start of the next frame; the next frame is found anyway, because a well-formed
  `Content-Length` line (`_LINE_RE`) can never occur inside a valid JSON body: the text
  `content-length` can only sit inside a JSON string, and a JSON string holds no raw
  newline, `"` or `\\` between that text and the line's end. So when such a line starts
  inside an announced body, the body is short: it is answered `-32700` at once (without
  waiting for the announced bytes, which may never come) and reading resumes at the line.
  A valid frame is never cut this way, whatever its strings contain.
- A body over `max_frame_bytes` is `-32600` as soon as its header is read; its bytes are
  discarded as they arrive (never buffered), with the same resynchronisation.
- An empty body (`Content-Length: 0`) is `-32700`.

Memory is bounded: junk keeps at most `JUNK_WINDOW` bytes, a header block at most
`MAX_HEADER_BYTES`, a body at most `max_frame_bytes`, a discarded body a few bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
DEFAULT_MAX_FRAME_BYTES = 32 * 1024 * 1024
# A header block longer than this (from `Content-Length` to its blank line) is malformed.
MAX_HEADER_BYTES = 8192
# Junk with no `content-length` in it is dropped past this many bytes.
JUNK_WINDOW = 4096

_TOKEN = b"content-length"
_TOKEN_LEN = len(_TOKEN)
_CANONICAL = re.compile(rb"Content-Length: ([0-9]{1,12})\r\n\r\n")
# A well-formed Content-Length line. Bounded so that it can be searched for in a stream
# with a fixed overlap between reads; a longer one is still read as a header, it just does
# not resynchronise from inside a body.
_LINE_RE = re.compile(rb"content-length[ \t]{0,16}:[ \t]{0,16}[0-9]{1,20}[ \t]{0,16}\r?\n", re.I)
_LINE_MAX = _TOKEN_LEN + 16 + 1 + 16 + 20 + 16 + 2
# The same, searched for in lowercased bytes (a case-sensitive search is several times
# faster).
_LINE_LOW_RE = re.compile(_LINE_RE.pattern)
# What a well-formed line looks like while its end has not arrived yet.
_LINE_PREFIX_RE = re.compile(
    rb"content-length[ \t]{0,16}(?::[ \t]{0,16}(?:[0-9]{1,20}[ \t]{0,16}\r?)?)?", re.I
)
_COLON_RE = re.compile(rb"[ \t]*:")
# Complete header lines (`Name: value`) and blank lines: not junk before a Content-Length.
_HEADER_LINES_RE = re.compile(
    rb"(?:[ \t]*[!#$%&'*+.^_`|~0-9A-Za-z-]+[ \t]*:[^\r\n]*\r?\n|[ \t\r]*\n)*"
)


def parse_json(data: bytes) -> Any:
    """A frame's body as JSON. Beyond strict JSON (orjson), what Python's json module
    reads is accepted too (`NaN`, `Infinity`, a lone surrogate escape such as
    `"\\ud800"`): the message then reaches dispatch with its id, and what cannot be
    stored is refused there as -32602, naming the field, rather than as a -32700 the
    editor cannot match to its request. Raises ValueError."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        try:
            return json.loads(data)
        except RecursionError as exc:
            raise ValueError(str(exc)) from exc
        # (json's own errors, UnicodeDecodeError included, are ValueErrors)


def encode(body: bytes) -> bytes:
    """A JSON body framed for the wire: the one header agentd writes, then the body."""
    return b"Content-Length: %d\r\n\r\n%s" % (len(body), body)


@dataclass(frozen=True, slots=True)
class Frame:
    """A frame whose body is JSON: the parsed value and the body's size in bytes."""

    message: Any
    size: int


@dataclass(frozen=True, slots=True)
class FramingError:
    """Bytes that are not a frame: answer `code` with id null."""

    code: int
    message: str


Event = Frame | FramingError

_SCAN, _HEADERS, _BODY, _DISCARD, _DONE = range(5)


class FrameParser:
    """Feed it bytes (`feed`), then `feed_eof` once; each returns the events completed."""

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()
        self._pos = 0  # start of the unconsumed bytes in _buf
        # _buf lowercased, as far as searches have needed it: each byte is lowered once.
        self._low = bytearray()
        self._state = _SCAN
        # _HEADERS: where the next header line starts, and the length read so far.
        self._line_at = 0
        self._length: int | None = None
        # _BODY / _DISCARD: the announced end (absolute in _buf), searched-up-to mark.
        self._end = 0
        self._searched = 0
        # Junk skipped since the last event, and whether an error already covers it.
        self._junk = 0
        self._quiet = False

    @property
    def buffered(self) -> int:
        """Bytes held, waiting for the rest of a frame."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> list[Event]:
        if self._state == _DONE:
            return []
        if data:
            self._buf += data
        out: list[Event] = []
        while self._step(out):
            pass
        if self._pos:
            # Drop consumed bytes (and shift the absolute offsets) once per feed.
            pos = self._pos
            del self._buf[:pos]
            del self._low[:pos]
            self._pos = 0
            self._line_at -= pos
            self._end -= pos
            self._searched -= pos
        return out

    def feed_eof(self) -> list[Event]:
        """End of input: report what was left incomplete. The parser takes no more."""
        out = self.feed(b"")
        state, self._state = self._state, _DONE
        rest = bytes(self._buf[self._pos :])
        if state == _SCAN:
            if rest.strip() and not _HEADER_LINES_RE.fullmatch(rest):
                self._junk += len(rest)
            self._report_junk(out)
        elif state == _HEADERS:
            self._error(out, PARSE_ERROR, "end of input inside a frame header", header=True)
        elif state == _BODY:
            length = self._length or 0
            got = len(self._buf) - (self._end - length)
            self._error(
                out, PARSE_ERROR, f"end of input inside a frame body ({got} of {length} bytes)"
            )
        self._buf = bytearray()
        self._low = bytearray()
        self._pos = 0
        return out

    # --- events ------------------------------------------------------------------------

    def _report_junk(self, out: list[Event]) -> None:
        if self._junk and not self._quiet:
            out.append(
                FramingError(
                    PARSE_ERROR, f"skipped {self._junk} bytes that are not a frame before this"
                )
            )
        self._junk = 0

    def _error(self, out: list[Event], code: int, message: str, *, header: bool = False) -> None:
        # This error stands for the junk before it too, and for the junk that follows it
        # up to the next good frame, malformed headers included: a flood of them gets one
        # error. A rejected body always gets its own.
        self._junk = 0
        if header and self._quiet:
            return
        self._quiet = True
        out.append(FramingError(code, message))

    def _frame(self, out: list[Event], message: Any, size: int) -> None:
        self._report_junk(out)
        self._quiet = False
        out.append(Frame(message, size))

    # --- states ------------------------------------------------------------------------

    def _step(self, out: list[Event]) -> bool:
        state = self._state
        if state == _SCAN:
            return self._scan(out)
        if state == _HEADERS:
            return self._headers(out)
        if state == _BODY:
            return self._body(out)
        if state == _DISCARD:
            return self._discard(out)
        return False

    def _skip(self, upto: int) -> None:
        """Consume _buf[_pos:upto] as bytes between frames."""
        region = self._buf[self._pos : upto]
        if region.strip() and not _HEADER_LINES_RE.fullmatch(region):
            self._junk += len(region)
        self._pos = upto

    def _lowered(self, upto: int) -> bytearray:
        low = self._low
        if len(low) < upto:
            low += self._buf[len(low) : upto].lower()
        return low

    def _tokens(self, start: int, end: int) -> Iterator[int]:
        """Offsets of each `content-length` (any case) that starts in _buf[start:end] and
        has arrived whole."""
        stop = min(len(self._buf), end + _TOKEN_LEN - 1)
        low = self._lowered(stop)
        idx = low.find(_TOKEN, start, stop)
        while idx >= 0:
            yield idx
            idx = low.find(_TOKEN, idx + 1, stop)

    def _scan(self, out: list[Event]) -> bool:
        buf, pos = self._buf, self._pos
        if pos == len(buf):
            return False
        m = _CANONICAL.match(buf, pos)
        if m is not None:
            self._pos = m.end()
            self._begin_body(out, int(m.group(1)))
            return True
        t = next(self._tokens(pos, len(buf)), -1)
        if t < 0:
            # Keep what may be the start of a header; past the window, the rest is junk.
            if len(buf) - pos > JUNK_WINDOW:
                keep = len(buf) - (_TOKEN_LEN - 1)
                region = buf[pos:keep]
                if region.strip():
                    self._junk += len(region)
                self._pos = keep
            return False
        self._skip(t)
        self._state = _HEADERS
        self._length = None
        self._line_at = t
        return True

    def _restart_scan(self, at: int) -> None:
        self._state = _SCAN
        self._pos = at

    def _headers(self, out: list[Event]) -> bool:
        buf, start = self._buf, self._pos
        limit = start + MAX_HEADER_BYTES
        while True:
            at = self._line_at
            nl = buf.find(b"\n", at, min(len(buf), limit))
            if nl < 0:
                if len(buf) < limit:
                    return False  # wait for the rest of the line
                self._error(out, PARSE_ERROR, "frame header too long (no blank line)", header=True)
                self._restart_scan(start + _TOKEN_LEN)
                return True
            line = bytes(buf[at : nl + 1])
            if at == start:
                # The Content-Length line itself.
                colon = _COLON_RE.match(line, _TOKEN_LEN)
                if colon is None:
                    # `content-length` not followed by `:` is not a header: junk.
                    self._junk += _TOKEN_LEN
                    self._restart_scan(start + _TOKEN_LEN)
                    return True
                value = line[colon.end() :].strip()
                if not value.isdigit():
                    shown = value[:40].decode("utf-8", "replace")
                    self._error(
                        out, PARSE_ERROR, f"invalid Content-Length header: {shown!r}", header=True
                    )
                    self._restart_scan(start + _TOKEN_LEN)
                    return True
                # Beyond 18 digits it is over any limit; int() of huge digit runs is slow.
                self._length = int(value) if len(value) <= 18 else 10**18
                self._line_at = nl + 1
                continue
            if not line.strip():
                self._pos = nl + 1
                assert self._length is not None
                self._begin_body(out, self._length)
                return True
            t = self._lowered(nl + 1).find(_TOKEN, at, nl + 1) - at
            if t >= 0:
                # Another Content-Length: the block restarts there. What came before it is
                # junk unless it was header lines (a repeated Content-Length line is).
                self._skip(at + t)
                self._line_at = at + t
                return True
            self._line_at = nl + 1  # another header (Content-Type...): ignored

    def _begin_body(self, out: list[Event], length: int) -> None:
        self._length = length
        self._end = self._pos + length
        self._searched = self._pos
        if length > self.max_frame_bytes:
            self._error(
                out,
                INVALID_REQUEST,
                f"frame of {length} bytes exceeds the limit of {self.max_frame_bytes}",
            )
            self._state = _DISCARD
        elif length == 0:
            self._error(out, PARSE_ERROR, "empty frame body")
            self._state = _SCAN
        else:
            self._state = _BODY

    def _line_in_body(self) -> int:
        """Start of the first well-formed Content-Length line that begins inside the body
        (past the bytes searched before, less an overlap for a line split across reads),
        or -1."""
        lo = max(self._pos, self._searched - _LINE_MAX)
        self._searched = len(self._buf)
        m = _LINE_LOW_RE.search(self._lowered(len(self._buf)), lo)
        return m.start() if m is not None and m.start() < self._end else -1

    def _resync_point(self, start: int) -> int:
        """Where to look for the next frame after a rejected body ending at _end: the first
        place in _buf[start:_end] where a well-formed Content-Length line starts, or could
        start given the bytes still to come; else _end."""
        buf, end = self._buf, self._end
        low = self._lowered(len(buf))
        m = _LINE_LOW_RE.search(low, start)
        best = m.start() if m is not None and m.start() < end else end
        # A line still arriving reaches the end of what has arrived: look only there.
        tail = max(start, len(buf) - _LINE_MAX)
        for t in self._tokens(tail, min(end, best)):
            prefix = _LINE_PREFIX_RE.match(buf, t)
            if prefix is not None and prefix.end() == len(buf):
                return t
        for t in range(max(tail, len(buf) - _TOKEN_LEN + 1), min(best, len(buf))):
            if _TOKEN.startswith(low[t:]):
                return t  # a `content-length` cut by the end of what has arrived
        return best

    def _body(self, out: list[Event]) -> bool:
        buf, end = self._buf, self._end
        if len(buf) < end:
            t = self._line_in_body()
            if t >= 0:
                self._error(out, PARSE_ERROR, "frame body shorter than its Content-Length")
                self._restart_scan(t)
                return True
            return False
        start, length = self._pos, end - self._pos
        try:
            message = parse_json(bytes(buf[start:end]))
        except ValueError:
            self._error(out, PARSE_ERROR, "parse error: the frame is not JSON")
            self._restart_scan(self._resync_point(start))
            return True
        self._pos = end
        self._state = _SCAN
        self._frame(out, message, length)
        return True

    def _discard(self, out: list[Event]) -> bool:
        buf, end = self._buf, self._end
        t = self._line_in_body()
        if t >= 0:
            self._restart_scan(t)
            return True
        if len(buf) >= end:
            self._restart_scan(self._resync_point(max(self._pos, end - _LINE_MAX)))
            return True
        # Keep only what a line split across reads needs.
        keep = max(self._pos, len(buf) - _LINE_MAX)
        self._pos = keep
        return False
